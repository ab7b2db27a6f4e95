//go:build kernelrig

// The agent's re-announces after a bond failover, on a kernel with
// bonding: they run in the full-kernel rig,
//
//	test/kernel/run.sh internal/agent
package agent_test

import (
	"encoding/binary"
	"errors"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/pkg/announce"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// Names of the bond topology, built over the Rig:
//
//	Host: br0 ─ bond0 ┬ leg0 ── sa0 ─ swa ─ ja ── oa ┐
//	                  └ leg1 ── sb0 ─ swb ─ jb ── ob ┴ sw0 (outer switch) ─ swo ── Old
//
// Two access switches joined by a third, no MLAG: when the bond fails over
// from leg0 to leg1, the outer switch still has every VM MAC towards swa
// until something the VMs send, or an announce, comes in through swb.
const (
	swA, swB     = "swa", "swb"
	legA, legB   = "leg0", "leg1"
	swALeg       = "sa0"
	swBLeg       = "sb0"
	outerA       = "oa"
	outerB       = "ob"
	bondUplink   = "bond0"
	rigHoldDown  = 300 * time.Millisecond
	failoverWant = 100 * time.Millisecond
)

// bondTopology replaces the rig's plain uplink by an mode bond of two
// legs to two access switches joined by the outer switch sw0.
func bondTopology(t *testing.T, h *host, mode string) {
	t.Helper()
	sw := h.rig.Switch
	h.ns.Exec(t, "ip", "link", "del", netnstest.RigHostUplink) // and its peer swh
	for _, br := range []string{swA, swB} {
		sw.Bridge(t, br)
	}
	netnstest.Veth(t, sw, "ja", sw, outerA)
	netnstest.Veth(t, sw, "jb", sw, outerB)
	sw.Attach(t, "ja", swA)
	sw.Attach(t, "jb", swB)
	sw.Attach(t, outerA, netnstest.RigSwitchBridge)
	sw.Attach(t, outerB, netnstest.RigSwitchBridge)
	netnstest.Veth(t, h.ns, legA, sw, swALeg)
	netnstest.Veth(t, h.ns, legB, sw, swBLeg)
	sw.Attach(t, swALeg, swA)
	sw.Attach(t, swBLeg, swB)
	h.ns.Exec(t, "ip", "link", "add", bondUplink, "type", "bond", "mode", mode, "miimon", "10")
	for _, leg := range []string{legA, legB} {
		h.ns.Exec(t, "ip", "link", "set", leg, "down")
		h.ns.Exec(t, "ip", "link", "set", leg, "master", bondUplink)
	}
	h.ns.Exec(t, "ip", "link", "set", bondUplink, "up")
	h.ns.Attach(t, bondUplink, netnstest.RigHostBridge)
}

// arrivals records when each RARP frame arrives on a device, by source MAC.
type arrivals struct {
	mu sync.Mutex
	at map[rarp.MAC][]time.Time
}

func listen(t *testing.T, ns *netnstest.NS, dev string) *arrivals {
	t.Helper()
	ifi := ns.Interface(t, dev)
	var fd int
	proto := uint16(unix.ETH_P_ALL<<8&0xff00 | unix.ETH_P_ALL>>8)
	if err := ns.Do(func() error {
		var err error
		if fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(proto)); err != nil {
			return err
		}
		tv := unix.NsecToTimeval((100 * time.Millisecond).Nanoseconds())
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index})
	}); err != nil {
		t.Fatalf("listen on %s: %v", dev, err)
	}
	a := &arrivals{at: map[rarp.MAC][]time.Time{}}
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		buf := make([]byte, 2048)
		for {
			select {
			case <-done:
				return
			default:
			}
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				return
			}
			if n < 14 || binary.BigEndian.Uint16(buf[12:14]) != rarp.EtherTypeRARP {
				continue
			}
			var src rarp.MAC
			copy(src[:], buf[6:12])
			a.mu.Lock()
			a.at[src] = append(a.at[src], time.Now())
			a.mu.Unlock()
		}
	}()
	t.Cleanup(func() { close(done); <-stopped; unix.Close(fd) })
	return a
}

