package agent_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rarp-announce/rarp-announce/internal/agent"
	"github.com/rarp-announce/rarp-announce/internal/config"
	"github.com/rarp-announce/rarp-announce/internal/libvirtfake"
	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/pkg/libvirtconn"
	"github.com/rarp-announce/rarp-announce/pkg/libvirtwatch"
	"github.com/rarp-announce/rarp-announce/pkg/plan"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

func xmlCalls(h *host) int {
	return h.fake.Calls(libvirtfake.ProgramRemote, libvirtfake.ProcDomainGetXMLDesc)
}

// A pre-copy landing of a domain with a bridge NIC and a macvtap NIC: the
// bridge NIC is announced on br0 after br0's stale uplink entry is removed,
// the macvtap NIC on the macvtap; the switch then has both MACs on this
// host's ports. The XML was read once, at STARTED/MIGRATED.
func TestLandingAnnouncesBridgeAndMacvtapNICs(t *testing.T) {
	h := newHost(t, hostOptions{})
	h.tap(t, "vnet0", wired)
	h.macvtap(t)
	bridgeMAC := rarp.MAC{0x52, 0x54, 0x00, 0xbb, 0x00, 0x01}
	directMAC := rarp.MAC{0x52, 0x54, 0x00, 0xdd, 0x00, 0x01}
	d := h.nicDomain(t, stateOff, 0, libvirtfake.NIC{MAC: bridgeMAC.String(), Target: "vnet0"}, directNIC(directMAC))
	h.learnOnOld(t, bridgeMAC)
	h.learnOnOld(t, directMAC)

	calls := xmlCalls(h)
	h.emit(t, d, startedMigrated)
	h.quiet(t, bridgeMAC, 100*time.Millisecond, "STARTED/MIGRATED is never a trigger")
	h.emit(t, d, resumedMigrated)

	bf := h.frames.wait(t, bridgeMAC, framesPerBurst, 5*time.Second)
	df := h.frames.wait(t, directMAC, framesPerBurst, 5*time.Second)
	if got := interfacesOf(bf); len(got) != 1 || got[0] != netnstest.RigHostUplink {
		t.Errorf("bridge NIC announced on %v, want [%s], the bridge's uplink", got, netnstest.RigHostUplink)
	}
	if got := interfacesOf(df); len(got) != 1 || got[0] != macvtapDev {
		t.Errorf("macvtap NIC announced on %v, want [%s]", got, macvtapDev)
	}
	if got := h.rig.Switch.WaitFDB(t, netnstest.RigSwitchBridge, bridgeMAC.String(), netnstest.RigSwitchToHost, 2*time.Second); got != netnstest.RigSwitchToHost {
		t.Errorf("switch has the bridge NIC's MAC on %q, want %s", got, netnstest.RigSwitchToHost)
	}
	if got := h.rig.Switch.WaitFDB(t, netnstest.RigSwitchBridge, directMAC.String(), switchToMV, 2*time.Second); got != switchToMV {
		t.Errorf("switch has the macvtap NIC's MAC on %q, want %s", got, switchToMV)
	}
	// br0 does not learn from the host's own frames: only the repair
	// can have removed the stale entry.
	if got := h.hostFDB(t, bridgeMAC); got != "" {
		t.Errorf("br0 still has %s on %q after the landing; the stale uplink entry should be gone", bridgeMAC, got)
	}
	if got := h.metric(t, "rarp_announce_fdb_entries_removed_total"); got != 1 {
		t.Errorf("fdb entries removed = %v, want 1", got)
	}
	if got := h.nics(t, "host", "started"); got != 2 {
		t.Errorf("nic announces host/started = %v, want 2", got)
	}
	landed := h.waitLogged(t, "landed", d.name, time.Second).ContextMap()
	if landed["prefetched"] != true || landed["event"] != "resumed/migrated" || landed["nics"] != int64(2) {
		t.Errorf("landing logged %v; want prefetched=true, event resumed/migrated, 2 NICs", landed)
	}
	if got := xmlCalls(h) - calls; got != 1 {
		t.Errorf("the fake served %d DomainGetXMLDesc calls for the landing, want exactly 1 (the prefetch)", got)
	}
}

