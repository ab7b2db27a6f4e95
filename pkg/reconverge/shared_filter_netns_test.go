package reconverge

import (
	"context"
	"sync"
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
	for _, w := range more {
		w.Close()
	}
	if n := readAfter(sameBucket); n != 1 {
		t.Errorf("exact again after closes: %d frames read for an unwatched MAC and the marker, want 1", n)
	}
	got := first.Sightings()
	if got[0].Frames != 4 {
		t.Errorf("the first watch counted %d frames of its MAC, want the 4 markers", got[0].Frames)
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
