package agent_test

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rarp-announce/rarp-announce/internal/agent"
	"github.com/rarp-announce/rarp-announce/internal/libvirtfake"
	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/pkg/announce"
	"github.com/rarp-announce/rarp-announce/pkg/ipannounce"
	"github.com/rarp-announce/rarp-announce/pkg/libvirtwatch"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// waitRegistry waits until the agent's registry of running domains knows
// known domains (its refresh logs the count).
func (h *host) waitRegistry(t testing.TB, known int) {
	t.Helper()
	netnstest.Eventually(t, 10*time.Second, func() error {
		last := "no refresh logged"
		for _, e := range h.logs.FilterMessage("registry of running domains refreshed").All() {
			m := e.ContextMap()
			if n, ok := m["known"].(int64); ok && int(n) == known {
				return nil
			}
			last = fmt.Sprintf("the last refresh knew %v", m["known"])
		}
		return fmt.Errorf("the registry never knew %d running domains (%s)", known, last)
	})
}

// flap takes the switch side of a veth down and up: the host side loses
// its carrier and gets it back. It returns when the switch side is up.
func (h *host) flap(t testing.TB, switchPort string) time.Time {
	t.Helper()
	h.rig.Switch.Exec(t, "ip", "link", "set", "dev", switchPort, "down")
	time.Sleep(50 * time.Millisecond)
	h.rig.Switch.Exec(t, "ip", "link", "set", "dev", switchPort, "up")
	return time.Now()
}

// uplinkSettings announce with the default (QEMU-like) schedule, 5 frames
// over 0.8 s: the switch's side of a link that just came back may take a
// few tens of milliseconds to forward (its own carrier, seen here), which
// the fast test schedule (30 ms) would miss, and so would a real switch.
func uplinkSettings() agent.Settings {
	s := defaultSettings()
	s.Schedule = announce.DefaultSchedule()
	return s
}

// uplinkFrames: after a carrier came back, the burst is sent twice, 1 s
// apart (the far end may not forward yet).
const uplinkFrames = 10

// reannounced waits for n frames of mac sent because of an uplink event and
// returns them.
func (h *host) reannounced(t testing.TB, mac rarp.MAC, n int, timeout time.Duration) []announce.Sent {
	t.Helper()
	var out []announce.Sent
	netnstest.Eventually(t, timeout, func() error {
		out = out[:0]
		for _, s := range h.frames.sent(mac, "") {
			if s.Reason == announce.TriggerUplinkFailover.String() {
				out = append(out, s)
			}
		}
		if len(out) < n {
			return fmt.Errorf("%s: %d re-announce frames, want %d", mac, len(out), n)
		}
		return nil
	})
	return out
}

