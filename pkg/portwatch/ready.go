package portwatch

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrTimeout is wrapped by a NotReadyError when the wait's timeout passed.
var ErrTimeout = errors.New("timed out")

// NotReadyError is what WaitReady returns when the port did not become
// ready: Missing names the first condition it failed when the wait ended.
type NotReadyError struct {
	Port, Master string
	Missing      Condition
	State        State         // the port as last seen; zero if it does not exist
	Waited       time.Duration // how long WaitReady waited
	Err          error         // ErrTimeout, ctx.Err() or ErrClosed
}

func (e *NotReadyError) Error() string {
	return fmt.Sprintf("portwatch: port %s not ready after %v (%v): %s",
		e.Port, e.Waited.Round(time.Millisecond), e.Err, e.State.Why(e.Master))
}

func (e *NotReadyError) Unwrap() error { return e.Err }

type waiter struct {
	master string
	ready  chan State // buffered 1: receives the State that made it ready
}

// WaitReady returns as soon as port is ready for master (see State.Missing;
// master "" asks for no attachment, a macvtap's master is its lower device).
// When the port is ready already it returns at once. timeout <= 0 waits
// until ctx ends. When the port does not become ready, the error is a
// *NotReadyError naming the missing condition (exists, attached, up,
// forwarding), wrapping ErrTimeout, ctx.Err() or ErrClosed.
func (w *Watcher) WaitReady(ctx context.Context, port, master string, timeout time.Duration) (State, error) {
	start := time.Now()
	w.mu.Lock()
	if w.isClosed() {
		w.mu.Unlock()
		return State{}, &NotReadyError{Port: port, Master: master, Missing: Exists, Err: ErrClosed}
	}
	if s, ok := w.state(port); ok && s.Missing(master) == None {
		w.mu.Unlock()
		w.m.waited(resultReady, 0)
		return s, nil
	}
	wt := &waiter{master: master, ready: make(chan State, 1)}
	set := w.waiters[port]
	if set == nil {
		set = map[*waiter]struct{}{}
		w.waiters[port] = set
	}
	set[wt] = struct{}{}
	w.mu.Unlock()

	var expired <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		expired = t.C
	}
	var cause error
	select {
	case s := <-wt.ready:
		w.m.waited(resultReady, time.Since(start))
		return s, nil
	case <-expired:
		cause = ErrTimeout
	case <-ctx.Done():
		cause = ctx.Err()
	case <-w.closed:
		cause = ErrClosed
	}

	w.mu.Lock()
	w.dropWaiter(port, wt)
	s, ok := w.state(port)
	w.mu.Unlock()
	select {
	case s := <-wt.ready: // became ready as the wait ended
		w.m.waited(resultReady, time.Since(start))
		return s, nil
	default:
	}
	if !ok {
		s = State{}
	} else if s.Missing(master) == None { // ready as the wait ended
		w.m.waited(resultReady, time.Since(start))
		return s, nil
	}
	result := resultCancelled
	if errors.Is(cause, ErrTimeout) {
		result = resultTimeout
	}
	w.m.waited(result, time.Since(start))
	return s, &NotReadyError{Port: port, Master: master, Missing: s.Missing(master), State: s,
		Waited: time.Since(start), Err: cause}
}

// dropWaiter forgets wt. Called with w.mu held.
func (w *Watcher) dropWaiter(port string, wt *waiter) {
	set := w.waiters[port]
	delete(set, wt)
	if len(set) == 0 {
		delete(w.waiters, port)
	}
}