// Without STARTED/MIGRATED (the agent started mid-migration, or the
// source's cancelled migration after a lost SUSPENDED), the XML is read at
// landing, once.
func TestLandingWithoutPrefetchReadsTheXMLOnce(t *testing.T) {
	h := newHost(t, hostOptions{})
	h.tap(t, "vnet0", wired)
	d := h.newDomain(t, libvirtconn.StatePaused, 2, "vnet0")
	calls := xmlCalls(h)
	h.emit(t, d, resumedMigrated)
	h.frames.wait(t, d.macs[0], framesPerBurst, 5*time.Second)
	if got := h.waitLogged(t, "landed", d.name, time.Second).ContextMap()["prefetched"]; got != false {
		t.Errorf("landing logged prefetched=%v, want false", got)
	}
	if got := xmlCalls(h) - calls; got != 1 {
		t.Errorf("%d DomainGetXMLDesc calls, want 1", got)
	}
}

// The port must exist, be attached to its bridge and be up (carrier,
// forwarding) before the first frame; the announce goes out as soon as it
// is.
func TestReadinessWaitsForThePort(t *testing.T) {
	h := newHost(t, hostOptions{})
	cases := []struct {
		name   string
		spec   tapSpec
		finish func(t *testing.T, tap string)
	}{
		{"missing", tapSpec{}, func(t *testing.T, tap string) {
			h.tap(t, tap, wired)
		}},
		{"not attached", tapSpec{up: true, open: true}, func(t *testing.T, tap string) {
			h.ns.Attach(t, tap, netnstest.RigHostBridge)
		}},
		{"no carrier", tapSpec{attach: true, up: true}, func(t *testing.T, tap string) {
			netnstest.OpenTap(t, h.ns, tap)
		}},
		{"admin down", tapSpec{attach: true, open: true}, func(t *testing.T, tap string) {
			h.ns.Exec(t, "ip", "link", "set", "dev", tap, "up")
		}},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tap := fmt.Sprintf("vnet%d", i+1)
			if c.spec != (tapSpec{}) {
				h.tap(t, tap, c.spec)
			}
			d := h.newDomain(t, stateOff, 0, tap)
			h.learnOnOld(t, d.macs[0])
			h.land(t, d)
			h.waitLogged(t, "landed", d.name, 5*time.Second)
			h.quiet(t, d.macs[0], 300*time.Millisecond, "port not ready")
			ready := time.Now()
			c.finish(t, tap)
			f := h.frames.wait(t, d.macs[0], framesPerBurst, 5*time.Second)
			if f[0].Time.Before(ready) {
				t.Errorf("first frame at %v, before the port was made ready at %v", f[0].Time, ready)
			}
			if got := h.rig.Switch.WaitFDB(t, netnstest.RigSwitchBridge, d.macs[0].String(), netnstest.RigSwitchToHost, 2*time.Second); got != netnstest.RigSwitchToHost {
				t.Errorf("switch has %s on %q, want %s", d.macs[0], got, netnstest.RigSwitchToHost)
			}
		})
	}
	if got := h.nics(t, "host", "started"); got != float64(len(cases)) {
		t.Errorf("host/started = %v, want %d", got, len(cases))
	}
}

// A port that does not become ready within readiness.timeout is not
// announced, and it is counted; it is not announced when it becomes ready
// later either (the landing gave up).
func TestReadinessTimeout(t *testing.T) {
	s := defaultSettings()
	s.ReadyTimeout = 300 * time.Millisecond
	h := newHost(t, hostOptions{settings: s})
	h.tap(t, "vnet0", tapSpec{attach: true, up: true}) // nobody holds it: no carrier
	d := h.newDomain(t, stateOff, 0, "vnet0")
	h.land(t, d)
	h.waitMetric(t, 1, 5*time.Second, "rarp_announce_nic_announces_total", "strategy=host", "result=not_ready")
	if es := h.logged("port not ready; not announced", d.name); len(es) != 1 || !strings.Contains(fmt.Sprint(es[0].ContextMap()["error"]), "vnet0") {
		t.Errorf("want one 'port not ready' log naming vnet0, got %v", es)
	}
	netnstest.OpenTap(t, h.ns, "vnet0")
	h.quiet(t, d.macs[0], 300*time.Millisecond, "after the readiness timeout")
	if got := h.nics(t, "host", "started"); got != 0 {
		t.Errorf("host/started = %v, want 0", got)
	}
}