// first returns the first arrival of mac after since, waiting up to timeout.
func (a *arrivals) first(mac rarp.MAC, since time.Time, timeout time.Duration) (time.Time, bool) {
	deadline := time.Now().Add(timeout)
	for {
		a.mu.Lock()
		for _, at := range a.at[mac] {
			if at.After(since) {
				a.mu.Unlock()
				return at, true
			}
		}
		a.mu.Unlock()
		if time.Now().After(deadline) {
			return time.Time{}, false
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (a *arrivals) count(mac rarp.MAC) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.at[mac])
}

// setLink sets a switch-side device down or up through netlink: an ip
// command costs tens of milliseconds under TCG, which would blur the
// timing and stretch ten flaps over seconds.
func setLink(t *testing.T, h *host, dev string, up bool) {
	t.Helper()
	nl := h.rig.Switch.Netlink()
	l, err := nl.LinkByName(dev)
	if err != nil {
		t.Fatal(err)
	}
	if up {
		err = nl.LinkSetUp(l)
	} else {
		err = nl.LinkSetDown(l)
	}
	if err != nil {
		t.Fatalf("set %s up=%v: %v", dev, up, err)
	}
}

// activeLeg returns the bond's active leg as /sys shows it.
func activeLeg(t *testing.T, h *host) string {
	t.Helper()
	return trim(h.ns.Exec(t, "cat", "/sys/class/net/"+bondUplink+"/bonding/active_slave"))
}

func trim(s string) string {
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == ' ') {
		s = s[:len(s)-1]
	}
	return s
}

// An active-backup bond fails over: within 100 ms a burst per running VM
// MAC leaves the new active leg, and the outer switch learns every MAC
// through the new leg's access switch; a domain stopped here gets nothing.
func TestRigBondFailoverReannounces(t *testing.T) {
	var vms []domain
	var stopped domain
	h := newHost(t, hostOptions{settings: uplinkSettings(), holdDown: rigHoldDown, before: func(h *host) {
		bondTopology(t, h, "active-backup")
		for _, tap := range []string{"vnet1", "vnet2", "vnet3", "vnet4"} {
			h.tap(t, tap, wired)
		}
		vms = []domain{
			h.newDomain(t, stateRunning, reasonBooted, "vnet1"),
			h.newDomain(t, stateRunning, reasonBooted, "vnet2"),
			h.newDomain(t, stateRunning, reasonBooted, "vnet3"),
		}
		stopped = h.newDomain(t, stateRunning, reasonBooted, "vnet4")
	}})
	h.waitRegistry(t, 4)
	if got := activeLeg(t, h); got != legA {
		t.Fatalf("active leg %q, want %s", got, legA)
	}
	for _, d := range append(vms, stopped) {
		h.rig.LearnOnOld(t, d.macs[0].String())
	}
	h.emit(t, stopped, stoppedDestroyed)
	time.Sleep(50 * time.Millisecond) // the stop reaches the agent
	onB := listen(t, h.rig.Switch, swBLeg)

	failed := time.Now()
	setLink(t, h, swALeg, false) // leg0 loses carrier
	firsts := map[string]time.Time{}
	for _, d := range vms {
		at, ok := onB.first(d.macs[0], failed, 2*time.Second)
		if !ok {
			t.Fatalf("%s: no announce on the new active leg", d.name)
		}
		firsts[d.name] = at
	}
	// The agent's share: from the failover notification (the watcher's
	// event time) to the frame on the new leg. The kernel's share (miimon,
	// the failover, the notification) is logged: under TCG it is most of
	// the total.
	e := h.waitLogged(t, "uplink event: re-announced the running domains behind it", "", 2*time.Second)
	eventAt, _ := e.ContextMap()["event_at"].(time.Time)
	t.Logf("failover notified %v after the leg failed; libvirt listing %v", eventAt.Sub(failed), e.ContextMap()["listed"])
	logAt := func(msg string) time.Duration {
		for _, e := range h.logs.FilterMessage(msg).All() {
			if e.Time.After(failed) {
				return e.Time.Sub(eventAt)
			}
		}
		return -1
	}
	t.Logf("after the notification: the agent handles it %v, the registry refreshed (libvirt listing) %v",
		logAt("uplink event: checking which domains run here"), logAt("registry of running domains refreshed"))
	for _, d := range vms {
		at := firsts[d.name]
		t.Logf("%s: first frame on %s %v after the leg failed, %v after the notification", d.name, legB, at.Sub(failed), at.Sub(eventAt))
		// Where the agent's share goes: the event -> its announce
		// started (the "announce started" line) -> the frame written
		// (the announcer's report) -> seen on the new leg.
		var started, written time.Time
		for _, e := range h.logs.FilterMessage("announce started").All() {
			if e.ContextMap()["mac"] == d.macs[0].String() && e.Time.After(failed) {
				started = e.Time
				break
			}
		}
		for _, f := range h.frames.sent(d.macs[0], "") {
			if f.Reason == announce.TriggerUplinkFailover.String() {
				written = f.Time
				break
			}
		}
		t.Logf("%s: announce started %v after the notification, frame written %v after it, seen on %s %v after it", d.name,
			started.Sub(eventAt), written.Sub(eventAt), legB, at.Sub(eventAt))
		if total := at.Sub(failed); total > 5*failoverWant {
			t.Errorf("%s: first frame on the new leg %v after the leg failed", d.name, total)
		}
		if lag := at.Sub(eventAt); lag > failoverWant {
			t.Errorf("%s: first frame on the new leg %v after the failover notification, want within %v", d.name, lag, failoverWant)
		}
	}
	if got := activeLeg(t, h); got != legB {
		t.Errorf("active leg %q after the failure, want %s", got, legB)
	}
	for _, d := range vms {
		if got := h.rig.Switch.WaitFDB(t, netnstest.RigSwitchBridge, d.macs[0].String(), outerB, 2*time.Second); got != outerB {
			t.Errorf("outer switch has %s on %q, want %s", d.name, got, outerB)
		}
	}
	time.Sleep(900 * time.Millisecond) // the whole schedule
	if n := onB.count(stopped.macs[0]); n != 0 {
		t.Errorf("stopped domain %s: %d frames on the new leg, want none", stopped.name, n)
	}
	if got := h.switchFDB(t, stopped.macs[0]); got != netnstest.RigSwitchToOld {
		t.Errorf("outer switch moved the stopped domain's MAC to %q", got)
	}
	h.waitMetric(t, float64(len(vms)), time.Second, "rarp_announce_uplink_reannounce_nics_total", "reason=bond_failover")
}

