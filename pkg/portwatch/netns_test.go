package portwatch

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"go.uber.org/zap/zaptest"

	"github.com/rarp-announce/rarp-announce/internal/caps"
	"github.com/rarp-announce/rarp-announce/internal/netnstest"
)

// host is a namespace with bridge br0, standing for a hypervisor, and a
// Watcher on it.
func host(t *testing.T, opts Options) (*netnstest.NS, *Watcher) {
	t.Helper()
	netnstest.Require(t)
	ns := netnstest.New(t, "pw")
	ns.Bridge(t, "br0")
	return ns, watcherIn(t, ns, opts)
}

func watcherIn(t testing.TB, ns *netnstest.NS, opts Options) *Watcher {
	t.Helper()
	h, err := netns.GetFromName(ns.Name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	opts.Namespace = &h
	if opts.Logger == nil {
		opts.Logger = zaptest.NewLogger(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w, err := New(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

// tap makes a persistent tap (ip tuntap add), optionally on a master and up.
// Nobody holds it yet: it has no carrier.
func tap(t *testing.T, ns *netnstest.NS, name, master string, up bool) {
	t.Helper()
	ns.Exec(t, "ip", "tuntap", "add", "dev", name, "mode", "tap")
	if master != "" {
		ns.Attach(t, name, master)
	}
	if up {
		ns.Exec(t, "ip", "link", "set", "dev", name, "up")
	}
}

// heldTap is tap with a reader, as QEMU holds a VM's tap: it has carrier
// (if up). The reader is closed when the test ends, or by closing it.
func heldTap(t *testing.T, ns *netnstest.NS, name, master string, up bool) *netnstest.Tap {
	t.Helper()
	tap(t, ns, name, master, up)
	return netnstest.OpenTap(t, ns, name)
}

type result struct {
	s   State
	err error
}

func waitAsync(w *Watcher, port, master string, timeout time.Duration) <-chan result {
	ch := make(chan result, 1)
	go func() {
		s, err := w.WaitReady(context.Background(), port, master, timeout)
		ch <- result{s, err}
	}()
	return ch
}

// waitPending starts a WaitReady on port (20 s timeout) and asserts it has
// not returned, because of what.
func waitPending(t *testing.T, w *Watcher, port, master, what string) <-chan result {
	t.Helper()
	res := waitAsync(w, port, master, 20*time.Second)
	pending(t, res, what)
	return res
}

// pending asserts that a wait has not returned: the port is not ready, so
// no amount of waiting may make it return a success.
func pending(t *testing.T, ch <-chan result, what string) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("WaitReady returned while %s: %+v, %v", what, r.s, r.err)
	case <-time.After(300 * time.Millisecond):
	}
}

func ready(t *testing.T, ch <-chan result) State {
	t.Helper()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.s.Missing("") != None {
			t.Fatalf("WaitReady returned a port that is not ready: %+v", r.s)
		}
		return r.s
	case <-time.After(10 * time.Second):
		t.Fatal("WaitReady did not return within 10s of the port becoming ready")
	}
	return State{}
}

func TestWaitReadyTapCreatedLater(t *testing.T) {
	ns, w := host(t, Options{})
	res := waitPending(t, w, "vnet0", "br0", "the tap does not exist")
	tap(t, ns, "vnet0", "br0", true)
	pending(t, res, "the tap has no reader (no carrier)")
	opened := time.Now()
	netnstest.OpenTap(t, ns, "vnet0")
	s := ready(t, res)
	// The bridge enables the port when linkwatch handles the carrier
	// change, asynchronously.
	t.Logf("ready %v after the tap was opened", time.Since(opened).Round(time.Microsecond))
	if s.Name != "vnet0" || s.Kind != "tun" || s.Master != "br0" || !s.BridgePort || s.PortState != PortForwarding ||
		!s.Carrier || s.OperState != netlink.OperUp {
		t.Fatalf("state %+v", s)
	}
}

// A tap created by opening /dev/net/tun, as libvirt does before handing it
// to QEMU, never had its carrier toggled: operstate stays "unknown", and it
// is ready.
func TestWaitReadyLibvirtStyleTap(t *testing.T) {
	ns, w := host(t, Options{})
	netnstest.OpenTap(t, ns, "vnet1")
	res := waitPending(t, w, "vnet1", "br0", "the tap is not attached")
	ns.Attach(t, "vnet1", "br0")
	ns.Exec(t, "ip", "link", "set", "dev", "vnet1", "up")
	s := ready(t, res)
	if s.OperState != netlink.OperUnknown || !s.Carrier || s.PortState != PortForwarding {
		t.Fatalf("libvirt-style tap: %+v (expected operstate unknown, carrier, forwarding)", s)
	}
}

func TestWaitReadyAttachedLater(t *testing.T) {
	ns, w := host(t, Options{})
	heldTap(t, ns, "vnet0", "", true)
	res := waitPending(t, w, "vnet0", "br0", "the tap has no master")
	ns.Attach(t, "vnet0", "br0")
	if s := ready(t, res); s.Master != "br0" {
		t.Fatalf("master %q", s.Master)
	}
}

func TestWaitReadyUpLater(t *testing.T) {
	ns, w := host(t, Options{})
	heldTap(t, ns, "vnet0", "br0", false)
	res := waitPending(t, w, "vnet0", "br0", "the tap is down")
	ns.Exec(t, "ip", "link", "set", "dev", "vnet0", "up")
	if s := ready(t, res); !s.AdminUp {
		t.Fatalf("%+v", s)
	}
}

// Ready already: WaitReady answers from its view without waiting for an
// event, so even a 1 ns timeout succeeds.
func TestWaitReadyAlreadyReady(t *testing.T) {
	ns, _ := host(t, Options{})
	heldTap(t, ns, "vnet0", "br0", true)
	// The kernel derives operstate and the port's STP state from the
	// carrier asynchronously (linkwatch): wait until it says forwarding,
	// so the port really is ready before the watcher starts.
	netnstest.WaitFor(t, "the kernel to make vnet0 a forwarding port", func() bool {
		return strings.Contains(ns.Exec(t, "bridge", "link", "show", "dev", "vnet0"), "state forwarding")
	})
	m := NewMetrics(nil)
	w := watcherIn(t, ns, Options{Metrics: m}) // started after: the port is in the initial dump
	s, err := w.WaitReady(context.Background(), "vnet0", "br0", time.Nanosecond)
	if err != nil || s.Master != "br0" {
		t.Fatalf("%+v, %v", s, err)
	}
	if got := testutil.ToFloat64(m.waits.WithLabelValues(resultReady)); got != 1 {
		t.Fatalf("ready waits = %v", got)
	}
}

func TestWaitReadyTimeoutNamesTheMissingCondition(t *testing.T) {
	ns, _ := host(t, Options{})
	tap(t, ns, "nomaster", "", true)
	tap(t, ns, "down", "br0", false)
	tap(t, ns, "noreader", "br0", true)
	for _, name := range []string{"nomaster", "down"} {
		netnstest.OpenTap(t, ns, name)
	}
	m := NewMetrics(nil)
	w := watcherIn(t, ns, Options{Metrics: m})
	tests := []struct {
		port    string
		missing Condition
		why     string
	}{
		{"absent", Exists, "does not exist"},
		{"nomaster", Attached, "not attached to br0 (master none)"},
		{"down", Up, "not up (admin down, no carrier, operstate down)"},
		{"noreader", Up, "not up (no carrier, operstate down)"},
	}
	for _, tc := range tests {
		t.Run(tc.port, func(t *testing.T) {
			s, err := w.WaitReady(context.Background(), tc.port, "br0", 50*time.Millisecond)
			var nr *NotReadyError
			if !errors.As(err, &nr) || !errors.Is(err, ErrTimeout) {
				t.Fatalf("err = %v, want a NotReadyError wrapping ErrTimeout", err)
			}
			if nr.Missing != tc.missing || !strings.HasSuffix(err.Error(), ": "+tc.why) {
				t.Fatalf("missing %v, error %q; want %v, ending %q", nr.Missing, err, tc.missing, tc.why)
			}
			if tc.missing != Exists && s.Name != tc.port {
				t.Fatalf("state of the port not returned: %+v", s)
			}
			t.Log(err)
		})
	}
	if got := testutil.ToFloat64(m.waits.WithLabelValues(resultTimeout)); got != 4 {
		t.Fatalf("timeout waits = %v, want 4", got)
	}
}

// A bridge with STP on keeps a new port listening, then learning, for the
// forward delay each (at least 2 s with kernel STP); frames are dropped
// until it forwards. libvirt's default network has STP on.
func TestWaitReadyWaitsForSTPForwarding(t *testing.T) {
	netnstest.Require(t)
	ns := netnstest.New(t, "stp")
	ns.Exec(t, "ip", "link", "add", "brs", "type", "bridge", "stp_state", "1", "forward_delay", "200")
	ns.Exec(t, "ip", "link", "set", "dev", "brs", "up")
	w := watcherIn(t, ns, Options{})
	heldTap(t, ns, "vnet0", "brs", true)
	start := time.Now()
	_, err := w.WaitReady(context.Background(), "vnet0", "brs", 500*time.Millisecond)
	var nr *NotReadyError
	if !errors.As(err, &nr) || nr.Missing != Forwarding || nr.State.PortState != PortListening {
		t.Fatalf("err = %v; want the port listening, not forwarding", err)
	}
	t.Log(err)
	s, err := w.WaitReady(context.Background(), "vnet0", "brs", 20*time.Second)
	if err != nil || s.PortState != PortForwarding {
		t.Fatalf("%+v, %v", s, err)
	}
	t.Logf("forwarding %v after the tap got carrier", time.Since(start).Round(10*time.Millisecond))
}

func TestWaitReadyCancelled(t *testing.T) {
	m := NewMetrics(nil)
	_, w := host(t, Options{Metrics: m})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err := w.WaitReady(ctx, "vnet9", "br0", time.Minute)
	var nr *NotReadyError
	if !errors.Is(err, context.Canceled) || !errors.As(err, &nr) || nr.Missing != Exists {
		t.Fatalf("err = %v", err)
	}
	if got := testutil.ToFloat64(m.waits.WithLabelValues(resultCancelled)); got != 1 {
		t.Fatalf("cancelled waits = %v", got)
	}
}

func TestCloseEndsWaitsAndWatches(t *testing.T) {
	ns, w := host(t, Options{})
	readyTap(t, ns, w, "vnet0")
	changes := w.Watch(context.Background(), "vnet0", "br0", time.Minute)
	res := waitAsync(w, "vnet9", "br0", time.Minute)
	time.Sleep(50 * time.Millisecond)
	w.Close()
	select {
	case r := <-res:
		if !errors.Is(r.err, ErrClosed) {
			t.Fatalf("err = %v, want ErrClosed", r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WaitReady still waiting after Close")
	}
	if _, open := <-changes; open {
		t.Fatal("Watch channel open after Close")
	}
	if _, err := w.WaitReady(context.Background(), "vnet0", "br0", time.Second); !errors.Is(err, ErrClosed) {
		t.Fatalf("WaitReady after Close: %v", err)
	}
}

// A tap's readiness follows its reader: what QEMU holding (or dropping) the
// tap looks like to the watcher.
func TestTapCarrierFollowsItsReader(t *testing.T) {
	ns, w := host(t, Options{})
	fd := heldTap(t, ns, "vnet0", "br0", true)
	if _, err := w.WaitReady(context.Background(), "vnet0", "br0", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	fd.Close()
	netnstest.Eventually(t, 5*time.Second, func() error {
		s, _ := w.State("vnet0")
		if !s.Carrier && s.OperState == netlink.OperDown && s.PortState == PortDisabled && s.AdminUp {
			return nil
		}
		return fmt.Errorf("after the reader closed the tap: %+v", s)
	})
}

func TestWaitReadyMacvtap(t *testing.T) {
	netnstest.Require(t)
	ns := netnstest.New(t, "mvt")
	ns.Exec(t, "ip", "link", "add", "low0", "type", "veth", "peer", "name", "low1")
	ns.Exec(t, "ip", "link", "add", "link", "low0", "name", "mvt0", "type", "macvtap", "mode", "bridge")
	ns.Exec(t, "ip", "link", "set", "dev", "mvt0", "up")
	w := watcherIn(t, ns, Options{})
	res := waitPending(t, w, "mvt0", "low0", "the lower device is down")
	s, _ := w.State("mvt0")
	if s.Kind != "macvtap" || s.Lower != "low0" || s.OperState != netlink.OperLowerLayerDown || s.Carrier {
		t.Fatalf("macvtap on a down lower device: %+v", s)
	}
	ns.Exec(t, "ip", "link", "set", "dev", "low0", "up")
	pending(t, res, "the lower device has no carrier (its veth peer is down)")
	ns.Exec(t, "ip", "link", "set", "dev", "low1", "up")
	s = ready(t, res)
	if s.BridgePort || s.Master != "" || s.Lower != "low0" || s.OperState != netlink.OperUp {
		t.Fatalf("%+v", s)
	}
	// Nobody holds the macvtap's /dev/tapN, yet it has carrier: unlike a
	// tap, a macvtap's carrier follows its lower device only.
	if _, err := w.WaitReady(context.Background(), "mvt0", "", time.Nanosecond); err != nil {
		t.Fatal(err)
	}
	_, err := w.WaitReady(context.Background(), "mvt0", "low1", 50*time.Millisecond)
	var nr *NotReadyError
	if !errors.As(err, &nr) || nr.Missing != Attached || !strings.Contains(err.Error(), "lower device low0") {
		t.Fatalf("macvtap on another lower device: %v", err)
	}
}

func TestWaitReadyRenamedIntoPlace(t *testing.T) {
	ns, w := host(t, Options{})
	heldTap(t, ns, "tmp0", "br0", false)
	res := waitPending(t, w, "vnet0", "br0", "no link has the name yet")
	ns.Exec(t, "ip", "link", "set", "dev", "tmp0", "name", "vnet0")
	pending(t, res, "the renamed tap is down")
	ns.Exec(t, "ip", "link", "set", "dev", "vnet0", "up")
	if s := ready(t, res); s.Name != "vnet0" {
		t.Fatalf("%+v", s)
	}
	if s, ok := w.State("tmp0"); ok {
		t.Fatalf("old name still known: %+v", s)
	}
}

// Renaming the master changes which ports are attached to a master of
// that name.
func TestMasterRenamed(t *testing.T) {
	ns, w := host(t, Options{})
	heldTap(t, ns, "vnet0", "br0", true)
	res := waitPending(t, w, "vnet0", "brx", "the master is br0, not brx")
	ns.Exec(t, "ip", "link", "set", "dev", "br0", "down")
	ns.Exec(t, "ip", "link", "set", "dev", "br0", "name", "brx")
	ns.Exec(t, "ip", "link", "set", "dev", "brx", "up")
	if s := ready(t, res); s.Master != "brx" {
		t.Fatalf("%+v", s)
	}
}

// changes collects what a Watch reports until its channel closes.
func collect(ch <-chan Change) <-chan []Change {
	out := make(chan []Change, 1)
	go func() {
		var all []Change
		for c := range ch {
			all = append(all, c)
		}
		out <- all
	}()
	return out
}

// next returns the next Change, failing after 5 s.
func next(t *testing.T, ch <-chan Change) Change {
	t.Helper()
	select {
	case c, ok := <-ch:
		if !ok {
			t.Fatal("watch ended")
		}
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("no change reported within 5s")
	}
	return Change{}
}

// quiet asserts that no Change comes for d.
func quiet(t *testing.T, ch <-chan Change, d time.Duration, what string) {
	t.Helper()
	select {
	case c, ok := <-ch:
		if ok {
			t.Fatalf("%s: unexpected change %v %+v", what, c.Cause, c.State)
		}
	case <-time.After(d):
	}
}

func readyTap(t *testing.T, ns *netnstest.NS, w *Watcher, name string) *netnstest.Tap {
	t.Helper()
	fd := heldTap(t, ns, name, "br0", true)
	if _, err := w.WaitReady(context.Background(), name, "br0", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	return fd
}

func TestWatchReportsReattachAndRestart(t *testing.T) {
	m := NewMetrics(nil)
	ns, w := host(t, Options{Metrics: m})
	readyTap(t, ns, w, "vnet0")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := w.Watch(ctx, "vnet0", "br0", time.Minute)
	quiet(t, ch, 100*time.Millisecond, "nothing changed")

	// Changes that do not stop the port passing frames are not reported.
	ns.Exec(t, "ip", "link", "set", "dev", "vnet0", "mtu", "1400")
	ns.Exec(t, "ip", "link", "set", "dev", "vnet0", "promisc", "on")
	quiet(t, ch, 200*time.Millisecond, "MTU and promiscuity changes")

	ns.Exec(t, "ip", "link", "set", "dev", "vnet0", "nomaster")
	quiet(t, ch, 200*time.Millisecond, "detached, not yet re-attached")
	ns.Attach(t, "vnet0", "br0")
	if c := next(t, ch); c.Cause&CauseReattached == 0 || c.State.Master != "br0" || c.Port != "vnet0" {
		t.Fatalf("re-attach: %v %+v", c.Cause, c.State)
	}

	ns.Exec(t, "ip", "link", "set", "dev", "vnet0", "down")
	quiet(t, ch, 200*time.Millisecond, "down, not yet up")
	ns.Exec(t, "ip", "link", "set", "dev", "vnet0", "up")
	if c := next(t, ch); c.Cause != CauseRestarted || !c.State.Up() {
		t.Fatalf("down/up: %v %+v", c.Cause, c.State)
	}
	quiet(t, ch, 200*time.Millisecond, "after down/up")
	if got := testutil.ToFloat64(m.changes.WithLabelValues("restarted")); got < 1 {
		t.Fatalf("restarted changes = %v", got)
	}
}

// Down/up three times in a few milliseconds (netlink calls, no process per
// step) is one change. Settle is 500 ms here so that a loaded machine
// cannot split the burst.
func TestWatchCoalescesABurst(t *testing.T) {
	ns, w := host(t, Options{Settle: 500 * time.Millisecond})
	readyTap(t, ns, w, "vnet0")
	ch := w.Watch(context.Background(), "vnet0", "br0", 3*time.Second)
	h := ns.Netlink()
	l, err := h.LinkByName("vnet0")
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := h.LinkSetDown(l); err != nil {
			t.Fatal(err)
		}
		if err := h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	all := <-collect(ch)
	if len(all) != 1 || all[0].Cause != CauseRestarted {
		t.Fatalf("got %d changes (%+v); want 1 restarted", len(all), all)
	}
}

func TestWatchSeesDeleteAndRecreate(t *testing.T) {
	ns, w := host(t, Options{})
	fd := readyTap(t, ns, w, "vnet0")
	before, _ := w.State("vnet0")
	ch := w.Watch(context.Background(), "vnet0", "br0", time.Minute)
	fd.Close()
	ns.Exec(t, "ip", "link", "del", "dev", "vnet0")
	quiet(t, ch, 200*time.Millisecond, "deleted")
	readyTap(t, ns, w, "vnet0")
	c := next(t, ch)
	if c.Cause&CauseRecreated == 0 || c.State.Index == before.Index {
		t.Fatalf("re-created: %v, index %d (was %d)", c.Cause, c.State.Index, before.Index)
	}
}

// Changes after the window are not reported: the watch is gone by then.
func TestWatchWindow(t *testing.T) {
	ns, w := host(t, Options{})
	readyTap(t, ns, w, "vnet0")
	start := time.Now()
	ch := w.Watch(context.Background(), "vnet0", "br0", time.Second)
	all := collect(ch)
	ns.Exec(t, "ip", "link", "set", "dev", "vnet0", "down")
	ns.Exec(t, "ip", "link", "set", "dev", "vnet0", "up")
	got := <-all // the channel closes when the window ends
	if time.Since(start) < time.Second {
		t.Fatalf("watch ended after %v, before its window", time.Since(start))
	}
	if len(got) != 1 || got[0].Cause != CauseRestarted {
		t.Fatalf("got %+v; want the down/up inside the window", got)
	}
	ns.Exec(t, "ip", "link", "set", "dev", "vnet0", "nomaster")
	ns.Attach(t, "vnet0", "br0")
	w.mu.Lock()
	left := len(w.watches)
	w.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d watches still registered after the window", left)
	}
	// A cancelled context ends a watch too.
	ctx, cancel := context.WithCancel(context.Background())
	ch = w.Watch(ctx, "vnet0", "br0", time.Minute)
	cancel()
	select {
	case _, open := <-ch:
		if open {
			t.Fatal("change after cancel")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("watch not ended by its context")
	}
}

// Many waits share the one subscription; each returns when its own port
// is ready, not before.
func TestManyPortsWaitedConcurrently(t *testing.T) {
	const n = 1000
	m := NewMetrics(nil)
	ns, w := host(t, Options{Metrics: m})
	ifbs(t, ns, n)
	results := make([]<-chan result, n)
	for i := range n {
		results[i] = waitAsync(w, ifbName(i), "br0", time.Minute)
	}
	pending(t, results[0], "all ports are down")
	h := ns.Netlink()
	for i := range n {
		l, err := h.LinkByName(ifbName(i))
		if err != nil {
			t.Fatal(err)
		}
		if err := h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		if s := ready(t, results[i]); s.Name != ifbName(i) || s.PortState != PortForwarding {
			t.Fatalf("port %d: %+v", i, s)
		}
	}
	if got := testutil.ToFloat64(m.waits.WithLabelValues(resultReady)); got != n {
		t.Fatalf("ready waits = %v, want %d", got, n)
	}
}

// When link messages overflow the socket, the watcher resubscribes and
// rebuilds its view from a dump: links created and deleted meanwhile are
// right, waits complete, and each Watch reports a possible change.
func TestResyncAfterOverflow(t *testing.T) {
	var paused atomic.Bool
	entered := make(chan struct{}, 1)
	hold := make(chan struct{})
	m := NewMetrics(nil)
	ns, w := host(t, Options{Metrics: m, ReceiveBuffer: 4096, beforeReceive: func() {
		if paused.Load() {
			select {
			case entered <- struct{}{}:
			default:
			}
			<-hold
		}
	}})
	readyTap(t, ns, w, "vnet0")
	tap(t, ns, "gone0", "", false)
	if _, err := w.WaitReady(context.Background(), "gone0", "", time.Nanosecond); err == nil {
		t.Fatal("a down tap is not ready")
	}
	changes := w.Watch(context.Background(), "vnet0", "br0", time.Minute)

	// Stop the reader, then flood its socket.
	paused.Store(true)
	ns.Exec(t, "ip", "link", "set", "dev", "vnet0", "mtu", "1400") // wakes the reader into the hook
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("reader did not pause")
	}
	ns.Exec(t, "ip", "link", "del", "dev", "gone0")
	ifbs(t, ns, 200)
	h := ns.Netlink()
	p5, err := h.LinkByName(ifbName(5))
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(p5); err != nil {
		t.Fatal(err)
	}
	res := waitAsync(w, ifbName(5), "br0", time.Minute)
	paused.Store(false)
	close(hold)

	if s := ready(t, res); s.Name != ifbName(5) {
		t.Fatalf("%+v", s)
	}
	if c := next(t, changes); c.Cause != CauseResync {
		t.Fatalf("after a resync the watch reported %v", c.Cause)
	}
	if s, ok := w.State("gone0"); ok {
		t.Fatalf("a link deleted while the watcher was blind is still known: %+v", s)
	}
	// With a 4 KiB buffer the burst can overflow the new socket too.
	if got := testutil.ToFloat64(m.resyncs.WithLabelValues("overflow")); got < 1 {
		t.Fatalf("overflow resyncs = %v, want at least 1", got)
	}
	for i := range 200 {
		if _, ok := w.State(ifbName(i)); !ok {
			t.Fatalf("%s, created while the watcher was blind, is unknown", ifbName(i))
		}
	}
}

// With no master asked for, a move to another bridge is a change, and the
// Change says where the port is now.
func TestWatchSeesAMoveToAnotherBridge(t *testing.T) {
	ns, w := host(t, Options{})
	ns.Bridge(t, "br1")
	readyTap(t, ns, w, "vnet0")
	ch := w.Watch(context.Background(), "vnet0", "", time.Minute)
	ns.Attach(t, "vnet0", "br1") // enslaving to br1 releases it from br0
	c := next(t, ch)
	if c.Cause&CauseReattached == 0 || c.State.Master != "br1" || c.State.PortState != PortForwarding {
		t.Fatalf("move: %v %+v", c.Cause, c.State)
	}
}

// With CAP_NET_RAW and without CAP_NET_ADMIN (the unit's no-fdb-repair
// drop-in, a container given NET_RAW only) the watcher subscribes, dumps
// and follows links. The dump request once went to the socket's own
// subscribed address, which the kernel refuses without CAP_NET_ADMIN.
func TestStartsWithNetRawOnly(t *testing.T) {
	netnstest.Require(t)
	ns := netnstest.New(t, "pwcap")
	ns.Bridge(t, "br0")
	h, err := netns.GetFromName(ns.Name)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	type started struct {
		w   *Watcher
		err error
	}
	ch := make(chan started, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		// Enter the namespace first: setns needs CAP_SYS_ADMIN.
		if err := netns.Set(h); err != nil {
			ch <- started{err: err}
			return
		}
		if err := caps.Restrict(caps.Of(caps.NetRaw)); err != nil {
			ch <- started{err: err}
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		// New subscribes and sends the dump request on this thread, in
		// its namespace.
		w, err := New(ctx, Options{Logger: zaptest.NewLogger(t)})
		ch <- started{w, err}
	}()
	st := <-ch
	if st.err != nil {
		t.Fatalf("watcher with CAP_NET_RAW only: %v", st.err)
	}
	defer st.w.Close()
	if s, ok := st.w.State("br0"); !ok || s.Kind != "bridge" {
		t.Fatalf("br0 from the dump: %+v %v", s, ok)
	}
}

// WatchFunc: each change reaches fn, one call at a time (a slow fn does
// not overlap the next), no goroutine is parked for the watch while
// nothing changes, and onEnd runs once, after fn's last call, when the
// context ends.
func TestWatchFunc(t *testing.T) {
	ns, w := host(t, Options{})
	readyTap(t, ns, w, "vnet0")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		mu               sync.Mutex
		got              []Change
		inFn, overlapped bool
	)
	calls := make(chan struct{}, 8)
	ended := make(chan struct{})
	var endCount atomic.Int32
	idle := runtime.NumGoroutine()
	w.WatchFunc(ctx, "vnet0", "br0", time.Minute, func(c Change) {
		mu.Lock()
		if inFn {
			overlapped = true
		}
		inFn = true
		got = append(got, c)
		mu.Unlock()
		time.Sleep(300 * time.Millisecond) // the next change settles meanwhile
		mu.Lock()
		inFn = false
		mu.Unlock()
		calls <- struct{}{}
	}, func() {
		mu.Lock()
		defer mu.Unlock()
		if inFn {
			overlapped = true
		}
		endCount.Add(1)
		close(ended)
	})
	time.Sleep(100 * time.Millisecond)
	if n := runtime.NumGoroutine(); n > idle {
		t.Errorf("%d goroutines while the watch waits, %d before it", n, idle)
	}

	ns.Exec(t, "ip", "link", "set", "dev", "vnet0", "nomaster")
	ns.Attach(t, "vnet0", "br0")
	time.Sleep(150 * time.Millisecond) // fn is handling the re-attach
	ns.Exec(t, "ip", "link", "set", "dev", "vnet0", "down")
	ns.Exec(t, "ip", "link", "set", "dev", "vnet0", "up")
	for i := range 2 {
		select {
		case <-calls:
		case <-time.After(5 * time.Second):
			t.Fatalf("fn called %d times, want 2", i)
		}
	}
	cancel()
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("onEnd never ran")
	}
	time.Sleep(50 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 || got[0].Cause&CauseReattached == 0 || got[1].Cause != CauseRestarted {
		t.Errorf("changes %+v, want a re-attach then a restart", got)
	}
	if overlapped {
		t.Error("fn (or onEnd) ran while fn was running")
	}
	if n := endCount.Load(); n != 1 {
		t.Errorf("onEnd ran %d times", n)
	}
}

// A link created while the kernel dumps the links (the reader holds after
// the first part of its first dump) makes the kernel flag the rest of the
// dump as interrupted: the watcher does not prune by it (an interrupted
// dump may have skipped a live link) but dumps again, and knows every link.
func TestInterruptedDumpIsDumpedAgain(t *testing.T) {
	netnstest.Require(t)
	ns := netnstest.New(t, "pw")
	ns.Bridge(t, "br0")
	ifbs(t, ns, 300) // a dump of several parts
	var receives atomic.Int32
	entered, hold := make(chan struct{}), make(chan struct{})
	added := make(chan error, 1)
	go func() { // New waits for the first complete dump
		select {
		case <-entered:
		case <-time.After(5 * time.Second):
		}
		out, err := ns.Command("ip", "link", "add", "late0", "type", "ifb").CombinedOutput()
		if err != nil {
			err = fmt.Errorf("%v: %s", err, out)
		}
		added <- err
		close(hold)
	}()
	m := NewMetrics(nil)
	w := watcherIn(t, ns, Options{Metrics: m, beforeReceive: func() {
		if receives.Add(1) == 2 { // the dump's first part has been read
			close(entered)
			<-hold
		}
	}})
	if err := <-added; err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(m.resyncs.WithLabelValues("interrupted")); got < 1 {
		t.Errorf("interrupted resyncs %v, want at least 1 (the dump was not flagged, or the flag ignored)", got)
	}
	for _, name := range []string{ifbName(0), ifbName(299), "late0"} {
		if _, ok := w.State(name); !ok {
			t.Errorf("%s unknown after the dump was read again", name)
		}
	}
}