// Within the watch window a re-attached or restarted port is announced
// again; after the window it is not.
func TestPortChangeWithinTheWindowReannounces(t *testing.T) {
	s := defaultSettings()
	s.WatchWindow = 3 * time.Second
	h := newHost(t, hostOptions{settings: s})
	h.tap(t, "vnet0", wired)
	d := h.newDomain(t, stateOff, 0, "vnet0")
	h.land(t, d)
	first := h.frames.wait(t, d.macs[0], framesPerBurst, 5*time.Second)
	windowEnds := first[0].Time.Add(s.WatchWindow)
	reannounces := func() float64 { return h.metric(t, "rarp_announce_port_change_reannounces_total") }

	// Re-attached: os-vif re-plugging the port.
	h.ns.Exec(t, "ip", "link", "set", "dev", "vnet0", "nomaster")
	h.ns.Attach(t, "vnet0", netnstest.RigHostBridge)
	f := h.frames.wait(t, d.macs[0], 2*framesPerBurst, 5*time.Second)
	if f[framesPerBurst].Reason != "port-changed" {
		t.Errorf("re-announce reason %q, want port-changed", f[framesPerBurst].Reason)
	}
	h.waitMetric(t, 1, time.Second, "rarp_announce_port_change_reannounces_total")

	// Down and up.
	h.ns.Exec(t, "ip", "link", "set", "dev", "vnet0", "down")
	h.ns.Exec(t, "ip", "link", "set", "dev", "vnet0", "up")
	h.frames.wait(t, d.macs[0], 3*framesPerBurst, 5*time.Second)
	h.waitMetric(t, 2, time.Second, "rarp_announce_port_change_reannounces_total")
	if time.Now().After(windowEnds) {
		t.Fatalf("the changes took longer than the %v window; the test proves nothing", s.WatchWindow)
	}

	// After the window: nothing.
	time.Sleep(time.Until(windowEnds) + 100*time.Millisecond)
	h.ns.Exec(t, "ip", "link", "set", "dev", "vnet0", "nomaster")
	h.ns.Attach(t, "vnet0", netnstest.RigHostBridge)
	h.quiet(t, d.macs[0], 500*time.Millisecond, "port change after the window")
	if got := reannounces(); got != 2 {
		t.Errorf("re-announces = %v, want 2", got)
	}
}

// A port change is never announced for a domain that no longer runs here:
// not after STOPPED (the watch ends), not when libvirt says it is paused
// although no event said so (the agent asks before re-announcing).
func TestPortChangeOfADomainNotRunningIsNotAnnounced(t *testing.T) {
	s := defaultSettings()
	s.WatchWindow = time.Minute
	h := newHost(t, hostOptions{settings: s})
	h.tap(t, "vnet1", wired)
	h.tap(t, "vnet2", wired)

	stopped := h.newDomain(t, stateOff, 0, "vnet1")
	h.land(t, stopped)
	h.frames.wait(t, stopped.macs[0], framesPerBurst, 5*time.Second)
	h.emit(t, stopped, stoppedDestroyed)
	h.waitLogged(t, "announces cancelled", stopped.name, 5*time.Second)
	h.ns.Exec(t, "ip", "link", "set", "dev", "vnet1", "nomaster")
	h.ns.Attach(t, "vnet1", netnstest.RigHostBridge)
	h.quiet(t, stopped.macs[0], 500*time.Millisecond, "port change after STOPPED")

	paused := h.newDomain(t, stateOff, 0, "vnet2")
	h.land(t, paused)
	h.frames.wait(t, paused.macs[0], framesPerBurst, 5*time.Second)
	if err := h.fake.SetState(paused.name, libvirtconn.StatePaused, 1); err != nil {
		t.Fatal(err)
	}
	h.ns.Exec(t, "ip", "link", "set", "dev", "vnet2", "nomaster")
	h.ns.Attach(t, "vnet2", netnstest.RigHostBridge)
	h.waitLogged(t, "port changed but the domain no longer runs here; not re-announced", paused.name, 5*time.Second)
	h.quiet(t, paused.macs[0], 200*time.Millisecond, "port change of a paused domain")
	if got := h.metric(t, "rarp_announce_port_change_reannounces_total"); got != 0 {
		t.Errorf("re-announces = %v, want 0", got)
	}
}

