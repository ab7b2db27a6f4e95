package netnstest

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rarp-announce/rarp-announce/internal/helpertest"
)

func TestEventually(t *testing.T) {
	tb := helpertest.New(t)
	calls := 0
	msg := tb.Run(func() {
		Eventually(tb, time.Second, func() error {
			if calls++; calls < 3 {
				return fmt.Errorf("call %d", calls)
			}
			return nil
		})
	})
	if msg != "" || calls != 3 {
		t.Fatalf("settling on the third call: failed %q after %d calls", msg, calls)
	}

	start := time.Now()
	msg = tb.Run(func() {
		Eventually(tb, 50*time.Millisecond, func() error { return errors.New("still 2 frames") })
	})
	if took := time.Since(start); took < 50*time.Millisecond || took > 2*time.Second {
		t.Errorf("gave up after %v, want about 50ms", took)
	}
	if !strings.Contains(msg, "still 2 frames") {
		t.Errorf("failure %q does not carry the last error", msg)
	}

	msg = tb.Run(func() { WaitWithin(tb, 20*time.Millisecond, "the reload", func() bool { return false }) })
	if !strings.Contains(msg, "timed out waiting for the reload") {
		t.Errorf("WaitWithin failure %q does not name what it waited for", msg)
	}
}

func TestEventuallyEveryKeepsItsTick(t *testing.T) {
	tb := helpertest.New(t)
	calls := 0
	msg := tb.Run(func() {
		EventuallyEvery(tb, 200*time.Millisecond, 50*time.Millisecond, func() error {
			calls++
			return errors.New("503")
		})
	})
	// Calls at 0, 50, 100, 150, 200 ms (and one late one on a slow
	// machine): a 5 ms poll would make about 40.
	if calls < 4 || calls > 7 {
		t.Errorf("%d checks in 200 ms at a 50 ms tick, want about 5", calls)
	}
	if !strings.Contains(msg, "after 200ms: 503") {
		t.Errorf("failure %q", msg)
	}
}
