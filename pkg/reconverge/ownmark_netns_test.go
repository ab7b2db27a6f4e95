package reconverge

import (
	"testing"
	"time"

	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/pkg/announce"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// An Out watch's kernel filter drops the frames the agent sends itself
// (marked Shared.OwnMark by announce.Marked) and keeps every other frame
// the host sends from a watched MAC, with the exact filter (a few MACs)
// and with the bucket filter (a storm's many): the agent's own announces
// never wake the reader.
func TestOutFilterDropsTheAgentsOwnFrames(t *testing.T) {
	const mark = 0x52415250
	for _, n := range []int{1, exactMACs + 1} {
		host, _ := watchRig(t)
		ifi := host.Interface(t, "upl")
		s := Shared{OwnMark: mark}
		watched := func(i int) rarp.MAC { return rarp.MAC{0x52, 0x54, 0, 0x40, 0, byte(i)} }
		var w *Watch
		for i := range n {
			var x *Watch
			if err := host.Do(func() (err error) { x, err = s.Open(ifi, Out, []rarp.MAC{watched(i)}); return err }); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { x.Close() })
			if w == nil {
				w = x
			}
		}
		var h *hub
		s.mu.Lock()
		for _, x := range s.hubs {
			h = x
		}
		s.mu.Unlock()
		if bucketed := h.passes.exact == nil; bucketed != (n > exactMACs) {
			t.Fatalf("%d MACs: bucket filter %v", n, bucketed)
		}

		send := func(open announce.Opener) {
			t.Helper()
			snd, err := netnstest.OpenIn(host, open)("upl")
			if err != nil {
				t.Fatal(err)
			}
			defer snd.Close()
			for range 5 {
				if err := snd.Send(frame(rarp.Broadcast, watched(0))); err != nil {
					t.Fatal(err)
				}
			}
		}
		send(announce.Marked(announce.OpenPacket, mark, func(err error) { t.Fatalf("SO_MARK refused: %v", err) }))
		time.Sleep(100 * time.Millisecond)
		if got := h.frames.Load(); got != 0 {
			t.Errorf("%d MACs: the reader got %d of the agent's own 5 frames, want 0", n, got)
		}
		// The same frames from another socket (unmarked, as a bridge
		// forwards the VM's) are a premature move: kept.
		send(announce.OpenPacket)
		deadline := time.Now().Add(2 * time.Second)
		for h.frames.Load() < 5 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if got := h.frames.Load(); got != 5 {
			t.Errorf("%d MACs: the reader got %d of 5 unmarked frames, want 5", n, got)
		}
		if ss := w.Sightings(); ss[0].Frames != 5 {
			t.Errorf("%d MACs: the watch counted %d frames, want the 5 unmarked", n, ss[0].Frames)
		}
	}
}