// STOPPED or SUSPENDED during a long schedule stops the frames.
func TestCancelStopsTheSchedule(t *testing.T) {
	long := defaultSettings()
	long.Schedule.Bursts, long.Schedule.BurstInterval = 100, 50*time.Millisecond
	refresh := defaultSettings()
	refresh.Schedule.Refresh = time.Second
	cases := []struct {
		name   string
		cancel ev
		min    int           // frames before the cancel
		after  time.Duration // how long to check that none follow
	}{
		{"stopped during bursts", stoppedDestroyed, 2 * framesPerBurst, 600 * time.Millisecond},
		{"suspended during bursts", suspendedPaused, 2 * framesPerBurst, 600 * time.Millisecond},
		{"migrating away during bursts", suspendedMigrated, 2 * framesPerBurst, 600 * time.Millisecond},
		{"stopped during refresh", stoppedMigrated, framesPerBurst + 1, 2500 * time.Millisecond},
	}
	// Two hosts, built here so that they outlive the subtests.
	hosts := map[bool]*host{}
	for isRefresh, s := range map[bool]agent.Settings{false: long, true: refresh} {
		hosts[isRefresh] = newHost(t, hostOptions{settings: s})
		hosts[isRefresh].tap(t, "vnet0", wired)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := hosts[strings.Contains(c.name, "refresh")]
			d := h.newDomain(t, stateOff, 0, "vnet0")
			h.land(t, d)
			h.frames.wait(t, d.macs[0], c.min, 5*time.Second)
			at := h.emit(t, d, c.cancel)
			time.Sleep(c.after)
			// One frame may already be past the cancel check when the
			// event is read; none may follow 50 ms later.
			if n := h.frames.after(d.macs[0], at.Add(50*time.Millisecond)); n != 0 {
				t.Errorf("%d frames more than 50 ms after %v", n, c.cancel)
			}
			if n := h.announcer.Running(); n != 0 {
				t.Errorf("%d announces still running", n)
			}
		})
	}
}

// A NIC hot-unplugged from a running domain is no longer a running local
// domain's: the rest of its landing's schedule (here: refreshes) must stop
// at once, while the NIC that stays goes on. Before, the unplugged MAC was
// refreshed until the whole domain stopped, pulling it back from whatever
// host its port went to next.
func TestUnplugStopsTheNICsAnnounces(t *testing.T) {
	s := defaultSettings()
	s.Schedule.Refresh = time.Second // the least allowed
	h := newHost(t, hostOptions{settings: s, config: func(c *config.Config) {
		c.IPAnnounce.Enabled = true
		c.IPAnnounce.Sources.Nova = false
		c.IPAnnounce.Sources.Learned = true
	}})
	h.tap(t, "vnet0", wired)
	h.tap(t, "vnet1", wired)
	d := h.newDomain(t, stateOff, 0, "vnet0", "vnet1")
	h.land(t, d)
	h.frames.wait(t, d.macs[1], framesPerBurst+1, 5*time.Second) // a refresh went out
	if ls := h.agent.Learners(); len(ls) != 2 {
		t.Fatalf("learners %v, want one per NIC", ls)
	}
	if err := h.fake.SetXML(d.name, libvirtfake.LiveXML(d.name, d.uuid, 1, libvirtfake.NIC{MAC: d.macs[0].String(), Target: "vnet0"})); err != nil {
		t.Fatal(err)
	}
	if err := h.fake.EmitDevice(d.name, "net1", false); err != nil {
		t.Fatal(err)
	}
	at := time.Now()
	kept := h.frames.count(d.macs[0])
	time.Sleep(2500 * time.Millisecond) // two refresh periods and a half
	if n := h.frames.after(d.macs[1], at.Add(50*time.Millisecond)); n != 0 {
		t.Errorf("the unplugged NIC got %d frames more than 50 ms after the unplug, want none", n)
	}
	if n := h.frames.count(d.macs[0]) - kept; n < 2 {
		t.Errorf("the NIC that stays got %d refresh frames after the unplug, want at least 2", n)
	}
	if ls := h.agent.Learners(); len(ls) != 1 || !strings.HasPrefix(ls[0], d.macs[0].String()) {
		t.Errorf("learners after the unplug %v, want only %s's", ls, d.macs[0])
	}
}