// The uplink of br0 (a veth to the switch) loses its carrier and gets it
// back: the switch forgot the MACs behind it. Every NIC of the domains
// running here on br0 is announced again, out of br0, and the switch
// learns each MAC on this host's port; a domain that stopped here is not
// announced (its MAC stays where the switch had it), and neither is a
// domain that never ran here.
func TestUplinkCarrierBackReannouncesRunningDomains(t *testing.T) {
	var a, b, stopped, off domain
	h := newHost(t, hostOptions{settings: uplinkSettings(), holdDown: 200 * time.Millisecond, before: func(h *host) {
		for _, tap := range []string{"vnet1", "vnet2", "vnet3", "vnet4"} {
			h.tap(t, tap, wired)
		}
		a = h.newDomain(t, stateRunning, reasonBooted, "vnet1")
		b = h.newDomain(t, stateRunning, reasonBooted, "vnet2")
		stopped = h.newDomain(t, stateRunning, reasonBooted, "vnet3")
		off = h.newDomain(t, stateOff, 0, "vnet4")
	}})
	h.waitRegistry(t, 3)
	for _, d := range []domain{a, b, stopped, off} {
		h.rig.LearnOnOld(t, d.macs[0].String())
	}
	h.emit(t, stopped, stoppedDestroyed)

	up := h.flap(t, netnstest.RigSwitchToHost)
	for _, d := range []domain{a, b} {
		fs := h.reannounced(t, d.macs[0], uplinkFrames, 5*time.Second)
		// Out of the uplink that came back (plan.Target.Uplinks), not
		// flooded from the bridge device.
		if got := interfacesOf(fs); len(got) != 1 || got[0] != netnstest.RigHostUplink {
			t.Errorf("%s re-announced on %v, want [%s]", d.name, got, netnstest.RigHostUplink)
		}
		t.Logf("%s: first re-announce frame %v after the carrier came back (the kernel's link watcher may delay it)", d.name, fs[0].Time.Sub(up))
		if got := h.rig.Switch.WaitFDB(t, netnstest.RigSwitchBridge, d.macs[0].String(), netnstest.RigSwitchToHost, 2*time.Second); got != netnstest.RigSwitchToHost {
			t.Errorf("switch has %s's MAC on %q, want %s", d.name, got, netnstest.RigSwitchToHost)
			for _, f := range fs {
				t.Logf("frame %v %s %v", f.Time.Sub(up), f.Interface, f.Err)
			}
			t.Log(h.rig.Switch.Exec(t, "bridge", "-s", "fdb", "show", "br", "sw0"))
		}
	}
	h.waitMetric(t, 2, 2*time.Second, "rarp_announce_uplink_reannounce_nics_total", "reason=carrier_up")
	for _, d := range []domain{stopped, off} {
		if n := h.frames.count(d.macs[0]); n != 0 {
			t.Errorf("%s does not run here but got %d frames", d.name, n)
		}
		if got := h.switchFDB(t, d.macs[0]); got != netnstest.RigSwitchToOld {
			t.Errorf("switch moved %s's MAC to %q; it must stay on %s", d.name, got, netnstest.RigSwitchToOld)
		}
	}
	if len(h.logged("uplink event: re-announced the running domains behind it", "")) == 0 {
		t.Error("no log line for the uplink event")
	}
}

// A macvtap's lower device flaps: the direct NIC on it is announced again
// on its macvtap and the switch learns it on the lower device's port; the
// bridge NIC of another domain, not behind that device, is not.
func TestMacvtapLowerFlapReannouncesItsNIC(t *testing.T) {
	directMAC := rarp.MAC{0x52, 0x54, 0x00, 0xdd, 0x14, 0x01}
	var bridged domain
	h := newHost(t, hostOptions{settings: uplinkSettings(), holdDown: 200 * time.Millisecond, before: func(h *host) {
		h.tap(t, "vnet1", wired)
		h.macvtap(t)
		bridged = h.newDomain(t, stateRunning, reasonBooted, "vnet1")
		h.nicDomain(t, stateRunning, reasonBooted, directNIC(directMAC))
	}})
	h.waitRegistry(t, 2)
	h.rig.LearnOnOld(t, directMAC.String())

	h.flap(t, switchToMV)
	fs := h.reannounced(t, directMAC, uplinkFrames, 5*time.Second)
	if got := interfacesOf(fs); len(got) != 1 || got[0] != macvtapDev {
		t.Errorf("direct NIC re-announced on %v, want [%s]", got, macvtapDev)
	}
	if got := h.rig.Switch.WaitFDB(t, netnstest.RigSwitchBridge, directMAC.String(), switchToMV, 2*time.Second); got != switchToMV {
		t.Errorf("switch has the direct NIC's MAC on %q, want %s", got, switchToMV)
	}
	h.quiet(t, bridged.macs[0], 300*time.Millisecond, "the bridge NIC is not behind the macvtap's lower device")
	h.waitMetric(t, 1, 2*time.Second, "rarp_announce_uplink_reannounce_nics_total", "reason=carrier_up")
}

