package announce

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

const ms = time.Millisecond

func TestDefaultBurstIsQEMUs(t *testing.T) {
	got := DefaultSchedule().Burst()
	want := []time.Duration{0, 50 * ms, 200 * ms, 450 * ms, 800 * ms}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("default burst %v, want %v", got, want)
	}
}

func TestBurstVariants(t *testing.T) {
	cases := []struct {
		name string
		s    Schedule
		want []time.Duration
	}{
		{"max caps the gaps", Schedule{Initial: 50 * ms, Step: 100 * ms, Max: 120 * ms, Rounds: 5, Bursts: 1},
			[]time.Duration{0, 50 * ms, 170 * ms, 290 * ms, 410 * ms}},
		{"one round", Schedule{Initial: 50 * ms, Step: 100 * ms, Max: 550 * ms, Rounds: 1, Bursts: 1},
			[]time.Duration{0}},
		{"flat", Schedule{Initial: 10 * ms, Step: 0, Max: 10 * ms, Rounds: 3, Bursts: 1},
			[]time.Duration{0, 10 * ms, 20 * ms}},
		{"zero gaps", Schedule{Rounds: 3, Bursts: 1}, []time.Duration{0, 0, 0}},
	}
	for _, c := range cases {
		if got := c.s.Burst(); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

func TestSlotsWithBursts(t *testing.T) {
	s := DefaultSchedule()
	s.Bursts, s.BurstInterval = 3, time.Second // Nova's count=3, interval=1s
	slots := s.Slots()
	if len(slots) != 15 {
		t.Fatalf("%d slots, want 15", len(slots))
	}
	if slots[5] != (Slot{At: time.Second, Burst: 2, Round: 1}) || slots[14] != (Slot{At: 2800 * ms, Burst: 3, Round: 5}) {
		t.Fatalf("slots %v", slots)
	}
	if s.Duration() != 2800*ms {
		t.Fatalf("duration %v", s.Duration())
	}
	// A burst that outlasts the interval pushes the next one back.
	s.BurstInterval = 100 * ms
	slots = s.Slots()
	for i := 1; i < len(slots); i++ {
		if slots[i].At < slots[i-1].At {
			t.Fatalf("slots out of order: %v", slots)
		}
	}
	if slots[5].At != 800*ms {
		t.Fatalf("second burst starts at %v, want 800ms", slots[5].At)
	}
}

func TestScheduleValidate(t *testing.T) {
	ok := DefaultSchedule()
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		mod  func(*Schedule)
		want string
	}{
		{func(s *Schedule) { s.Rounds = 0 }, "rounds"},
		{func(s *Schedule) { s.Rounds = 1000 }, "rounds"},
		{func(s *Schedule) { s.Initial = -ms }, "initial"},
		{func(s *Schedule) { s.Max = 2 * time.Hour }, "max"},
		{func(s *Schedule) { s.Bursts = 0 }, "bursts"},
		{func(s *Schedule) { s.Bursts = 2 }, "burst-interval"},
		{func(s *Schedule) { s.Refresh = 10 * ms }, "refresh"},
	}
	for _, c := range cases {
		s := DefaultSchedule()
		c.mod(&s)
		err := s.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("want error naming %q, got %v", c.want, err)
		}
	}
}

// A schedule of no rounds has no frames instead of looping forever, and
// Validate refuses it.
func TestBurstOfNoRounds(t *testing.T) {
	for _, rounds := range []int{0, -1} {
		s := DefaultSchedule()
		s.Rounds = rounds
		s.Bursts = 2
		s.BurstInterval = time.Second
		if b := s.Burst(); len(b) != 0 {
			t.Errorf("rounds %d: Burst() = %v, want none", rounds, b)
		}
		if sl := s.Slots(); len(sl) != 0 || s.Duration() != 0 {
			t.Errorf("rounds %d: Slots() = %v, Duration() = %v, want none", rounds, sl, s.Duration())
		}
		if s.Validate() == nil {
			t.Errorf("rounds %d: Validate() accepted it", rounds)
		}
	}
}
