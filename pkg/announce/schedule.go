package announce

import (
	"errors"
	"fmt"
	"time"
)

// Schedule says when the frames of one announce go out.
//
// One burst is QEMU's: the first frame at once, then after each frame a gap
// of Initial + (Rounds-round-1)*Step capped at Max, where round counts down
// from Rounds-1 (qemu_announce_timer_step). QEMU's defaults give 5 frames at
// 0, 50, 200, 450 and 800 ms.
//
// Bursts > 1 repeats the whole burst BurstInterval apart, as Nova's
// enable_qemu_monitor_announce_self workaround does. Refresh > 0 then keeps
// sending one frame every Refresh until the announce is cancelled, as
// keepalived's garp_master_refresh does: switches age MACs out after 300 s,
// and a quiet VM would otherwise be forgotten.
type Schedule struct {
	Initial       time.Duration
	Step          time.Duration
	Max           time.Duration
	Rounds        int
	Bursts        int
	BurstInterval time.Duration
	Refresh       time.Duration
}

// DefaultSchedule is QEMU's announce-self default: one burst of 5 frames.
func DefaultSchedule() Schedule {
	return Schedule{
		Initial: 50 * time.Millisecond,
		Step:    100 * time.Millisecond,
		Max:     550 * time.Millisecond,
		Rounds:  5,
		Bursts:  1,
	}
}

// Limits that keep a typo from becoming a broadcast storm or a stuck agent.
const (
	MaxRounds   = 100
	MaxBursts   = 100
	MaxDuration = time.Hour
	MinRefresh  = time.Second
)

// FieldError is a setting out of range: Field names it as the CLI flag
// does ("burst-interval"); the config key is the same with underscores.
// Callers map Field to their own name instead of parsing the text.
type FieldError struct {
	Field string
	Err   error
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Err.Error() }
func (e *FieldError) Unwrap() error { return e.Err }

// FieldErrors returns the *FieldErrors in err (one error, or several
// joined, as Validate returns them).
func FieldErrors(err error) []*FieldError {
	var out []*FieldError
	var walk func(error)
	walk = func(e error) {
		var fe *FieldError
		switch {
		case e == nil:
		case errors.As(e, &fe) && e == error(fe):
			out = append(out, fe)
		default:
			if j, ok := e.(interface{ Unwrap() []error }); ok {
				for _, x := range j.Unwrap() {
					walk(x)
				}
			}
		}
	}
	walk(err)
	return out
}

// Validate reports every setting that is out of range, each a *FieldError.
func (s Schedule) Validate() error {
	var errs []error
	field := func(name string, err error) { errs = append(errs, &FieldError{Field: name, Err: err}) }
	dur := func(name string, d time.Duration) {
		if d < 0 || d > MaxDuration {
			field(name, fmt.Errorf("%v is outside 0 to %v", d, MaxDuration))
		}
	}
	dur("initial", s.Initial)
	dur("step", s.Step)
	dur("max", s.Max)
	dur("burst-interval", s.BurstInterval)
	dur("refresh", s.Refresh)
	if s.Rounds < 1 || s.Rounds > MaxRounds {
		field("rounds", fmt.Errorf("%d is outside 1 to %d", s.Rounds, MaxRounds))
	}
	if s.Bursts < 1 || s.Bursts > MaxBursts {
		field("bursts", fmt.Errorf("%d is outside 1 to %d", s.Bursts, MaxBursts))
	}
	if s.Bursts > 1 && s.BurstInterval <= 0 {
		field("burst-interval", errors.New("must be > 0 when bursts > 1"))
	}
	if s.Refresh != 0 && s.Refresh < MinRefresh {
		field("refresh", fmt.Errorf("%v is below %v", s.Refresh, MinRefresh))
	}
	return errors.Join(errs...)
}

// Burst returns the offsets of one burst's frames from the burst's start;
// none for Rounds < 1, which Validate refuses (it used to loop forever).
func (s Schedule) Burst() []time.Duration {
	if s.Rounds < 1 {
		return nil
	}
	out := make([]time.Duration, 0, s.Rounds)
	var t time.Duration
	for round := s.Rounds - 1; ; round-- {
		out = append(out, t)
		if round == 0 {
			return out
		}
		gap := s.Initial + time.Duration(s.Rounds-round-1)*s.Step
		if gap < 0 || gap > s.Max {
			gap = s.Max
		}
		t += gap
	}
}

// Slot is one frame of a schedule.
type Slot struct {
	At    time.Duration // from the start of the announce
	Burst int           // 1-based
	Round int           // 1-based within the burst
}

// Slots returns every frame of the finite part of s (bursts, not refresh),
// in time order, the bursts starting at BurstStarts(0).
func (s Schedule) Slots() []Slot {
	starts := s.BurstStarts(0)
	if starts == nil {
		return nil
	}
	burst := s.Burst()
	out := make([]Slot, 0, len(burst)*len(starts))
	for b, start := range starts {
		for r, off := range burst {
			out = append(out, Slot{At: start + off, Burst: b + 1, Round: r + 1})
		}
	}
	return out
}

// BurstStarts returns when each burst of s starts: burst k at
// (k-1)*BurstInterval, but not before gap after the last round of the
// burst before it, so bursts never overlap (nil: no burst).
func (s Schedule) BurstStarts(gap time.Duration) []time.Duration {
	burst := s.Burst()
	if len(burst) == 0 || s.Bursts < 1 {
		return nil
	}
	out := make([]time.Duration, 1, s.Bursts)
	for k := 1; k < s.Bursts; k++ {
		prev := out[k-1]
		out = append(out, max(prev+s.BurstInterval, prev+burst[len(burst)-1]+gap))
	}
	return out
}

// Duration is how long the finite part of s takes.
func (s Schedule) Duration() time.Duration {
	slots := s.Slots()
	if len(slots) == 0 {
		return 0
	}
	return slots[len(slots)-1].At
}
