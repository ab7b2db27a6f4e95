package reconverge_test

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
	"github.com/rarp-announce/rarp-announce/pkg/reconverge"
)

// openShared opens a watch on host's dev through s, or on a socket of its
// own (reconverge.Open) when s is nil; the test closes it.
func openShared(t testing.TB, s *reconverge.Shared, host *netnstest.NS, dev string, dir reconverge.Direction, macs ...rarp.MAC) *reconverge.Watch {
	t.Helper()
	opener := reconverge.Open
	if s != nil {
		opener = s.Open
	}
	ifi := host.Interface(t, dev)
	var w *reconverge.Watch
	if err := host.Do(func() (err error) { w, err = opener(ifi, dir, macs); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

// runAsync runs w until deadline in the background.
func runAsync(w *reconverge.Watch, deadline time.Time, untilAllSeen bool) <-chan []reconverge.Sighting {
	ch := make(chan []reconverge.Sighting, 1)
	go func() {
		ss, _ := w.Run(context.Background(), deadline, untilAllSeen)
		ch <- ss
	}()
	return ch
}

// Two watches on one device at once share one socket, and each counts
// only its own MACs; the first one's end leaves the other running; after
// the last, the device's next watch opens a new socket.
func TestSharedWatchesShareOneSocketPerDevice(t *testing.T) {
	host, sw := watchRig(t)
	var s reconverge.Shared
	vm1, vm2, vm3 := rarp.MustParseMAC("52:54:00:00:00:01"), rarp.MustParseMAC("52:54:00:00:00:02"), rarp.MustParseMAC("52:54:00:00:00:03")
	peer := rarp.MustParseMAC("02:00:00:00:00:99")
	a := openShared(t, &s, host, "upl", reconverge.To, vm1)
	b := openShared(t, &s, host, "upl", reconverge.To, vm2, vm3)
	if n := s.Sockets(); n != 1 {
		t.Fatalf("%d sockets for two watches on one device, want 1", n)
	}

	netnstest.Send(t, sw, "sw", frame(vm1, peer))
	netnstest.Send(t, sw, "sw", frame(vm2, peer))
	netnstest.Send(t, sw, "sw", frame(vm2, peer))
	netnstest.Send(t, sw, "sw", frame(rarp.Broadcast, vm3)) // from vm3, not to it
	netnstest.Send(t, host, "upl", frame(vm3, peer))        // the host's own, outgoing
	got, err := a.Run(context.Background(), time.Now().Add(300*time.Millisecond), false)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].MAC != vm1 || got[0].Frames != 1 {
		t.Fatalf("a: %+v, want vm1 once", got)
	}
	bEnd := runAsync(b, time.Now().Add(2*time.Second), false)
	a.Close()
	time.Sleep(50 * time.Millisecond)
	netnstest.Send(t, sw, "sw", frame(vm3, peer)) // after a closed: b still reads
	netnstest.Send(t, sw, "sw", frame(vm1, peer)) // a's MAC: nobody's now
	// The hub's reader delivers vm3's frame in its own time: close b
	// once it did (or after a bound, and the check below fails).
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if ss := b.Sightings(); ss[1].Frames > 0 {
			break
		}
	}
	b.Close()
	gb := <-bEnd
	if len(gb) != 2 || gb[0].MAC != vm2 || gb[0].Frames != 2 || gb[1].MAC != vm3 || gb[1].Frames != 1 {
		t.Fatalf("b: %+v, want vm2 twice and vm3 once", gb)
	}
	if s.Sockets() != 1 {
		t.Fatalf("%d sockets, want still 1", s.Sockets())
	}
	c := openShared(t, &s, host, "upl", reconverge.To, vm1)
	if n := s.Sockets(); n != 2 {
		t.Fatalf("%d sockets after the last watch closed and a new one opened, want 2", n)
	}
	netnstest.Send(t, sw, "sw", frame(vm1, peer))
	if got, _ := c.Run(context.Background(), time.Now().Add(2*time.Second), true); !got[0].Seen() {
		t.Fatal("the new socket's watch did not see vm1")
	}
}

// Past exactMACs MACs a shared socket filters on buckets: every watched
// MAC still counts, a MAC sharing a bucket with a watched one does not;
// To, From and Out on one device are three sockets.
func TestSharedWatchesManyMACs(t *testing.T) {
	host, sw := watchRig(t)
	var s reconverge.Shared
	peer := rarp.MustParseMAC("02:00:00:00:00:99")
	var ws []*reconverge.Watch
	var macs []rarp.MAC
	for i := range 40 {
		m := rarp.MAC{0x52, 0x54, 0x00, 0x20, byte(i >> 8), byte(i * 7)}
		macs = append(macs, m)
		ws = append(ws, openShared(t, &s, host, "upl", reconverge.To, m))
	}
	from := openShared(t, &s, host, "upl", reconverge.From, macs[3])
	// Out past exactMACs: the bucket filter with the outgoing side.
	var outs []*reconverge.Watch
	for _, m := range macs[:10] {
		outs = append(outs, openShared(t, &s, host, "upl", reconverge.Out, m))
	}
	if n := s.Sockets(); n != 3 {
		t.Fatalf("%d sockets, want 3 (To, From and Out)", n)
	}
	// Out: macs[1] arrives (not counted), macs[2] leaves (counted), and
	// a MAC in macs[2]'s bucket leaves (dropped by the reader).
	netnstest.Send(t, sw, "sw", frame(peer, macs[1]))
	netnstest.Send(t, host, "upl", frame(peer, macs[2]))
	netnstest.Send(t, host, "upl", frame(peer, rarp.MAC{0x52, 0x54, 0x00, 0x21, macs[2][4], macs[2][5]}))
	// 52:54:00:21:00:00 is in the bucket of macs[0] (same last 9 bits).
	netnstest.Send(t, sw, "sw", frame(rarp.MAC{0x52, 0x54, 0x00, 0x21, 0x00, 0x00}, peer))
	for _, m := range macs {
		netnstest.Send(t, sw, "sw", frame(m, peer))
	}
	netnstest.Send(t, sw, "sw", frame(peer, macs[3]))
	for i, w := range ws {
		got, err := w.Run(context.Background(), time.Now().Add(2*time.Second), true)
		if err != nil {
			t.Fatal(err)
		}
		if got[0].Frames != 1 {
			t.Errorf("watch %d (%s): %d frames, want 1", i, macs[i], got[0].Frames)
		}
	}
	if got, _ := from.Run(context.Background(), time.Now().Add(2*time.Second), true); got[0].Frames != 1 {
		t.Errorf("From watch: %d frames from %s, want 1", got[0].Frames, macs[3])
	}
	for i, w := range outs {
		want := 0
		if i == 2 {
			want = 1
		}
		got, _ := w.Run(context.Background(), time.Now().Add(300*time.Millisecond), false)
		if got[0].Frames != want {
			t.Errorf("Out watch %d (%s): %d frames, want %d", i, macs[i], got[0].Frames, want)
		}
	}
}

// A device that goes away ends every watch on its socket with an error,
// and the next watch on a device of that name opens a new socket.
func TestSharedWatchesEndWhenTheDeviceGoes(t *testing.T) {
	host, sw := watchRig(t)
	var s reconverge.Shared
	a := openShared(t, &s, host, "upl", reconverge.To, rarp.MustParseMAC("52:54:00:00:00:01"))
	b := openShared(t, &s, host, "upl", reconverge.To, rarp.MustParseMAC("52:54:00:00:00:02"))
	ends := make(chan error, 2)
	for _, w := range []*reconverge.Watch{a, b} {
		go func() {
			_, err := w.Run(context.Background(), time.Now().Add(10*time.Second), true)
			ends <- err
		}()
	}
	host.Exec(t, "ip", "link", "del", "upl")
	for range 2 {
		select {
		case err := <-ends:
			if err == nil {
				t.Error("a watch ended without an error when its device went away")
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a watch still runs 5s after its device went away")
		}
	}
	netnstest.Veth(t, host, "upl", sw, "sw2")
	c := openShared(t, &s, host, "upl", reconverge.To, rarp.MustParseMAC("52:54:00:00:00:01"))
	if n := s.Sockets(); n != 2 {
		t.Fatalf("%d sockets, want 2 (a new one for the new device)", n)
	}
	netnstest.Send(t, sw, "sw2", frame(rarp.MustParseMAC("52:54:00:00:00:01"), rarp.MustParseMAC("02:00:00:00:00:99")))
	if got, err := c.Run(context.Background(), time.Now().Add(2*time.Second), true); err != nil || !got[0].Seen() {
		t.Fatalf("watch on the new device: %+v, %v", got, err)
	}
}

// Start on shared watches: no goroutine waits while they do; each ends
// once, the right way: every MAC seen (untilAllSeen), the deadline, the
// context, Close.
func TestSharedWatchStart(t *testing.T) {
	host, sw := watchRig(t)
	var s reconverge.Shared
	vm1, vm2 := rarp.MustParseMAC("52:54:00:00:00:01"), rarp.MustParseMAC("52:54:00:00:00:02")
	peer := rarp.MustParseMAC("02:00:00:00:00:99")
	type end struct {
		ss  []reconverge.Sighting
		err error
		at  time.Time
	}
	start := func(w *reconverge.Watch, ctx context.Context, deadline time.Time, untilAllSeen bool) <-chan end {
		ch := make(chan end, 2) // a second end would show
		w.Start(ctx, deadline, untilAllSeen, func(ss []reconverge.Sighting, err error) { ch <- end{ss, err, time.Now()} })
		return ch
	}
	wait := func(ch <-chan end, what string) end {
		t.Helper()
		select {
		case e := <-ch:
			select {
			case <-ch:
				t.Errorf("%s ended twice", what)
			case <-time.After(100 * time.Millisecond):
			}
			return e
		case <-time.After(5 * time.Second):
			t.Fatalf("%s never ended", what)
			return end{}
		}
	}
	all := openShared(t, &s, host, "upl", reconverge.To, vm1, vm2)
	timed := openShared(t, &s, host, "upl", reconverge.To, vm1)
	cancelled := openShared(t, &s, host, "upl", reconverge.To, vm2)
	closed := openShared(t, &s, host, "upl", reconverge.To, vm2)
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	t0 := time.Now()
	eAll := start(all, context.Background(), t0.Add(time.Minute), true)
	eTimed := start(timed, context.Background(), t0.Add(400*time.Millisecond), false)
	eCancelled := start(cancelled, ctx, t0.Add(time.Minute), false)
	eClosed := start(closed, context.Background(), t0.Add(time.Minute), false)
	if n := runtime.NumGoroutine(); n > before {
		t.Errorf("%d goroutines with four watches started, %d before", n, before)
	}

	netnstest.Send(t, sw, "sw", frame(vm1, peer))
	netnstest.Send(t, sw, "sw", frame(vm2, peer))
	e := wait(eAll, "the untilAllSeen watch")
	if e.err != nil || len(e.ss) != 2 || !e.ss[0].Seen() || !e.ss[1].Seen() || e.at.Sub(t0) > 3*time.Second {
		t.Errorf("untilAllSeen: %+v %v after %v, want both seen, early", e.ss, e.err, e.at.Sub(t0))
	}
	e = wait(eTimed, "the timed watch")
	if e.err != nil || len(e.ss) != 1 || e.ss[0].Frames != 1 || e.at.Sub(t0) < 400*time.Millisecond {
		t.Errorf("deadline: %+v %v after %v, want vm1 once, at the deadline", e.ss, e.err, e.at.Sub(t0))
	}
	cancel()
	if e = wait(eCancelled, "the cancelled watch"); e.err != nil || len(e.ss) != 1 || e.ss[0].Frames != 1 {
		t.Errorf("cancelled: %+v %v, want vm2 once", e.ss, e.err)
	}
	closed.Close()
	if e = wait(eClosed, "the closed watch"); e.err != nil || len(e.ss) != 1 {
		t.Errorf("closed: %+v %v", e.ss, e.err)
	}

	// Started after its end (closed first): ends at once.
	late := openShared(t, &s, host, "upl", reconverge.To, vm1)
	late.Close()
	if e = wait(start(late, context.Background(), time.Now().Add(time.Minute), false), "a watch closed before Start"); e.err != nil {
		t.Errorf("closed before Start: %v", e.err)
	}
}
