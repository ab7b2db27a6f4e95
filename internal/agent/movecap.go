package agent

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/rarp-announce/rarp-announce/pkg/plan"
	"github.com/rarp-announce/rarp-announce/pkg/wait"
)

// MoveCap spreads the moves of a host evacuation: at most PerPeriod NICs
// landing (a MAC that lands twice counts twice) start their announce on
// one segment (a bridge and its uplinks) within any Period. A landing over the cap waits for its slot:
// its first frame is delayed, never dropped (the VM runs here and must be
// announced). Fabrics that count MAC moves per port (HPE/H3C shut a port
// after a number of moves a minute, SONiC's MAC Move Guard) then see the
// evacuation arrive spread instead of all at once. The pacer (frames per
// second) still applies to the frames themselves.
type MoveCap struct {
	PerPeriod int           // 0: no cap
	Period    time.Duration // default one minute

	mu    sync.Mutex
	slots map[string][]time.Time // per segment: admissions, ascending (future ones reserved)
}

// Wait returns when t's announce may start, or with ctx's error. Targets
// without a bridge or device are not capped.
func (c *MoveCap) Wait(ctx context.Context, t plan.Target) error {
	if c == nil || c.PerPeriod <= 0 {
		return nil
	}
	seg := t.Master
	if seg == "" {
		seg = t.Device
	}
	if seg == "" {
		return nil
	}
	at := c.reserve(seg, time.Now())
	if d := time.Until(at); d > 0 && !wait.Sleep(ctx.Done(), d) {
		// The landing ended (the domain left, a newer landing took
		// over): its slot goes to the next NIC, which would otherwise
		// wait behind a move that never happened.
		c.release(seg, at)
		return ctx.Err()
	}
	return nil
}

// release gives back a slot reserve booked and nobody used.
func (c *MoveCap) release(seg string, at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ts := c.slots[seg]
	if i := slices.Index(ts, at); i >= 0 {
		c.slots[seg] = slices.Delete(ts, i, i+1)
	}
}

// reserve books the earliest slot at or after now that keeps at most
// PerPeriod admissions within any Period on seg. Released slots leave gaps,
// so that slot may come before others already booked: it is found among
// now and the times a booked slot leaves a window, and kept in order.
func (c *MoveCap) reserve(seg string, now time.Time) time.Time {
	period := c.Period
	if period <= 0 {
		period = time.Minute
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.slots == nil {
		c.slots = map[string][]time.Time{}
	}
	ts := c.slots[seg]
	i := 0
	for i < len(ts) && !ts[i].After(now.Add(-period)) {
		i++
	}
	ts = append(ts[:0], ts[i:]...)
	at := now
	if !fits(ts, now, period, c.PerPeriod) {
		// The first slot's window end after now that fits: past the
		// last slot's, a window holds nothing booked, so one fits.
		for _, s := range ts {
			if e := s.Add(period); e.After(now) && fits(ts, e, period, c.PerPeriod) {
				at = e
				break
			}
		}
	}
	j, _ := slices.BinarySearchFunc(ts, at, time.Time.Compare)
	c.slots[seg] = slices.Insert(ts, j, at)
	return at
}

// fits reports whether an admission at t keeps every window of period
// that holds t (ending at t or at a booked slot within period after it)
// below limit+1 admissions; ts is ascending.
func fits(ts []time.Time, t time.Time, period time.Duration, limit int) bool {
	count := func(end time.Time) int {
		n := 0
		for _, s := range ts {
			if s.After(end.Add(-period)) && !s.After(end) {
				n++
			}
		}
		return n
	}
	if count(t) >= limit {
		return false
	}
	for _, s := range ts {
		if !s.Before(t) && s.Before(t.Add(period)) && count(s) >= limit {
			return false
		}
	}
	return true
}