// A domain restored here (STARTED/RESTORED) is announced, the frames
// saying why; a snapshot revert is not when its trigger is off.
func TestRestoreAnnouncedSnapshotTriggerOff(t *testing.T) {
	s := defaultSettings()
	s.Disabled = map[string]bool{agent.TriggerSnapshot: true}
	h := newHost(t, hostOptions{settings: s})
	h.tap(t, "vnet1", wired)
	h.tap(t, "vnet2", wired)
	restored := h.newDomain(t, stateOff, 0, "vnet1")
	reverted := h.newDomain(t, stateOff, 0, "vnet2")
	h.learnOnOld(t, restored.macs[0])

	h.emit(t, restored, ev{libvirtwatch.EventStarted, libvirtwatch.DetailStartedRestored})
	fs := h.frames.wait(t, restored.macs[0], framesPerBurst, 5*time.Second)
	if fs[0].Reason != announce.TriggerRestore.String() {
		t.Errorf("restore announced with reason %q, want %q", fs[0].Reason, announce.TriggerRestore)
	}
	if got := h.rig.Switch.WaitFDB(t, netnstest.RigSwitchBridge, restored.macs[0].String(), netnstest.RigSwitchToHost, 2*time.Second); got != netnstest.RigSwitchToHost {
		t.Errorf("switch has the restored domain's MAC on %q, want %s", got, netnstest.RigSwitchToHost)
	}

	h.emit(t, reverted, ev{libvirtwatch.EventStarted, libvirtwatch.DetailStartedFromSnapshot})
	h.waitLogged(t, "landed; trigger disabled, not announced", reverted.name, 2*time.Second)
	h.quiet(t, reverted.macs[0], 200*time.Millisecond, "the snapshot trigger is off")
}

// A domain that lands while the migration trigger is off is not announced,
// but it runs here: it must still be in the failover registry, so that a
// bond failover or carrier return re-announces it. Before, the landing's
// event only marked it stale and no later event made the registry read it.
func TestLandedWithTheTriggerOffIsStillRegistered(t *testing.T) {
	s := uplinkSettings()
	s.Disabled = map[string]bool{agent.TriggerMigration: true}
	h := newHost(t, hostOptions{settings: s, holdDown: 200 * time.Millisecond})
	h.tap(t, "vnet1", wired)
	// The start-up refreshes are over (a refresh before libvirt answered
	// retries a second later).
	time.Sleep(1500 * time.Millisecond)
	d := h.newDomain(t, stateOff, 0, "vnet1")
	// The refresh STARTED/MIGRATED kicks lists it still paused (the
	// incoming migration runs), so leaves it out.
	h.emit(t, d, startedMigrated)
	time.Sleep(300 * time.Millisecond)
	h.emit(t, d, resumedMigrated)
	h.waitLogged(t, "landed; trigger disabled, not announced", d.name, 2*time.Second)
	h.waitRegistry(t, 1)
	h.flap(t, netnstest.RigSwitchToHost)
	h.reannounced(t, d.macs[0], uplinkFrames, 5*time.Second)
}

// An uplink comes back while libvirtd restarts (often the same
// maintenance): the event's listing of the running domains fails. It asks
// libvirt again and re-announces once libvirtd answers. The event used to
// be dropped ("not re-announced"), the VMs left to the switch's ageing.
func TestUplinkEventWaitsForLibvirtd(t *testing.T) {
	h, d := hostWithDomain(t, 200*time.Millisecond, nil, "vnet1")
	path := h.fake.Path()
	h.fake.Close()
	netnstest.WaitFor(t, "watcher not ready", func() bool { return !h.watcher.Ready() })
	h.flap(t, netnstest.RigSwitchToHost)
	time.Sleep(2 * time.Second)           // the event came (the kernel's link watcher: up to 1 s) and its listing failed
	h.fake = libvirtfake.StartAt(t, path) // libvirtd is back, the domain still runs
	h.addDomain(t, d, stateRunning, reasonBooted, libvirtfake.LiveXML(d.name, d.uuid, 1, libvirtfake.NIC{MAC: d.macs[0].String(), Target: "vnet1"}))
	h.reannounced(t, d.macs[0], uplinkFrames, 10*time.Second)
}

// hostWithDomain starts a host with the uplink settings and holdDown
// where, before the agent starts, setup (if not nil) runs, the taps are
// made (wired), and one domain runs, booted, with a NIC on the first tap.
// It returns once that domain is in the failover registry.
func hostWithDomain(t *testing.T, holdDown time.Duration, setup func(*host), taps ...string) (*host, domain) {
	t.Helper()
	var d domain
	h := newHost(t, hostOptions{settings: uplinkSettings(), holdDown: holdDown, before: func(h *host) {
		if setup != nil {
			setup(h)
		}
		for _, tap := range taps {
			h.tap(t, tap, wired)
		}
		d = h.newDomain(t, stateRunning, reasonBooted, taps[0])
	}})
	h.waitRegistry(t, 1)
	return h, d
}

