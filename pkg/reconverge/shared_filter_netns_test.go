package reconverge

import (
	"context"
	"fmt"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// The shared socket's kernel filter passes only what its watches may
// want: with few MACs, exactly theirs; with more, their buckets; and it
// narrows again as watches close.
func TestSharedFilterNarrowsInTheKernel(t *testing.T) {
	host, sw := watchRig(t)
	ifi := host.Interface(t, "upl")
	var s Shared
	open := func(m rarp.MAC) *Watch {
		var w *Watch
		if err := host.Do(func() (err error) { w, err = s.Open(ifi, To, []rarp.MAC{m}); return err }); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { w.Close() })
		return w
	}
	peer := rarp.MAC{0x02, 0, 0, 0, 0, 0x99}
	watched := func(i int) rarp.MAC { return rarp.MAC{0x52, 0x54, 0, 0x30, 0, byte(i)} }
	sameBucket := rarp.MAC{0x52, 0x54, 0, 0x31, 0, 0}  // watched(0)'s bucket, not watched
	emptyBucket := rarp.MAC{0x52, 0x54, 0, 0x30, 1, 0} // bucket 256: no watched MAC
	// readAfter sends one frame to m, then one to watched(0) as a marker,
	// and reports how many frames the socket's reader got for both.
	var h *hub
	readAfter := func(m rarp.MAC) uint64 {
		t.Helper()
		before := h.frames.Load()
		netnstest.Send(t, sw, "sw", frame(m, peer))
		netnstest.Send(t, sw, "sw", frame(watched(0), peer))
		deadline := time.Now().Add(2 * time.Second)
		for {
			n := h.frames.Load() - before
			if n >= 2 || time.Now().After(deadline) {
				time.Sleep(20 * time.Millisecond) // none more
				return h.frames.Load() - before
			}
			if n == 1 {
				// The marker may be the one: give the other a moment.
				time.Sleep(50 * time.Millisecond)
				return h.frames.Load() - before
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	first := open(watched(0))
	s.mu.Lock()
	for _, x := range s.hubs {
		h = x
	}
	s.mu.Unlock()
	if n := readAfter(sameBucket); n != 1 {
		t.Errorf("exact filter: %d frames read for an unwatched MAC and the marker, want 1", n)
	}
	var more []*Watch
	for i := 1; i <= exactMACs; i++ {
		more = append(more, open(watched(i)))
	}
	if n := readAfter(sameBucket); n != 2 {
		t.Errorf("bucket filter: %d frames read for a MAC in a watched bucket and the marker, want 2", n)
	}
	if n := readAfter(emptyBucket); n != 1 {
		t.Errorf("bucket filter: %d frames read for a MAC in an empty bucket and the marker, want 1", n)
	}
	// A leave attaches nothing: the filter stays wider than needed
	// until narrowDelay has passed, then narrows back to the exact list.
	attachs := h.attachs.Load()
	for _, w := range more {
		w.Close()
	}
	if n := h.attachs.Load() - attachs; n != 0 {
		t.Errorf("%d filters attached by the closes, want 0 (narrowed later)", n)
	}
	waitNarrowed(t, h)
	if n := h.attachs.Load() - attachs; n != 1 {
		t.Errorf("%d filters attached to narrow, want 1", n)
	}
	if n := readAfter(sameBucket); n != 1 {
		t.Errorf("exact again after closes: %d frames read for an unwatched MAC and the marker, want 1", n)
	}
	got := first.Sightings()
	if got[0].Frames != 4 {
		t.Errorf("the first watch counted %d frames of its MAC, want the 4 markers", got[0].Frames)
	}
}

// waitNarrowed waits for h's filter to pass no more than its watches need.
func waitNarrowed(t *testing.T, h *hub) {
	t.Helper()
	netnstest.WaitWithin(t, narrowDelay+2*time.Second, "the filter to narrow to what its watches need after the closes", func() bool {
		h.mu.Lock()
		wider := h.wider() || h.attaching
		h.mu.Unlock()
		return !wider
	})
}

// Joins that need a wider filter while one is being attached commit in
// one group: the next attach passes all their MACs. Here the first join's
// attach is held in the kernel call while ten more queue behind it: two
// attaches serve the eleven, and each watch gets its frames.
func TestSharedJoinsCommitInGroups(t *testing.T) {
	host, sw := watchRig(t)
	ifi := host.Interface(t, "upl")
	var s Shared
	watched := func(i int) rarp.MAC { return rarp.MAC{0x52, 0x54, 0, 0x50, byte(i >> 8), byte(i)} }
	open := func(m rarp.MAC) (*Watch, error) { return openIn(t, host, &s, ifi, m) }
	// Past the exact list: the bucket filter, buckets 0 to 8 set.
	for i := range exactMACs + 1 {
		if _, err := open(watched(i)); err != nil {
			t.Fatal(err)
		}
	}
	h := onlyHub(&s)
	base := h.attachs.Load()

	held, release := holdFirstAttach(t)
	results := make(chan opened, 11)
	go func() { w, err := open(watched(100)); results <- opened{w, err} }() // bucket 100: new
	<-held
	h.mu.Lock()
	gen := h.gen
	h.mu.Unlock()
	for i := range 10 {
		go func() { w, err := open(watched(200 + i)); results <- opened{w, err} }()
	}
	netnstest.Eventually(t, 5*time.Second, func() error {
		h.mu.Lock()
		queued := h.gen - gen
		h.mu.Unlock()
		if queued == 10 {
			return nil
		}
		return fmt.Errorf("%d of 10 joins queued behind the attach", queued)
	})
	close(release)
	var ws []*Watch
	for range 11 {
		r := <-results
		if r.err != nil {
			t.Fatal(r.err)
		}
		ws = append(ws, r.w)
	}
	if n := h.attachs.Load() - base; n != 2 {
		t.Errorf("%d filters attached for 11 joins, 10 of them queued behind the first: want 2", n)
	}
	// Every queued MAC passes the kernel filter now.
	peer := rarp.MAC{0x02, 0, 0, 0, 0, 0x99}
	for i := range 10 {
		netnstest.Send(t, sw, "sw", frame(watched(200+i), peer))
	}
	netnstest.Send(t, sw, "sw", frame(watched(100), peer))
	for _, w := range ws {
		ss, err := w.Run(context.Background(), time.Now().Add(2*time.Second), true)
		if err != nil || len(ss) != 1 || ss[0].Frames != 1 {
			t.Errorf("watch %v: %+v, %v; want its one frame", w.order, ss, err)
		}
	}
}

// Watches opening and closing at once on one device, as in a landing
// storm: none fails or hangs, and after the last close the device has no
// socket left.
func TestSharedConcurrentOpenClose(t *testing.T) {
	host, _ := watchRig(t)
	ifi := host.Interface(t, "upl")
	var s Shared
	errs := make(chan error, 16*25)
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 25 {
				m := rarp.MAC{0x52, 0x54, 0, 0x40, byte(g), byte(i)}
				var w *Watch
				if err := host.Do(func() (err error) { w, err = s.Open(ifi, To, []rarp.MAC{m}); return err }); err != nil {
					errs <- err
					return
				}
				if i%5 == 0 {
					_, _ = w.Run(context.Background(), time.Now().Add(time.Millisecond), false)
				}
				w.Close()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	s.mu.Lock()
	n := len(s.hubs)
	s.mu.Unlock()
	if n != 0 {
		t.Errorf("%d shared sockets left after every watch closed", n)
	}
	t.Logf("%d sockets opened for 400 watches", s.Sockets())
}

// A join waiting behind an attach when the hub's socket fails (its device
// went down or was re-created under it) starts again on a new socket with a watch
// of its own: the failure ended the watch it had registered, and a watch
// returned ended would read as a NIC the fabric never followed.
func TestSharedJoinRetriedAfterTheSocketFailed(t *testing.T) {
	host, sw := watchRig(t)
	ifi := host.Interface(t, "upl")
	var s Shared
	open := func(m rarp.MAC) (*Watch, error) { return openIn(t, host, &s, ifi, m) }
	mac := func(i byte) rarp.MAC { return rarp.MAC{0x52, 0x54, 0, 0, 1, i} }
	if _, err := open(mac(1)); err != nil {
		t.Fatal(err)
	}
	h := onlyHub(&s)

	held, release := holdFirstAttach(t)
	first, queued := make(chan opened, 1), make(chan opened, 1)
	go func() { w, err := open(mac(2)); first <- opened{w, err} }()
	<-held
	h.mu.Lock()
	gen := h.gen
	h.mu.Unlock()
	go func() { w, err := open(mac(3)); queued <- opened{w, err} }()
	netnstest.Eventually(t, 5*time.Second, func() error {
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.gen == gen {
			return fmt.Errorf("the second join is not queued behind the attach yet")
		}
		return nil
	})
	// The socket's read fails, as it does with ENETDOWN when the device
	// goes down or is deleted under it. (Here the device stays up: a retry
	// on a down device rightly fails on its own.)
	go h.fail(syscall.ENETDOWN)
	var r opened
	select {
	case r = <-queued:
	case <-time.After(5 * time.Second):
		t.Fatal("the queued join did not start again after its hub failed")
	}
	close(release)
	<-first // the attach it waited for fails on the closed socket: its own error
	if r.err != nil {
		t.Fatalf("queued join: %v", r.err)
	}
	select {
	case <-r.w.done:
		t.Fatalf("the queued join returned a watch that had already ended: %v", r.w.err)
	default:
	}
	netnstest.EventuallyEvery(t, 5*time.Second, 100*time.Millisecond, func() error {
		netnstest.Send(t, sw, "sw", frame(mac(3), rarp.MAC{0x02, 0, 0, 0, 0, 0x99}))
		ss := r.w.Sightings()
		if len(ss) != 1 || !ss[0].Seen() {
			return fmt.Errorf("watch on the new socket saw nothing: %+v", ss)
		}
		return nil
	})
}

// openIn opens a shared watch of m on ifi, inside host; Close at cleanup.
func openIn(t *testing.T, host *netnstest.NS, s *Shared, ifi *net.Interface, m rarp.MAC) (*Watch, error) {
	var w *Watch
	err := host.Do(func() (err error) { w, err = s.Open(ifi, To, []rarp.MAC{m}); return err })
	if err == nil {
		t.Cleanup(func() { w.Close() })
	}
	return w, err
}

// onlyHub is s's one hub.
func onlyHub(s *Shared) (h *hub) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, x := range s.hubs {
		h = x
	}
	return h
}

// holdFirstAttach holds the next filter attach in its kernel call (with
// the hub's lock released) until release is closed; held receives when it
// is held. Later attaches pass.
func holdFirstAttach(t *testing.T) (held <-chan struct{}, release chan struct{}) {
	h, r := make(chan struct{}, 1), make(chan struct{})
	beforeAttach = func() {
		select {
		case h <- struct{}{}:
			<-r
		default:
		}
	}
	t.Cleanup(func() { beforeAttach = nil })
	return h, r
}

// opened is what an Open run in the background returned.
type opened struct {
	w   *Watch
	err error
}
