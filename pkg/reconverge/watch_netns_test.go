package reconverge_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
	"github.com/rarp-announce/rarp-announce/pkg/reconverge"
)

// The rig and frames of the package's own tests (rig_netns_test.go).
var (
	watchRig = reconverge.WatchRig
	frame    = reconverge.Frame
)

func open(t *testing.T, host *netnstest.NS, dev string, dir reconverge.Direction, macs ...rarp.MAC) *reconverge.Watch {
	t.Helper()
	return openShared(t, nil, host, dev, dir, macs...)
}

func TestWatchCountsOnlyUnicastDeliveriesToTheMACs(t *testing.T) {
	host, sw := watchRig(t)
	vm1, vm2 := rarp.MustParseMAC("52:54:00:00:00:01"), rarp.MustParseMAC("52:54:00:00:00:02")
	other, peer := rarp.MustParseMAC("52:54:00:00:00:03"), rarp.MustParseMAC("02:00:00:00:00:99")
	w := open(t, host, "upl", reconverge.To, vm1, vm2)

	// Not counted: a broadcast from vm1 (its own announce seen elsewhere),
	// a unicast to another MAC, a frame the host itself sends to vm1 on
	// the uplink (outgoing), a frame *from* vm2.
	netnstest.Send(t, sw, "sw", frame(rarp.Broadcast, vm1))
	netnstest.Send(t, sw, "sw", frame(other, peer))
	netnstest.Send(t, host, "upl", frame(vm1, peer))
	netnstest.Send(t, sw, "sw", frame(peer, vm2))
	// Counted: two deliveries to vm1.
	before := time.Now()
	netnstest.Send(t, sw, "sw", frame(vm1, peer))
	netnstest.Send(t, sw, "sw", frame(vm1, peer))

	got, err := w.Run(context.Background(), time.Now().Add(300*time.Millisecond), false)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].MAC != vm1 || got[1].MAC != vm2 {
		t.Fatalf("sightings = %+v, want vm1 then vm2", got)
	}
	if got[0].Frames != 2 || got[0].First.Before(before) {
		t.Errorf("vm1: %d frames, first %v; want 2 frames after %v", got[0].Frames, got[0].First, before)
	}
	if got[1].Seen() {
		t.Errorf("vm2 seen (%d frames): a frame from it, not to it, must not count", got[1].Frames)
	}
}

func TestWatchFromCountsFramesSentByTheMAC(t *testing.T) {
	host, sw := watchRig(t)
	vm := rarp.MustParseMAC("52:54:00:00:00:0a")
	w := open(t, host, "upl", reconverge.From, vm)
	netnstest.Send(t, sw, "sw", frame(rarp.MustParseMAC("02:00:00:00:00:01"), rarp.MustParseMAC("52:54:00:00:00:0b"))) // another source
	netnstest.Send(t, sw, "sw", frame(rarp.Broadcast, vm))
	got, err := w.Run(context.Background(), time.Now().Add(2*time.Second), true)
	if err != nil {
		t.Fatal(err)
	}
	if got[0].Frames != 1 {
		t.Fatalf("frames from %s = %d, want 1", vm, got[0].Frames)
	}
}

// Out counts what the host sends out of the interface from the MAC (a
// bridge forwarding the VM's frame to the uplink; here a packet socket on
// the uplink), not what arrives from it nor what the host sends from
// another MAC.
func TestWatchOutCountsFramesTheHostSendsFromTheMAC(t *testing.T) {
	host, sw := watchRig(t)
	vm, peer := rarp.MustParseMAC("52:54:00:00:00:0c"), rarp.MustParseMAC("02:00:00:00:00:01")
	w := open(t, host, "upl", reconverge.Out, vm)
	netnstest.Send(t, sw, "sw", frame(rarp.Broadcast, vm))      // arrives: not counted
	netnstest.Send(t, host, "upl", frame(rarp.Broadcast, peer)) // another source
	before := time.Now()
	netnstest.Send(t, host, "upl", frame(rarp.Broadcast, vm))
	netnstest.Send(t, host, "upl", frame(peer, vm))
	got, err := w.Run(context.Background(), time.Now().Add(300*time.Millisecond), false)
	if err != nil {
		t.Fatal(err)
	}
	if got[0].Frames != 2 || got[0].First.Before(before) {
		t.Errorf("frames out from %s: %d, first %v; want 2 after %v", vm, got[0].Frames, got[0].First, before)
	}
}

// The filter's jumps are computed per MAC: the first and the last of
// MaxMACs must match, a MAC differing in its last byte must not.
func TestWatchFilterAtMaxMACs(t *testing.T) {
	host, sw := watchRig(t)
	macs := make([]rarp.MAC, reconverge.MaxMACs)
	for i := range macs {
		macs[i] = rarp.MAC{0x52, 0x54, 0x00, 0x10, byte(i >> 8), byte(i)}
	}
	w := open(t, host, "upl", reconverge.To, macs...)
	peer := rarp.MustParseMAC("02:00:00:00:00:99")
	netnstest.Send(t, sw, "sw", frame(macs[0], peer))
	netnstest.Send(t, sw, "sw", frame(macs[len(macs)-1], peer))
	netnstest.Send(t, sw, "sw", frame(rarp.MAC{0x52, 0x54, 0x00, 0x10, 0x00, 0xff}, peer)) // not in the set
	got, err := w.Run(context.Background(), time.Now().Add(300*time.Millisecond), false)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, s := range got {
		n += s.Frames
	}
	if !got[0].Seen() || !got[len(got)-1].Seen() || n != 2 {
		t.Fatalf("first seen %v, last seen %v, total %d frames; want both seen and 2 frames", got[0].Seen(), got[len(got)-1].Seen(), n)
	}
}

func TestWatchEndsWithItsContext(t *testing.T) {
	host, _ := watchRig(t)
	w := open(t, host, "upl", reconverge.To, rarp.MustParseMAC("52:54:00:00:00:01"))
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := w.Run(ctx, time.Now().Add(time.Minute), true); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Run returned %v after its context ended", d)
	}
}

func TestFilterRefusesTooManyOrNoMACs(t *testing.T) {
	if _, err := reconverge.Filter(reconverge.To, make([]rarp.MAC, reconverge.MaxMACs+1)); !errors.Is(err, reconverge.ErrTooManyMACs) {
		t.Errorf("MaxMACs+1: err = %v, want ErrTooManyMACs", err)
	}
	if _, err := reconverge.Filter(reconverge.To, nil); err == nil {
		t.Error("no MACs: no error")
	}
}