// With the failover registry on (as the daemon runs), a landing still
// reads the domain's XML once: the registry takes the XML the landing read
// instead of reading it again on the landing's event.
func TestLandingFeedsTheRegistryWithoutASecondXMLRead(t *testing.T) {
	h, d := hostWithDomain(t, 200*time.Millisecond, nil, "vnet1")
	time.Sleep(100 * time.Millisecond) // the start-up refresh is over
	calls := xmlCalls(h)
	// A migration of it was cancelled after the source paused it: it
	// lands here again, without a prefetch (no SUSPENDED/MIGRATED seen).
	h.emit(t, d, resumedMigrated)
	h.frames.wait(t, d.macs[0], framesPerBurst, 5*time.Second)
	time.Sleep(500 * time.Millisecond) // a refresh the event started would have read it by now
	if got := xmlCalls(h) - calls; got != 1 {
		t.Errorf("%d DomainGetXMLDesc calls for the landing, want exactly 1", got)
	}
}

// A NIC hot-plugged into a running domain (libvirt's DEVICE_ADDED) is in
// the registry at the next uplink event, without waiting for a restart;
// one unplugged (DEVICE_REMOVED) is no longer announced. Each device event
// costs one live-XML read of that domain.
func TestHotplugRefreshesTheRegistry(t *testing.T) {
	h, d := hostWithDomain(t, 200*time.Millisecond, nil, "vnet1", "vnet2")
	time.Sleep(100 * time.Millisecond) // the start-up refresh is over
	plugged := rarp.MAC{0x52, 0x54, 0x00, 0xdd, 0x14, 0x02}
	one := libvirtfake.NIC{MAC: d.macs[0].String(), Target: "vnet1"}
	two := libvirtfake.NIC{MAC: plugged.String(), Target: "vnet2"}
	for _, m := range []rarp.MAC{d.macs[0], plugged} {
		h.rig.LearnOnOld(t, m.String())
	}

	calls := xmlCalls(h)
	if err := h.fake.SetXML(d.name, libvirtfake.LiveXML(d.name, d.uuid, 1, one, two)); err != nil {
		t.Fatal(err)
	}
	if err := h.fake.EmitDevice(d.name, "net1", true); err != nil {
		t.Fatal(err)
	}
	waitXMLCalls(t, h, calls+1)
	time.Sleep(100 * time.Millisecond) // parsed and stored
	h.flap(t, netnstest.RigSwitchToHost)
	h.reannounced(t, d.macs[0], uplinkFrames, 5*time.Second)
	h.reannounced(t, plugged, uplinkFrames, 5*time.Second)
	if got := h.rig.Switch.WaitFDB(t, netnstest.RigSwitchBridge, plugged.String(), netnstest.RigSwitchToHost, 2*time.Second); got != netnstest.RigSwitchToHost {
		t.Errorf("switch has the hot-plugged NIC's MAC on %q, want %s", got, netnstest.RigSwitchToHost)
	}

	calls = xmlCalls(h)
	if err := h.fake.SetXML(d.name, libvirtfake.LiveXML(d.name, d.uuid, 1, one)); err != nil {
		t.Fatal(err)
	}
	if err := h.fake.EmitDevice(d.name, "net1", false); err != nil {
		t.Fatal(err)
	}
	waitXMLCalls(t, h, calls+1)
	time.Sleep(100 * time.Millisecond)
	before := h.frames.count(plugged)
	h.flap(t, netnstest.RigSwitchToHost)
	h.reannounced(t, d.macs[0], 2*uplinkFrames, 5*time.Second)
	time.Sleep(300 * time.Millisecond)
	if n := h.frames.count(plugged) - before; n != 0 {
		t.Errorf("the unplugged NIC got %d frames after the second flap, want none", n)
	}
	if got := xmlCalls(h) - calls; got != 1 {
		t.Errorf("%d XML reads for the unplug and the flap, want 1 (the device event's)", got)
	}
}

// waitXMLCalls waits until the fake served n DomainGetXMLDesc calls.
func waitXMLCalls(t testing.TB, h *host, n int) {
	t.Helper()
	netnstest.Eventually(t, 5*time.Second, func() error {
		if got := xmlCalls(h); got < n {
			return fmt.Errorf("%d DomainGetXMLDesc calls, want %d", got, n)
		}
		return nil
	})
}

