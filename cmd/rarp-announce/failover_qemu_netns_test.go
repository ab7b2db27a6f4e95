package main

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rarp-announce/rarp-announce/internal/libvirtfake"
	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/pkg/libvirtconn"
)

// A bridge NIC announced through QEMU (strategies: bridge: qemu) sits
// behind its bridge's uplink like any other: when the uplink's carrier
// comes back, the agent asks QEMU again (announce-self on that NIC's
// alias) for the running domain, and for nothing else; a domain that is
// not running gets no command.
func TestRunQEMUNICReannouncedOnUplinkEvent(t *testing.T) {
	rig := rigWithTap(t, "vnet0", "vnet1")
	fake := libvirtfake.Start(t)
	var mu sync.Mutex
	var cmds []string // "domain: command"
	fake.QMP = func(d libvirtfake.Domain, cmd string) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		cmds = append(cmds, d.Name+": "+cmd)
		return `{"return":{},"id":"libvirt-1"}`, nil
	}
	asked := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), cmds...)
	}
	const uuid1, uuid2 = "72756e00-0000-4000-8000-0000000000c1", "72756e00-0000-4000-8000-0000000000c2"
	if err := fake.AddDomain(libvirtfake.Domain{Name: "vm1", UUID: uuid1, State: libvirtconn.StateRunning, Reason: 1,
		XML: libvirtfake.LiveXML("vm1", uuid1, 1,
			libvirtfake.NIC{MAC: "52:54:00:72:00:c0", Target: "vnet9", Bridge: "nosuchbr"},
			libvirtfake.NIC{MAC: "52:54:00:72:00:c1", Target: "vnet0"})}); err != nil {
		t.Fatal(err)
	}
	if err := fake.AddDomain(libvirtfake.Domain{Name: "vm2", UUID: uuid2, State: 5,
		XML: libvirtfake.LiveXML("vm2", uuid2, 2, libvirtfake.NIC{MAC: "52:54:00:72:00:c2", Target: "vnet1"})}); err != nil {
		t.Fatal(err)
	}
	cfg := configFile(t, strings.Replace(testConfig(3), "level: info", "level: debug", 1)+"strategies:\n  bridge: qemu\nfailover:\n  hold_down: 100ms\n")
	d := startDaemon(t, rig.Host, "--config", cfg, "--libvirt-socket", fake.Path(), "--metrics-address", "127.0.0.1:0")
	d.waitStatus("/readyz", 200, 10*time.Second)
	d.waitLog("registry of running domains refreshed", 5*time.Second)
	if got := asked(); len(got) != 0 {
		t.Fatalf("QEMU asked %q before any event", got)
	}

	rig.Switch.Exec(t, "ip", "link", "set", "dev", netnstest.RigSwitchToHost, "down")
	time.Sleep(30 * time.Millisecond)
	rig.Switch.Exec(t, "ip", "link", "set", "dev", netnstest.RigSwitchToHost, "up")
	const reannounces = `rarp_announce_uplink_reannounces_total{reason="carrier_up",result="ok"}`
	d.waitMetric(reannounces, 1, 5*time.Second)
	d.waitMetric(`rarp_announce_uplink_reannounce_nics_total{reason="carrier_up"}`, 1, 2*time.Second)
	time.Sleep(300 * time.Millisecond)
	got := asked()
	if len(got) != 1 || !strings.HasPrefix(got[0], "vm1: ") || !strings.Contains(got[0], `"announce-self"`) ||
		!strings.Contains(got[0], `"net1"`) || strings.Contains(got[0], `"net0"`) {
		t.Fatalf("QEMU was asked %q after br0's uplink came back; want one announce-self for vm1's net1 (on br0) only", got)
	}
	// A link that came back gets a second burst a second later (the far
	// end may drop the first): QEMU is asked again. It was not: the
	// second burst waited on a context that ended with the call.
	time.Sleep(1500 * time.Millisecond)
	if got := asked(); len(got) != 2 || got[1] != got[0] {
		t.Fatalf("QEMU was asked %q in the 1.8 s after the event; want the same announce-self twice (two bursts)", got)
	}
}

// announce --domain through QEMU with two bursts: the command waits for
// the second burst's announce-self before it exits. It exited after the
// first, and the second was never asked for.
func TestAnnounceQEMUSendsEveryBurst(t *testing.T) {
	rig := rigWithTap(t)
	fake := libvirtfake.Start(t)
	var mu sync.Mutex
	n := 0
	fake.QMP = func(d libvirtfake.Domain, cmd string) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		if strings.Contains(cmd, `"announce-self"`) {
			n++
		}
		return `{"return":{},"id":"libvirt-1"}`, nil
	}
	const uuid = "72756e00-0000-4000-8000-0000000000d1"
	if err := fake.AddDomain(libvirtfake.Domain{Name: "vm1", UUID: uuid, State: libvirtconn.StateRunning, Reason: 1,
		XML: libvirtfake.LiveXML("vm1", uuid, 1, libvirtfake.NIC{MAC: "52:54:00:72:00:d1", Target: "vnet0"})}); err != nil {
		t.Fatal(err)
	}
	cfg := configFile(t, strings.Replace(testConfig(3), "  max: 50ms\n", "  max: 50ms\n  bursts: 2\n  burst_interval: 300ms\n", 1))
	start := time.Now()
	out, err := rig.Host.Command(binary, "announce", "--config", cfg, "--libvirt-socket", fake.Path(), "--domain", "vm1", "--strategy", "qemu").CombinedOutput()
	if err != nil {
		t.Fatalf("announce: %v\n%s", err, out)
	}
	mu.Lock()
	defer mu.Unlock()
	if n != 2 {
		t.Fatalf("QEMU was asked for announce-self %d times, want 2 (one per burst); the command took %v:\n%s", n, time.Since(start).Round(time.Millisecond), out)
	}
}
