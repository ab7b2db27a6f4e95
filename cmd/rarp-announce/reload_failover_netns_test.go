package main

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rarp-announce/rarp-announce/internal/libvirtfake"
	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/pkg/libvirtconn"
)

// The uplink triggers and failover.hold_down change on SIGHUP: started with
// every uplink trigger off, the daemon re-announces nothing when br0's
// uplink flaps (and reads no domain for it); reloaded with them on and a
// 3 s hold-down, a flap re-announces the running domain, and a second flap
// right after is held until the new hold-down ends (the old one, 100 ms,
// would have let it through at once).
func TestRunReloadsFailover(t *testing.T) {
	rig := rigWithTap(t)
	fake := libvirtfake.Start(t)
	const name, uuid, mac = "vm1", "72756e00-0000-4000-8000-0000000000f1", "52:54:00:72:00:f1"
	if err := fake.AddDomain(libvirtfake.Domain{Name: name, UUID: uuid, State: libvirtconn.StateRunning, Reason: 1,
		XML: libvirtfake.LiveXML(name, uuid, 1, libvirtfake.NIC{MAC: mac, Target: "vnet0"})}); err != nil {
		t.Fatal(err)
	}
	base := strings.Replace(testConfig(3), "level: info", "level: debug", 1)
	cfg := configFile(t, base+"triggers:\n  bond_failover: false\n  carrier_up: false\n  port_added: false\nfailover:\n  hold_down: 100ms\n")
	d := startDaemon(t, rig.Host, "--config", cfg, "--libvirt-socket", fake.Path(), "--metrics-address", "127.0.0.1:0")
	d.waitStatus("/readyz", 200, 10*time.Second)

	const reannounces = `rarp_announce_uplink_reannounces_total{reason="carrier_up",result="ok"}`
	flap := func() {
		rig.Switch.Exec(t, "ip", "link", "set", "dev", netnstest.RigSwitchToHost, "down")
		time.Sleep(30 * time.Millisecond)
		rig.Switch.Exec(t, "ip", "link", "set", "dev", netnstest.RigSwitchToHost, "up")
	}
	flap()
	time.Sleep(1500 * time.Millisecond) // the kernel's link watcher reports a carrier up to 1 s late
	if n := d.metric(reannounces); n > 0 {
		t.Fatalf("%s = %v with every uplink trigger off", reannounces, n)
	}
	if n := len(d.logs("registry of running domains refreshed")); n != 0 {
		t.Errorf("the registry was filled %d times with every uplink trigger off", n)
	}

	writeConfig(t, cfg, base+"failover:\n  hold_down: 3s\n")
	d.Signal(syscall.SIGHUP)
	d.waitLog("configuration reloaded", 5*time.Second)
	d.waitLog("registry of running domains refreshed", 5*time.Second)

	flap()
	d.waitMetric(reannounces, 1, 5*time.Second)
	first := time.Now()
	rig.Switch.WaitFDB(t, netnstest.RigSwitchBridge, mac, netnstest.RigSwitchToHost, 3*time.Second)
	time.Sleep(300*time.Millisecond - time.Since(first))
	flap()
	time.Sleep(time.Until(first.Add(2 * time.Second)))
	if n := d.metric(reannounces); n != 1 {
		t.Fatalf("%s = %v 2 s after the first re-announce; the reloaded 3 s hold-down should hold the second", reannounces, n)
	}
	d.waitMetric(reannounces, 2, 4*time.Second)
	if gap := time.Since(first); gap < 2900*time.Millisecond {
		t.Errorf("second re-announce %v after the first, want the 3 s hold-down", gap)
	}
	if got := d.metric(`rarp_announce_uplink_reannounce_nics_total{reason="carrier_up"}`); got != 2 {
		t.Errorf("NICs re-announced = %v, want 1 per re-announce", got)
	}
}