// An 802.3ad bond losing a leg moves nothing on the switch (one LAG): no
// re-announce.
func TestRigBond8023adIsQuiet(t *testing.T) {
	h, vm := hostWithDomain(t, rigHoldDown, func(h *host) { bondTopology(t, h, "802.3ad") }, "vnet1")
	setLink(t, h, swALeg, false)
	h.quiet(t, vm.macs[0], time.Second, "an 802.3ad leg failing is no reason to re-announce")
	for _, r := range []string{"bond_failover", "carrier_up", "port_added"} {
		if n := h.metric(t, "rarp_announce_uplink_reannounce_nics_total", "reason="+r); n != 0 {
			t.Errorf("%s re-announces: %v, want 0", r, n)
		}
	}
}

// Ten failovers in a second re-announce at most once per hold-down (the
// default, 1 s, here).
func TestRigBondFlapsHeldDown(t *testing.T) {
	const rigHoldDown = time.Second
	h, vm := hostWithDomain(t, rigHoldDown, func(h *host) { bondTopology(t, h, "active-backup") }, "vnet1")
	start := time.Now()
	for i := range 10 {
		leg := swALeg
		if i%2 == 1 {
			leg = swBLeg
		}
		// Bring the other leg back, fail the active one: each is a
		// failover, and the bond never loses all its legs.
		other := swBLeg
		if leg == swBLeg {
			other = swALeg
		}
		setLink(t, h, other, true)
		setLink(t, h, leg, false)
		time.Sleep(100 * time.Millisecond)
	}
	flapped := time.Since(start)
	time.Sleep(rigHoldDown + 200*time.Millisecond)
	var at []time.Time
	for _, e := range h.logs.FilterMessage("uplink event: re-announced the running domains behind it").All() {
		at = append(at, e.Time)
	}
	if len(at) == 0 {
		t.Fatal("no re-announce at all")
	}
	for i := 1; i < len(at); i++ {
		// The log line follows the libvirt listing, whose time varies.
		if gap := at[i].Sub(at[i-1]); gap < rigHoldDown-50*time.Millisecond {
			t.Errorf("re-announces %d and %d only %v apart, hold-down %v", i-1, i, gap, rigHoldDown)
		}
	}
	max := int(flapped/rigHoldDown) + 2
	if len(at) > max {
		t.Errorf("%d re-announces for flaps over %v, want at most %d", len(at), flapped, max)
	}
	t.Logf("%d re-announces for 10 flaps over %v (hold-down %v); %d frames of %s", len(at), flapped, rigHoldDown, h.frames.count(vm.macs[0]), vm.macs[0])
}