// The uplink a running domain's bridge NIC would be re-announced on has a
// packet socket open before any event (announce.Announcer.Warm, from the
// registry): a failover's first frame does not wait for one to open.
// (On a VLAN-filtering bridge: TestRigUplinkSocketWarmOnAFilteringBridge.)
func TestUplinkSocketWarmBeforeAnyEvent(t *testing.T) { uplinkSocketWarm(t, false) }

// uplinkSocketWarm checks the warm socket on the rig's uplink, the host's
// bridge VLAN-filtering or not.
func uplinkSocketWarm(t *testing.T, filtering bool) {
	setup := func(h *host) {
		if filtering {
			h.ns.Exec(t, "ip", "link", "set", "dev", netnstest.RigHostBridge, "type", "bridge", "vlan_filtering", "1")
		}
	}
	h, d := hostWithDomain(t, 200*time.Millisecond, setup, "vnet1")
	idx := fmt.Sprint(h.ns.Interface(t, netnstest.RigHostUplink).Index)
	netnstest.EventuallyEvery(t, 5*time.Second, 20*time.Millisecond, func() error { // each check runs cat
		// /proc/net/packet: sk RefCnt Type Proto Iface R Rmem User Inode
		for _, l := range strings.Split(h.ns.Exec(t, "cat", "/proc/net/packet"), "\n")[1:] {
			if f := strings.Fields(l); len(f) > 4 && f[4] == idx {
				return nil
			}
		}
		return fmt.Errorf("no packet socket on %s (ifindex %s) since the registry knew %s", netnstest.RigHostUplink, idx, d.name)
	})
	if n := h.frames.count(d.macs[0]); n != 0 {
		t.Errorf("%d frames sent: warming must send nothing", n)
	}
}

// A domain leaves (STOPPED) while its landing, and a refresh of the
// failover registry, are between reading its XML and registering what they
// read: neither registers anything after the departure's cleanup, and the
// landing, going on cancelled, does not repair the bridge. The registry
// does not keep the departed domain (until its next refresh), no
// learner watches its port (the IP follower; found as a socket and
// goroutine left over in TestSoak), and an uplink event announces the
// domain running beside it but not the departed MAC (the failover path
// lists the running domains again at the event, so this held before too).
func TestLeftWhileReadingRegistersNothing(t *testing.T) {
	var a, d domain
	var guest *netnstest.Tap
	entered := map[string]chan struct{}{agent.XMLReadLanding: make(chan struct{}), agent.XMLReadRegistry: make(chan struct{})}
	release := make(chan struct{})
	var mu sync.Mutex
	// Set before the agent starts and reset after it stopped (cleanups
	// run last-in first-out): the landings and refreshes read the hook.
	old := agent.SetXMLReadHook(func(where string, ref libvirtwatch.DomainRef) {
		if ref.Name != d.name {
			return
		}
		mu.Lock()
		if c := entered[where]; c != nil {
			close(c)
			entered[where] = nil
		}
		mu.Unlock()
		<-release
	})
	t.Cleanup(func() { agent.SetXMLReadHook(old) })
	var releaseOnce sync.Once
	h := newHost(t, learningRegistry(func(h *host) {
		h.tap(t, "vnet1", wired)
		guest = h.tap(t, "vnet2", wired)
		a = h.newDomain(t, stateRunning, reasonBooted, "vnet1")
		d = h.newDomain(t, stateOff, 0, "vnet2")
	}))
	// On a failure before the release: registered after newHost's, so it
	// runs before the agent stops (which waits for the held reads).
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) })
	h.waitRegistry(t, 1)
	for _, x := range []domain{a, d} {
		h.rig.LearnOnOld(t, x.macs[0].String())
	}

	// d lands: its landing and the registry's refresh (the event made
	// it stale) hold after reading its XML while d stops. The two events
	// go in one batch, so d runs by the time the agent reads STARTED: a
	// refresh that listed the domains between the two (only RUNNING ones
	// are listed) would not read d at all.
	mu.Lock()
	waits := []chan struct{}{entered[agent.XMLReadLanding], entered[agent.XMLReadRegistry]}
	mu.Unlock()
	if _, err := h.fake.EmitBatch([]libvirtfake.Lifecycle{
		{Domain: d.name, Event: startedMigrated.event, Detail: startedMigrated.detail},
		{Domain: d.name, Event: resumedMigrated.event, Detail: resumedMigrated.detail},
	}); err != nil {
		t.Fatal(err)
	}
	for i, c := range waits {
		select {
		case <-c:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s never read the XML", []string{"the landing", "the registry's refresh"}[i])
		}
	}
	h.emit(t, d, stoppedMigrated)
	h.waitLogged(t, "announces cancelled", d.name, 5*time.Second)
	const refreshed = "registry of running domains refreshed"
	before := len(h.logs.FilterMessage(refreshed).All())
	releaseOnce.Do(func() { close(release) })
	h.waitMetric(t, 1, 5*time.Second, "rarp_announce_nic_announces_total", "result=cancelled", "strategy=host")
	// The held refresh listed d as running, but registers only a.
	deadline := time.Now().Add(5 * time.Second)
	for len(h.logs.FilterMessage(refreshed).All()) <= before && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if es := h.logs.FilterMessage(refreshed).All(); len(es) <= before {
		t.Error("the held refresh never ended")
	} else if m := es[before].ContextMap(); m["running"] != int64(2) || m["known"] != int64(1) {
		t.Errorf("the held refresh: %v, want 2 running (listed before %s left) and 1 known", m, d.name)
	}

	// The landing went on with its context cancelled: no FDB repair
	// (d's entry on the uplink is right again).
	if es := h.logged("removed stale bridge entries", d.name); len(es) != 0 {
		t.Errorf("the cancelled landing of %s repaired the bridge: %v", d.name, es[0].ContextMap())
	}

	// The uplink's carrier comes back: a is re-announced, d is not.
	h.flap(t, netnstest.RigSwitchToHost)
	h.reannounced(t, a.macs[0], uplinkFrames, 5*time.Second)
	if n := h.frames.count(d.macs[0]); n != 0 {
		t.Errorf("%s left before it was registered, but got %d frames", d.name, n)
	}
	if got := h.switchFDB(t, d.macs[0]); got != netnstest.RigSwitchToOld {
		t.Errorf("switch moved %s's MAC to %q; it must stay on %s", d.name, got, netnstest.RigSwitchToOld)
	}

	// No learner on d's port: the guest's GARP is not learned.
	garp, err := (&ipannounce.Frame{Kind: ipannounce.GARPRequest, MAC: d.macs[0], IP: netip.MustParseAddr("192.0.2.56")}).Build()
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := guest.Write(garp); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	if es := h.logged("learned an address of the guest", d.name); len(es) != 0 {
		t.Errorf("a learner runs on the port of %s, which left: %v", d.name, es[0].ContextMap())
	}
}