// A cancel that arrives while a NIC's landing is still in progress (here:
// held in the FDB repair, which runs beside the first frames) must still
// stop that NIC's announce and count it cancelled: the announce would
// otherwise run after the domain stopped (with a refresh schedule:
// forever).
func TestCancelBetweenReadinessAndSend(t *testing.T) {
	s := defaultSettings()
	s.Schedule.Refresh = time.Second
	h := newHost(t, hostOptions{settings: s})
	h.tap(t, "vnet0", wired)
	d := h.newDomain(t, stateOff, 0, "vnet0")
	entered, release := h.fdb.hold()
	defer release()
	h.land(t, d)
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the landing never reached the FDB repair")
	}
	h.emit(t, d, stoppedDestroyed)
	h.waitLogged(t, "announces cancelled", d.name, 5*time.Second)
	release()
	h.quiet(t, d.macs[0], 1500*time.Millisecond, "announce of a domain stopped before its first frame")
	h.waitMetric(t, 1, time.Second, "rarp_announce_nic_announces_total", "strategy=host", "result=cancelled")
	if n := h.announcer.Running(); n != 0 {
		t.Errorf("%d announces running for a stopped domain", n)
	}
}

// Event sequences, as libvirtwatch classifies them, and the bursts they
// cause. Groups are emitted one after the other, each followed by a check
// of the bursts so far.
func TestMigrationSequences(t *testing.T) {
	h := newHost(t, hostOptions{})
	h.tap(t, "vnet0", wired)
	cases := []struct {
		name          string
		state, reason int32
		groups        [][]ev
		bursts        []int // cumulative, after each group
	}{
		{"pre-copy destination", stateOff, 0, [][]ev{{startedMigrated, resumedMigrated}}, []int{1}},
		{"STARTED/MIGRATED alone", stateOff, 0, [][]ev{{startedMigrated}}, []int{0}},
		{"failed incoming migration", stateOff, 0, [][]ev{{startedMigrated, stoppedFailed}}, []int{0}},
		{"boot, pause, unpause", stateOff, 0, [][]ev{{startedBooted, suspendedPaused, resumedUnpaused}}, []int{0}},
		{"source of a pre-copy migration", stateRunning, reasonBooted, [][]ev{{suspendedMigrated, stoppedMigrated}}, []int{0}},
		{"cancelled migration on the source", stateRunning, reasonBooted, [][]ev{{suspendedMigrated, resumedMigrated}}, []int{1}},
		{"post-copy destination: one burst, not two", stateOff, 0, [][]ev{{startedMigrated, resumedPostcopy, resumedMigrated}}, []int{1}},
		{"post-copy source", stateRunning, reasonBooted, [][]ev{{suspendedMigrated, suspendedPostcopy, stoppedMigrated}}, []int{0}},
		{"post-copy failure on the source", stateRunning, reasonBooted, [][]ev{{suspendedPostcopy, suspendedPostcopyFail}}, []int{0}},
		{"post-copy failure, destination keeps running", stateOff, 0, [][]ev{{startedMigrated, resumedPostcopy, resumedPostcopyFailed}}, []int{1}},
		{"post-copy failure paused, then recovered", stateOff, 0,
			[][]ev{{startedMigrated, resumedPostcopy}, {suspendedPostcopyFail}, {resumedPostcopy, resumedMigrated}}, []int{1, 1, 2}},
		{"in, out, in again", stateOff, 0,
			[][]ev{{startedMigrated, resumedMigrated}, {suspendedMigrated, stoppedMigrated}, {startedMigrated, resumedMigrated}}, []int{1, 1, 2}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := h.newDomain(t, c.state, c.reason, "vnet0")
			for i, g := range c.groups {
				h.emit(t, d, g...)
				h.flush(t, "vnet0")
				if got, want := h.frames.count(d.macs[0]), c.bursts[i]*framesPerBurst; got != want {
					t.Fatalf("after %v: %d frames, want %d (%d bursts)", g, got, want, c.bursts[i])
				}
			}
		})
	}
}

