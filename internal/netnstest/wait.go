package netnstest

import (
	"testing"
	"time"
)

// WaitFor polls cond every 5 ms until it holds, and fails t naming what
// if it does not within 5 s: for state that settles on other goroutines
// (a reload, a cancel) and has no event to wait on.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