// A domain stops while an uplink event, which listed it as running, is
// about to announce its NICs: the Cancel found nothing of its to stop yet,
// and the re-announce must not start after it (found in review: it did,
// with the agent's own context, so the MAC of a VM gone was announced;
// with a refresh schedule, forever). The domain running beside it is
// re-announced.
func TestUplinkEventSkipsDomainLeftAfterListing(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	old := agent.SetUplinkListedHook(func() {
		held := false
		once.Do(func() { held = true })
		if held {
			close(entered)
			<-release
		}
	})
	t.Cleanup(func() { agent.SetUplinkListedHook(old) })
	var stays, leaves domain
	h := newHost(t, hostOptions{settings: uplinkSettings(), holdDown: 200 * time.Millisecond, before: func(h *host) {
		h.tap(t, "vnet1", wired)
		h.tap(t, "vnet2", wired)
		stays = h.newDomain(t, stateRunning, reasonBooted, "vnet1")
		leaves = h.newDomain(t, stateRunning, reasonBooted, "vnet2")
	}})
	var releaseOnce sync.Once
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) }) // before the agent stops
	h.waitRegistry(t, 2)

	h.flap(t, netnstest.RigSwitchToHost)
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("no uplink event listed the running domains")
	}
	h.emit(t, leaves, stoppedDestroyed)
	netnstest.WaitFor(t, "the stopped domain dropped from the registry", func() bool { return !h.agent.Registered(leaves.uuid) })
	releaseOnce.Do(func() { close(release) })

	h.reannounced(t, stays.macs[0], uplinkFrames, 5*time.Second)
	if n := h.frames.count(leaves.macs[0]); n != 0 {
		t.Errorf("%s stopped before its re-announce started, but %d frames were sent", leaves.name, n)
	}
}