// NICs that cannot be announced from the host are skipped or reported as
// not handled, with a reason, and counted; a NIC with a bad MAC does not
// keep the others from being announced.
func TestNICsThatCannotBeAnnounced(t *testing.T) {
	h := newHost(t, hostOptions{})
	h.tap(t, "vnet0", wired)
	good := rarp.MAC{0x52, 0x54, 0x00, 0x60, 0x00, 0x01}
	d := h.rawDomain(t, stateOff, 0, fmt.Sprintf(`    <interface type='hostdev' managed='yes'>
      <mac address='52:54:00:60:00:02'/>
      <source><address type='pci' domain='0x0000' bus='0x03' slot='0x10' function='0x1'/></source>
      <alias name='hostdev0'/>
    </interface>
    <interface type='vhostuser'>
      <mac address='52:54:00:60:00:03'/>
      <source type='unix' path='/run/vhost0.sock' mode='server'/>
      <model type='virtio'/>
      <alias name='net1'/>
    </interface>
    <interface type='bridge'>
      <mac address='52:54:00:60:00'/>
      <source bridge='br0'/>
      <target dev='vnet8'/>
      <alias name='net2'/>
    </interface>
    <interface type='bridge'>
      <mac address='01:00:5e:00:00:01'/>
      <source bridge='br0'/>
      <target dev='vnet9'/>
      <alias name='net3'/>
    </interface>
    <interface type='bridge'>
      <mac address='52:54:00:60:00:05'/>
      <source bridge='br1'/>
      <virtualport type='openvswitch'><parameters interfaceid='0b6a6e46-3c39-4bd1-9bbe-3b0a4d3a6a8d'/></virtualport>
      <target dev='tap-ovs'/>
      <alias name='net4'/>
    </interface>
    <interface type='bridge'>
      <mac address='%s'/>
      <source bridge='br0'/>
      <target dev='vnet0'/>
      <model type='virtio'/>
      <alias name='net5'/>
    </interface>
`, good))
	h.land(t, d)
	h.frames.wait(t, good, framesPerBurst, 5*time.Second)
	h.waitMetric(t, 1, 5*time.Second, "rarp_announce_nic_announces_total", "strategy=host", "result=started")
	for _, c := range []struct {
		strategy, result string
		want             float64
	}{
		{"host", "started", 1},
		{"skip", "skipped", 1},     // hostdev
		{"skip", "invalid", 2},     // bad MAC, multicast MAC: domxml leaves them out
		{"qemu", "not_handled", 1}, // vhostuser, no QMP on this agent
		{"ovs", "not_handled", 1},  // openvswitch, no OVS on this agent
	} {
		if got := h.nics(t, c.strategy, c.result); got != c.want {
			t.Errorf("nic announces %s/%s = %v, want %v", c.strategy, c.result, got, c.want)
		}
	}
	// The domain was announced: no landing error.
	if got := h.metric(t, "rarp_announce_landing_errors_total", "reason=parse"); got != 0 {
		t.Errorf("landing errors (parse) = %v, want 0: the domain's good NIC was announced", got)
	}
	reasons := map[string]string{}
	for _, e := range h.logged("NIC not announced", d.name) {
		m := e.ContextMap()
		reasons[fmt.Sprint(m["mac"])] = fmt.Sprint(m["reason"], m["error"])
	}
	// A NIC whose strategy this agent lacks is logged like a skipped one
	// (since the strategy seam: one line per NIC, whatever the strategy).
	for mac, want := range map[string]string{
		"52:54:00:60:00:02": "hostdev", "52:54:00:60:00:05": "ovs strategy is not available",
		"52:54:00:60:00:03": "qemu strategy is not available",
	} {
		if !strings.Contains(reasons[mac], want) {
			t.Errorf("NIC %s: logged reason %q, want it to mention %q", mac, reasons[mac], want)
		}
	}
	es := h.logged("some NICs of the live XML are invalid and not announced", d.name)
	if len(es) != 1 {
		t.Fatalf("want one log about the invalid NICs, got %v", es)
	}
	for _, want := range []string{"net2", "net3 vnet9 01:00:5e:00:00:01", "multicast"} {
		if msg := fmt.Sprint(es[0].ContextMap()["error"]); !strings.Contains(msg, want) {
			t.Errorf("the invalid NICs' log %q does not mention %q", msg, want)
		}
	}
}

