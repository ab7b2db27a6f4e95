package ovs

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/internal/ovstest"
)

// TestOVNReadiness runs against a real ovsdb-server and ovs-vswitchd, with
// ovs-vsctl playing ovn-controller's part on the Interface's external_ids
// (the OVN lab, test/lab/lab-e2e-ovn.sh, has the real ovn-controller).
func TestOVNReadiness(t *testing.T) {
	o := ovstest.StartIn(t, "hv", "br-int")
	hv, vm := o.NS, netnstest.New(t, "vm")
	netnstest.Veth(t, hv, "vnet0", vm, "eth0")
	netnstest.Veth(t, hv, "plain0", vm, "eth1")
	o.Vsctl(t, "add-port", "br-int", "vnet0", "--", "set", "Interface", "vnet0", "external_ids:iface-id=lsp-1",
		"external_ids:attached-mac=52:54:00:aa:bb:cc")
	o.Vsctl(t, "add-port", "br-int", "plain0")
	m := NewOVNMetrics(nil)
	r := &OVNReadiness{Socket: o.DB, Poll: 2 * time.Millisecond, WatchPoll: 10 * time.Millisecond, Metrics: m}
	t.Cleanup(func() { r.Close() })
	ctx := context.Background()

	p, err := r.Port(ctx, "vnet0")
	if err != nil || !p.Managed() || p.Installed || p.OFPort <= 0 || p.IfaceID != "lsp-1" {
		t.Fatalf("before ovn-controller: %+v, %v", p, err)
	}
	if ok, err := r.Installed(ctx, "vnet0"); ok || err != nil {
		t.Fatalf("Installed before: %v, %v", ok, err)
	}
	// not installed: Wait times out with the sentinel and the state seen
	start := time.Now()
	if p, err := r.Wait(ctx, "vnet0", 50*time.Millisecond); !errors.Is(err, ErrOVNNotInstalled) || p.IfaceID != "lsp-1" {
		t.Fatalf("Wait before ovn-installed: %+v, %v", p, err)
	}
	if d := time.Since(start); d < 50*time.Millisecond || d > 2*time.Second {
		t.Fatalf("Wait took %v for a 50ms timeout", d)
	}
	// a port OVN does not manage is ready with its ofport
	if p, err := r.Wait(ctx, "plain0", time.Second); err != nil || p.Managed() {
		t.Fatalf("plain port: %+v, %v", p, err)
	}
	if _, err := r.Port(ctx, "nope0"); !errors.Is(err, ErrPortNotFound) {
		t.Fatalf("missing port: %v", err)
	}

	// ovn-controller installs the port while Wait waits
	set := make(chan error, 1)
	go func() {
		time.Sleep(100 * time.Millisecond)
		// not o.Vsctl: t.Fatal must not run outside the test's goroutine
		out, err := exec.Command("ovs-vsctl", "--timeout=10", "--db="+o.DB, "set", "Interface", "vnet0", "external_ids:ovn-installed=true").CombinedOutput()
		if err != nil {
			err = fmt.Errorf("%v: %s", err, out)
		}
		set <- err
	}()
	start = time.Now()
	p, err = r.Wait(ctx, "vnet0", 5*time.Second)
	if err != nil || !p.Ready() || !p.Installed {
		t.Fatalf("Wait: %+v, %v", p, err)
	}
	waited := time.Since(start)
	if err := <-set; err != nil {
		t.Fatal(err)
	}
	if waited < 90*time.Millisecond {
		t.Fatalf("Wait returned after %v, before ovn-installed was set", waited)
	}
	t.Logf("Wait returned %v after the wait started (ovn-installed set at ~100 ms)", waited)
	if ok, err := r.Installed(ctx, "vnet0"); !ok || err != nil {
		t.Fatalf("Installed after: %v, %v", ok, err)
	}
	if q, err := r.PortByIfaceID(ctx, "lsp-1"); err != nil || q != p {
		t.Fatalf("PortByIfaceID: %+v, %v; want %+v", q, err, p)
	}
	if _, err := r.PortByIfaceID(ctx, "lsp-2"); !errors.Is(err, ErrPortNotFound) {
		t.Fatalf("PortByIfaceID of an unknown logical port: %v", err)
	}

	// re-bound within the window: released (flag removed), installed again
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := r.Watch(wctx, "vnet0", 5*time.Second)
	time.Sleep(50 * time.Millisecond)
	select {
	case p := <-ch:
		t.Fatalf("Watch sent %+v without a change", p)
	default:
	}
	o.Vsctl(t, "remove", "Interface", "vnet0", "external_ids", "ovn-installed")
	time.Sleep(50 * time.Millisecond)
	o.Vsctl(t, "set", "Interface", "vnet0", "external_ids:ovn-installed=true")
	select {
	case p := <-ch:
		if !p.Ready() {
			t.Fatalf("Watch sent a port that is not ready: %+v", p)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Watch missed the re-bind")
	}
	cancel()
	for range ch { // closed when the context ends
	}
	for res, want := range map[string]float64{"installed": 1, "not_ovn": 1, "not_installed": 1, "no_ofport": 0, "not_found": 0, "error": 0} {
		if got := testutil.ToFloat64(m.results.WithLabelValues(res)); got != want {
			t.Errorf("rarp_announce_ovn_readiness_total{result=%q} = %v, want %v", res, got, want)
		}
	}
	if got := testutil.ToFloat64(m.reinstal); got != 1 {
		t.Errorf("rarp_announce_ovn_reinstalls_total = %v, want 1", got)
	}

	// OVSDB hung for a while, then back with the port as it was: no
	// re-install (an unreadable look is not a "not ready"; it was, and the
	// port was announced again for nothing)
	r.Timeout = 100 * time.Millisecond
	wctx, cancel = context.WithCancel(ctx)
	defer cancel()
	ch = r.Watch(wctx, "vnet0", 5*time.Second)
	time.Sleep(50 * time.Millisecond)
	o.Signal(t, "ovsdb-server", syscall.SIGSTOP)
	time.Sleep(400 * time.Millisecond)
	o.Signal(t, "ovsdb-server", syscall.SIGCONT)
	select {
	case p := <-ch:
		t.Fatalf("Watch sent %+v after OVSDB came back with the port unchanged", p)
	case <-time.After(500 * time.Millisecond):
	}
	cancel()
	for range ch {
	}
	if got := testutil.ToFloat64(m.reinstal); got != 1 {
		t.Errorf("rarp_announce_ovn_reinstalls_total = %v after an OVSDB outage, want still 1", got)
	}

	// OVSDB gone: a clear error, not a hang
	o.Stop(t)
	r.Timeout = 500 * time.Millisecond
	if _, err := r.Port(ctx, "vnet0"); !errors.Is(err, ErrNotRunning) && !errors.Is(err, ErrTimeout) {
		t.Fatalf("OVSDB stopped: %v", err)
	}
}
