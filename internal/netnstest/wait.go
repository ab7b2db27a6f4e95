package netnstest

import (
	"fmt"
	"testing"
	"time"
)

// Eventually calls check every 5 ms until it returns nil, and fails t with
// check's last error if that has not happened within the given time: for
// state that settles on other goroutines or in the kernel and has no event
// to wait on. The error should say what was seen, so a failure shows it.
func Eventually(t testing.TB, within time.Duration, check func() error) {
	t.Helper()
	EventuallyEvery(t, within, 5*time.Millisecond, check)
}

// EventuallyEvery is Eventually calling check every tick: for a check that
// costs the system under test (an HTTP scrape of a daemon's metrics), so
// the wait does not load what it waits for.
func EventuallyEvery(t testing.TB, within, tick time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", within, err)
		}
		time.Sleep(tick)
	}
}

// WaitFor waits up to 5 s for cond to hold, and fails t naming what if it
// does not (see Eventually).
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	WaitWithin(t, 5*time.Second, what, cond)
}

// WaitWithin is WaitFor for state that may take longer (or must come
// sooner) than 5 s.
func WaitWithin(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	Eventually(t, within, func() error {
		if cond() {
			return nil
		}
		return fmt.Errorf("timed out waiting for %s", what)
	})
}