// A libvirtd restart: the agent reconnects and resyncs. A domain running
// with reason migrated is announced once: at the first connect, or at the
// reconnect if it landed while the agent was not listening; not again at
// later reconnects.
func TestLibvirtdRestartResync(t *testing.T) {
	var before domain
	h := newHost(t, hostOptions{before: func(h *host) {
		before = h.newDomain(t, stateRunning, libvirtconn.ReasonRunningMigrated, "vnet0")
	}})
	h.tap(t, "vnet0", wired) // after the resync: the landing waits for its port
	h.frames.wait(t, before.macs[0], framesPerBurst, 5*time.Second)
	if got := h.waitLogged(t, "landed", before.name, time.Second).ContextMap()["resync"]; got != true {
		t.Errorf("landing at connect logged resync=%v, want true", got)
	}

	// A domain lands while libvirtd is restarting: its events are lost.
	missed := h.newDomain(t, stateRunning, libvirtconn.ReasonRunningPostcopy, "vnet0")
	booted := h.newDomain(t, stateRunning, reasonBooted, "vnet0")
	for i := 1; i <= 2; i++ {
		h.fake.DropConnections()
		h.waitMetric(t, float64(i), 10*time.Second, "rarp_announce_libvirt_reconnects_total")
		h.waitReady(t)
		h.flush(t, "vnet0")
		if got := h.frames.count(missed.macs[0]); got != framesPerBurst {
			t.Errorf("restart %d: domain that landed unseen has %d frames, want %d (announced once)", i, got, framesPerBurst)
		}
		if got := h.frames.count(before.macs[0]); got != framesPerBurst {
			t.Errorf("restart %d: domain announced at connect has %d frames, want %d (not again)", i, got, framesPerBurst)
		}
		if got := h.frames.count(booted.macs[0]); got != 0 {
			t.Errorf("restart %d: booted domain has %d frames, want none", i, got)
		}
	}
}

// The manual announce (rarp-announce announce --domain) refuses a domain
// that is not running here, and announces one that is.
func TestAnnounceDomainOnlyForRunningDomains(t *testing.T) {
	h := newHost(t, hostOptions{})
	h.tap(t, "vnet0", wired)
	paused := h.newDomain(t, libvirtconn.StatePaused, 1, "vnet0")
	running := h.newDomain(t, stateRunning, reasonBooted, "vnet0")
	ctx := context.Background()
	if _, err := h.agent.AnnounceDomain(ctx, libvirtwatch.DomainRef{Name: paused.name, UUID: paused.uuid}, ""); err == nil || !strings.Contains(err.Error(), "not running") {
		t.Errorf("announce of a paused domain: err %v, want 'not running'", err)
	}
	res, err := h.agent.AnnounceDomain(ctx, libvirtwatch.DomainRef{Name: running.name, UUID: running.uuid}, plan.Host)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 || res[0].Result != "started" || len(res[0].Handles) != 1 {
		t.Fatalf("results %+v, want one NIC started with one handle", res)
	}
	<-res[0].Handles[0].Done()
	if got := h.frames.count(running.macs[0]); got != framesPerBurst {
		t.Errorf("%d frames, want %d", got, framesPerBurst)
	}
	if got := h.frames.count(paused.macs[0]); got != 0 {
		t.Errorf("paused domain: %d frames, want none", got)
	}
}

// A domain that stops while its live XML is being read is not announced,
// and that is no landing error: nothing failed.
func TestCancelWhileReadingTheXML(t *testing.T) {
	h := newHost(t, hostOptions{})
	h.tap(t, "vnet0", wired)
	d := h.newDomain(t, libvirtconn.StatePaused, 2, "vnet0") // no STARTED/MIGRATED: read at landing
	h.fake.SetDelay(500 * time.Millisecond)
	h.emit(t, d, resumedMigrated, stoppedDestroyed)
	h.waitLogged(t, "announces cancelled", d.name, 5*time.Second)
	time.Sleep(700 * time.Millisecond) // the delayed answer came back
	h.fake.SetDelay(0)
	h.flush(t, "vnet0")
	if n := h.frames.count(d.macs[0]); n != 0 {
		t.Errorf("%d frames for a domain that stopped before its XML was read", n)
	}
	if got := h.metric(t, "rarp_announce_landing_errors_total", "reason=xml"); got != 0 {
		t.Errorf("landing errors (xml) = %v, want 0: the landing was cancelled, nothing failed", got)
	}
	if es := h.logged("cannot read the domain's live XML; not announced", d.name); len(es) != 0 {
		t.Errorf("a cancelled landing logged an XML error: %v", es[0].ContextMap())
	}
}
