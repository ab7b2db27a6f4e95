package libvirtwatch

import (
	"context"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/rarp-announce/rarp-announce/internal/libvirtdtest"
	"github.com/rarp-announce/rarp-announce/internal/libvirtfake"
	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/pkg/domxml"
	"github.com/rarp-announce/rarp-announce/pkg/libvirtconn"
)

// Tests against a real libvirtd (Debian's), through its test driver
// (test:///default served by the daemon): real RPC, real lifecycle events,
// real daemon deaths.

const testDomainXML = `<domain type='test'>
  <name>guest1</name>
  <uuid>6c61622d-766d-4000-8000-00000000f001</uuid>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64'>hvm</type></os>
  <devices>
    <interface type='bridge'><mac address='52:54:00:f0:00:01'/><source bridge='br0'/><model type='virtio'/></interface>
    <interface type='network'><mac address='52:54:00:f0:00:02'/><source network='default'/></interface>
  </devices>
</domain>
`

func realConfig(t testing.TB, socket string) Config {
	return Config{
		Conn:             libvirtconn.Config{Socket: socket, URI: "test:///default"},
		AnnounceOnResync: true,
		Logger:           zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)),
		Metrics:          NewMetrics(nil),
	}
}

func TestLibvirtdEvents(t *testing.T) {
	d := libvirtdtest.Start(t, libvirtdtest.Options{})
	r := startWatcher(t, realConfig(t, d.Socket), 64)
	r.waitReady(t, 10*time.Second)
	r.expectNone(t, 50*time.Millisecond) // the driver's "test" domain runs, booted: nothing lands

	def := libvirtdtest.XMLFile(t, "guest1.xml", testDomainXML)
	d.Virsh(t, d.URI("test"), "define "+def, "start guest1", "suspend guest1", "resume guest1")
	r.expect(t, Other, "guest1", "defined/added")
	started := r.expect(t, Other, "guest1", "started/booted")
	r.expect(t, Cancel, "guest1", "suspended/paused")
	r.expect(t, Other, "guest1", "resumed/unpaused")
	if started.Domain.UUID != "6c61622d-766d-4000-8000-00000000f001" || started.DomainID < 1 {
		t.Errorf("started event %+v", started)
	}

	ctx := context.Background()
	ref, err := r.w.LookupDomain(ctx, "guest1")
	if err != nil || ref != started.Domain {
		t.Fatalf("LookupDomain = %+v, %v", ref, err)
	}
	if ok, err := r.w.DomainRunning(ctx, ref); err != nil || !ok {
		t.Errorf("DomainRunning = %v, %v", ok, err)
	}
	xml, err := r.w.DomainXML(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	dom, err := domxml.Parse(xml)
	if err != nil || dom.UUID != ref.UUID || len(dom.Interfaces) != 2 || dom.Interfaces[1].MAC.String() != "52:54:00:f0:00:02" {
		t.Fatalf("Parse(live XML) = %+v, %v\n%s", dom, err, xml)
	}
	// the test driver has no QEMU: the call reaches it and is refused
	if _, err := r.w.QEMUMonitorCommand(ctx, ref, `{"execute":"query-status"}`); err == nil || !strings.Contains(err.Error(), "not supported") {
		t.Errorf("QEMUMonitorCommand on the test driver: %v", err)
	}

	d.Virsh(t, d.URI("test"), "destroy guest1", "undefine guest1")
	r.expect(t, Cancel, "guest1", "stopped/destroyed")
	r.expect(t, Other, "guest1", "undefined/removed")
	if ok, err := r.w.DomainRunning(ctx, ref); err != nil || ok {
		t.Errorf("DomainRunning(undefined) = %v, %v", ok, err)
	}
	if got := testutil.ToFloat64(r.m.events.WithLabelValues("started", "booted")); got != 1 {
		t.Errorf("events{started,booted} = %v", got)
	}
}

// The read-only socket is enough for events, state and XML, not for QMP.
func TestLibvirtdReadOnlySocket(t *testing.T) {
	d := libvirtdtest.Start(t, libvirtdtest.Options{})
	r := startWatcher(t, realConfig(t, d.ROSocket), 64)
	r.waitReady(t, 10*time.Second)
	d.Virsh(t, d.URI("test"), "suspend test", "resume test")
	r.expect(t, Cancel, "test", "suspended/paused")
	ev := r.expect(t, Other, "test", "resumed/unpaused")
	ctx := context.Background()
	if _, err := r.w.DomainXML(ctx, ev.Domain); err != nil {
		t.Errorf("DomainXML on the read-only socket: %v", err)
	}
	if ok, err := r.w.DomainRunning(ctx, ev.Domain); err != nil || !ok {
		t.Errorf("DomainRunning on the read-only socket: %v, %v", ok, err)
	}
	_, err := r.w.QEMUMonitorCommand(ctx, ev.Domain, `{"execute":"query-status"}`)
	if err == nil || !strings.Contains(err.Error(), "read only") {
		t.Errorf("QEMUMonitorCommand on the read-only socket: %v, want a read-only refusal", err)
	}
}

// libvirtd killed with SIGKILL and restarted 20 times: the watcher
// reconnects every time, events flow again, and nothing leaks. Timings are
// logged, not asserted.
func TestLibvirtdReconnect(t *testing.T) {
	libvirtfake.CheckLeaks(t)
	d := libvirtdtest.Start(t, libvirtdtest.Options{})
	fdsBefore := openFDs(t)
	cfg := realConfig(t, d.Socket)
	cfg.Logger = zap.NewNop()
	r := startWatcher(t, cfg, 64)
	r.waitReady(t, 10*time.Second)

	const cycles = 20
	var lossDetect, reconnect []time.Duration
	for i := 0; i < cycles; i++ {
		d.Virsh(t, d.URI("test"), "suspend test", "resume test")
		r.expect(t, Cancel, "test", "suspended/paused")
		r.expect(t, Other, "test", "resumed/unpaused")

		killed := time.Now()
		d.Kill(t)
		netnstest.WaitFor(t, "the watcher to notice libvirtd's death", func() bool { return !r.w.Ready() })
		lossDetect = append(lossDetect, time.Since(killed))
		d.Start(t)
		up := time.Now()
		deadline := up.Add(15 * time.Second)
		for testutil.ToFloat64(r.m.reconnects) != float64(i+1) || !r.w.Ready() {
			if time.Now().After(deadline) {
				t.Fatalf("cycle %d: not reconnected 15 s after libvirtd restarted", i)
			}
			time.Sleep(time.Millisecond)
		}
		reconnect = append(reconnect, time.Since(up))
	}
	d.Virsh(t, d.URI("test"), "suspend test")
	r.expect(t, Cancel, "test", "suspended/paused")
	t.Logf("%d kill -9/restart cycles: loss noticed after %s; reconnected after libvirtd answered: %s",
		cycles, summary(lossDetect), summary(reconnect))

	r.stop()
	if after := openFDs(t); after > fdsBefore {
		t.Errorf("open fds: %d before, %d after %d reconnects", fdsBefore, after, cycles)
	}
	if got := testutil.ToFloat64(r.m.connected); got != 0 {
		t.Errorf("connected = %v after Run returned", got)
	}
}

// summary formats min/median/max.
func summary(ds []time.Duration) string {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s) == 0 {
		return "-"
	}
	r := func(d time.Duration) time.Duration { return d.Round(100 * time.Microsecond) }
	return "min " + r(s[0]).String() + " median " + r(s[len(s)/2]).String() + " max " + r(s[len(s)-1]).String()
}

