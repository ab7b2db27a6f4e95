// Package wait holds the waits the agent's loops share: a sleep that a
// stop channel (a context's Done) cuts short, a call on a period, waits
// that double between retries up to a cap, and the two halves of a
// loop's wake-up (Wake, Closed). Each loop used to write its own timer
// and select; one copy keeps them alike (a timer stopped on every path, a
// retry wait that never grows past its cap, a wake that never blocks).
package wait

import (
	"context"
	"time"
)

// Sleep waits d, or until stop is closed. It reports whether the wait ran
// its course: false means stop was closed first. A d of zero or less does
// not wait, but still reports a closed stop.
func Sleep(stop <-chan struct{}, d time.Duration) bool {
	if d <= 0 {
		return !Closed(stop)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-stop:
		return false
	case <-t.C:
		return true
	}
}

// Every calls f every period until ctx ends, the first time one period
// after the call; f is not called once ctx has ended. A call that overruns the period is followed by the next
// tick at once (a time.Ticker drops the ticks it could not deliver).
func Every(ctx context.Context, period time.Duration, f func(context.Context)) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if ctx.Err() != nil {
				return // both were ready: the select may pick either
			}
			f(ctx)
		}
	}
}

// Backoff gives the waits between retries of one failing operation: Min,
// then twice the last, up to Max (a Max below Min means every wait is
// Min). The zero value waits nothing; it is not safe for concurrent use.
type Backoff struct {
	Min, Max time.Duration
	next     time.Duration
}

// Next returns the wait before the next retry and doubles the one after.
func (b *Backoff) Next() time.Duration {
	d := b.next
	if d == 0 {
		d = b.Min
	}
	b.next = min(2*d, max(b.Max, b.Min))
	return d
}

// Reset starts again from Min, after the operation has succeeded.
func (b *Backoff) Reset() { b.next = 0 }

// Closed reports whether ch is closed (or has a value ready), without
// waiting: the check of a stop or done channel between two steps.
func Closed[T any](ch <-chan T) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// Wake sends on a wake-up channel without blocking. The channel has room
// for one: a wake-up already pending covers this one, since the loop it
// wakes looks at everything queued when it runs.
func Wake(ch chan<- struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
