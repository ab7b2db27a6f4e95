package netnstest

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
)

// fatalRecorder is a testing.TB whose Fatalf records the message and ends
// the goroutine, as the real one does.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (r *fatalRecorder) Helper() {}

func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// run calls f with a recorder on a goroutine of its own (Fatalf ends it)
// and returns what f failed with, "" if nothing.
func run(t *testing.T, f func(tb testing.TB)) string {
	r := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
	return r.msg
}

func TestEventually(t *testing.T) {
	calls := 0
	msg := run(t, func(tb testing.TB) {
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
	msg = run(t, func(tb testing.TB) {
		Eventually(tb, 50*time.Millisecond, func() error { return errors.New("still 2 frames") })
	})
	if took := time.Since(start); took < 50*time.Millisecond || took > 2*time.Second {
		t.Errorf("gave up after %v, want about 50ms", took)
	}
	if !strings.Contains(msg, "still 2 frames") {
		t.Errorf("failure %q does not carry the last error", msg)
	}

	msg = run(t, func(tb testing.TB) { WaitWithin(tb, 20*time.Millisecond, "the reload", func() bool { return false }) })
	if !strings.Contains(msg, "timed out waiting for the reload") {
		t.Errorf("WaitWithin failure %q does not name what it waited for", msg)
	}
}