var qemuDomainXML = libvirtdtest.QEMUDomainXML("qmp1", "6c61622d-766d-4000-8000-00000000f101", "52:54:00:f1:00:01")

// A real QEMU domain: its lifecycle events, its live XML, and QMP
// announce-self through QEMUMonitorCommand, whose RARPs are captured on the
// bridge; a QMP error comes back as QEMU's reply.
func TestLibvirtdQEMU(t *testing.T) {
	netnstest.Require(t, "tcpdump")
	ns, d := libvirtdtest.StartQEMU(t, "lvwqemu")
	cfg := realConfig(t, d.Socket)
	cfg.Conn.URI = "qemu:///system"
	r := startWatcher(t, cfg, 64)
	r.waitReady(t, 10*time.Second)

	def := libvirtdtest.XMLFile(t, "qmp1.xml", qemuDomainXML)
	d.Virsh(t, d.URI("qemu"), "create "+def)
	// libvirt 9.0 sends RESUMED/UNPAUSED before STARTED/BOOTED for a boot
	var seq []string
	var started Event
	for started.Name() != "started/booted" {
		started = r.next(t, 10*time.Second)
		seq = append(seq, started.Name())
		if started.Kind != Other {
			t.Errorf("booting: %s", started)
		}
	}
	t.Logf("events of a boot: %s", strings.Join(seq, ", "))
	ctx := context.Background()
	xml, err := r.w.DomainXML(ctx, started.Domain)
	if err != nil {
		t.Fatal(err)
	}
	dom, err := domxml.Parse(xml)
	if err != nil || len(dom.Interfaces) != 1 || dom.Interfaces[0].Alias != "net0" || !strings.HasPrefix(dom.Interfaces[0].Target, "vnet") {
		t.Fatalf("live XML: %+v, %v", dom, err)
	}

	capture := netnstest.StartCapture(t, ns, "br0", "rarp")
	// QEMU's own schedule (0, 50, 200, 450, 800 ms) on this NIC.
	cmd := `{"execute":"announce-self","arguments":{"initial":50,"max":550,"rounds":5,"step":100,"interfaces":["` + dom.Interfaces[0].Alias + `"]}}`
	reply, err := r.w.QEMUMonitorCommand(ctx, started.Domain, cmd)
	if err != nil || !strings.Contains(reply, `"return"`) {
		t.Fatalf("announce-self: %v (reply %q)", err, reply)
	}
	time.Sleep(1200 * time.Millisecond) // QEMU's schedule ends at +800 ms
	mac := dom.Interfaces[0].MAC
	if n := netnstest.RARPFrom(netnstest.ReadPcap(t, capture.Stop()), mac[:]); n != 5 {
		t.Errorf("announce-self: %d RARP frames from %s on br0, want 5", n, mac)
	}

	// A QMP error is QEMU's reply to a successful call (pkg/qmp reads it).
	reply, err = r.w.QEMUMonitorCommand(ctx, started.Domain, `{"execute":"no-such-command"}`)
	if err != nil || !strings.Contains(reply, "CommandNotFound") {
		t.Errorf("unknown QMP command: %q, %v; want a reply of class CommandNotFound", reply, err)
	}

	d.Virsh(t, d.URI("qemu"), "destroy qmp1")
	for {
		ev := r.next(t, 10*time.Second)
		if ev.Domain.Name == "qmp1" && ev.Name() == "stopped/destroyed" {
			if ev.Kind != Cancel {
				t.Errorf("%s: want cancel", ev)
			}
			break
		}
	}
}
