package agent

import (
	"context"
	"slices"
	"sort"
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
	at := earliest(ts, now, period, c.PerPeriod)
	j, _ := slices.BinarySearchFunc(ts, at, time.Time.Compare)
	c.slots[seg] = slices.Insert(ts, j, at)
	return at
}

// earliest is the first time at or after now an admission fits: no window
// of period that holds it (ending at it, or at a booked slot within period
// after it) then holds more than limit; ts is ascending and within the cap.
// A full window moves the time past its oldest slot's end (the only times
// a window loses one), so each step is a binary search and the few slots
// within one period after it (at most limit).
func earliest(ts []time.Time, now time.Time, period time.Duration, limit int) time.Time {
	upTo := func(x time.Time) int { // how many slots are at or before x
		return sort.Search(len(ts), func(i int) bool { return ts[i].After(x) })
	}
	t := now
next:
	for {
		hi := upTo(t)
		if hi-upTo(t.Add(-period)) >= limit {
			t = ts[hi-limit].Add(period)
			continue
		}
		for k := hi; k < len(ts) && ts[k].Before(t.Add(period)); k++ {
			if k+1-upTo(ts[k].Add(-period)) >= limit {
				t = ts[k+1-limit].Add(period)
				continue next
			}
		}
		return t
	}
}
