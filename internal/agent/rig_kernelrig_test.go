//go:build kernelrig

// The agent's uplink send on what the host's kernel lacks (VLAN-filtering
// bridges, 802.1Q sub-interfaces), in the full-kernel rig:
//
//	test/kernel/run.sh internal/agent
//
// The agent is the harness's (newHost): the daemon's parts from app.Build,
// the fake libvirtd in this process (the rig has no libvirtd).
package agent_test

import (
	"encoding/binary"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/rarp-announce/rarp-announce/internal/libvirtfake"
	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// vlanPorts replaces port's VLANs (VLAN 1 removed) with the given
// `bridge vlan add` argument lists.
func vlanPorts(t *testing.T, ns *netnstest.NS, port string, vlans ...[]string) {
	t.Helper()
	ns.Exec(t, "bridge", "vlan", "del", "dev", port, "vid", "1")
	for _, v := range vlans {
		ns.Exec(t, append([]string{"bridge", "vlan", "add", "dev", port, "vid"}, v...)...)
	}
}

// announcesOf returns the VLAN (0: untagged) of each RARP frame from mac
// among frames.
func announcesOf(frames [][]byte, mac rarp.MAC) []uint16 {
	var out []uint16
	for _, f := range frames {
		if len(f) < 14 || string(f[6:12]) != string(mac[:]) {
			continue
		}
		if vid, et, ok := netnstest.VLANOf(f); ok {
			if et == rarp.EtherTypeRARP {
				out = append(out, vid)
			}
		} else if binary.BigEndian.Uint16(f[12:14]) == rarp.EtherTypeRARP {
			out = append(out, 0)
		}
	}
	return out
}

// learnedVLAN waits until the bridge of port in ns learned mac on port in
// vlan, and returns the VLANs it has mac in on port.
func learnedVLAN(t *testing.T, ns *netnstest.NS, port string, mac rarp.MAC, vlan int) []int {
	t.Helper()
	idx := ns.Interface(t, port).Index
	var seen []int
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		neighs, err := ns.Netlink().NeighList(idx, unix.AF_BRIDGE)
		if err != nil {
			t.Fatal(err)
		}
		seen = seen[:0]
		for _, n := range neighs {
			if n.HardwareAddr.String() == mac.String() && n.Flags&netlink.NTF_SELF == 0 {
				seen = append(seen, n.Vlan)
			}
		}
		if slices.Contains(seen, vlan) {
			return seen
		}
	}
	t.Errorf("%s: %s not learned on %s in vlan %d (learned in %v)", ns.Name, mac, port, vlan, seen)
	return seen
}

// TestRigAgentAnnouncesOnEachVMsVLAN: the rig's host bridge br0 made
// VLAN-aware with VMs on PVID 100 and 200, its uplink a trunk (100, 200
// tagged) to the VLAN-aware switch sw0 and a second uplink carrying VLAN
// 100 as its untagged PVID to a second switch (the same switch on both
// would loop VLAN 100); and a plain bridge br1 whose uplink is a VLAN
// sub-interface eth0.100. One landing of a domain with a NIC on each: the
// agent's frames leave each uplink with the tag that uplink carries the
// VM's VLAN with, and the switches learn each MAC in its own VLAN.
func TestRigAgentAnnouncesOnEachVMsVLAN(t *testing.T) {
	h := newHost(t, hostOptions{})
	hv, sw := h.ns, h.rig.Switch
	hv.Exec(t, "ip", "link", "set", "dev", netnstest.RigHostBridge, "type", "bridge", "vlan_filtering", "1")
	sw.Exec(t, "ip", "link", "set", "dev", netnstest.RigSwitchBridge, "type", "bridge", "vlan_filtering", "1")
	vlanPorts(t, hv, netnstest.RigHostUplink, []string{"100"}, []string{"200"})
	vlanPorts(t, sw, netnstest.RigSwitchToHost, []string{"100"}, []string{"200"})

	sw2 := netnstest.New(t, "sw2")
	sw2.VLANBridge(t, "sw2")
	netnstest.Veth(t, hv, "access0", sw2, "down1")
	hv.Attach(t, "access0", netnstest.RigHostBridge)
	sw2.Attach(t, "down1", "sw2")
	vlanPorts(t, hv, "access0", []string{"100", "pvid", "untagged"})
	vlanPorts(t, sw2, "down1", []string{"100", "pvid", "untagged"})

	for _, vid := range []string{"100", "200"} {
		tap := "tap" + vid
		hv.Exec(t, "ip", "tuntap", "add", "dev", tap, "mode", "tap")
		hv.Attach(t, tap, netnstest.RigHostBridge)
		hv.Exec(t, "ip", "link", "set", "dev", tap, "up")
		vlanPorts(t, hv, tap, []string{vid, "pvid", "untagged"})
		netnstest.OpenTap(t, hv, tap)
	}

	sw3 := netnstest.New(t, "sw3")
	netnstest.Veth(t, hv, "eth0", sw3, "down3")
	hv.Exec(t, "ip", "link", "add", "link", "eth0", "name", "eth0.100", "type", "vlan", "id", "100")
	hv.Exec(t, "ip", "link", "set", "dev", "eth0.100", "up")
	hv.Bridge(t, "br1")
	hv.Attach(t, "eth0.100", "br1")
	hv.Exec(t, "ip", "tuntap", "add", "dev", "tap3", "mode", "tap")
	hv.Attach(t, "tap3", "br1")
	hv.Exec(t, "ip", "link", "set", "dev", "tap3", "up")
	netnstest.OpenTap(t, hv, "tap3")

	mac100 := rarp.MAC{0x52, 0x54, 0x00, 0x13, 0x01, 0x00}
	mac200 := rarp.MAC{0x52, 0x54, 0x00, 0x13, 0x02, 0x00}
	mac3 := rarp.MAC{0x52, 0x54, 0x00, 0x13, 0x03, 0x00}
	nic := func(mac rarp.MAC, bridge, tap string) libvirtfake.NIC {
		return libvirtfake.NIC{MAC: mac.String(), Bridge: bridge, Target: tap}
	}
	d := h.nicDomain(t, stateOff, 0, nic(mac100, "br0", "tap100"), nic(mac200, "br0", "tap200"), nic(mac3, "br1", "tap3"))

	trunk, access, sub := netnstest.Sniff(t, sw, netnstest.RigSwitchToHost), netnstest.Sniff(t, sw2, "down1"), netnstest.Sniff(t, sw3, "down3")
	// The resolver follows the VLAN tables from notifications; give the
	// last of them a moment (a fallback would be counted and fail below).
	time.Sleep(300 * time.Millisecond)
	h.land(t, d)
	h.frames.wait(t, mac100, 2*framesPerBurst, 10*time.Second)
	h.frames.wait(t, mac200, framesPerBurst, 10*time.Second)
	h.frames.wait(t, mac3, framesPerBurst, 10*time.Second)
	time.Sleep(fastSchedule().Duration())

	// Where the agent wrote them, and with which tag.
	type out struct {
		iface string
		vlan  uint16
	}
	for _, c := range []struct {
		mac  rarp.MAC
		want []out
	}{
		{mac100, []out{{"access0", 0}, {netnstest.RigHostUplink, 100}}}, // sorted by name
		{mac200, []out{{netnstest.RigHostUplink, 200}}},
		{mac3, []out{{"eth0.100", 0}}},
	} {
		var got []out
		for _, s := range h.frames.sent(c.mac, "") {
			if o := (out{s.Interface, s.VLAN.ID}); !slices.Contains(got, o) {
				got = append(got, o)
			}
		}
		slices.SortFunc(got, func(a, b out) int { return strings.Compare(a.iface, b.iface) })
		if !slices.Equal(got, c.want) {
			t.Errorf("%s written as %v, want %v", c.mac, got, c.want)
		}
	}
	if got := h.metric(t, "rarp_announce_uplink_fallbacks_total"); got != 0 {
		t.Errorf("%v fallbacks to the bridge device, want 0", got)
	}

	// What the wires carried.
	tf, af, sf := trunk.Stop(), access.Stop(), sub.Stop()
	for _, c := range []struct {
		where  string
		frames [][]byte
		mac    rarp.MAC
		vid    uint16
	}{
		{"trunk", tf, mac100, 100},
		{"trunk", tf, mac200, 200},
		{"access uplink", af, mac100, 0},
		{"eth0 under eth0.100", sf, mac3, 100},
	} {
		got := announcesOf(c.frames, c.mac)
		if len(got) != framesPerBurst || slices.IndexFunc(got, func(v uint16) bool { return v != c.vid }) >= 0 {
			t.Errorf("%s carried %s's announces in vlans %v, want %d frames in vlan %d (0: untagged)", c.where, c.mac, got, framesPerBurst, c.vid)
		}
	}
	if got := announcesOf(af, mac200); len(got) != 0 {
		t.Errorf("the access uplink (vlan 100 only) carried vlan 200's VM: %v", got)
	}

	// What the VLAN-aware switches learned.
	t.Logf("sw0 has %s in vlans %v", mac100, learnedVLAN(t, sw, netnstest.RigSwitchToHost, mac100, 100))
	if got := learnedVLAN(t, sw, netnstest.RigSwitchToHost, mac200, 200); slices.Contains(got, 100) || slices.Contains(got, 1) {
		t.Errorf("sw0 learned %s in vlans %v, want 200 only", mac200, got)
	}
	learnedVLAN(t, sw2, "down1", mac100, 100)
}

// On a VLAN-filtering bridge (ports on their default PVID 1) the uplink a
// running domain's NIC would be re-announced on is kept warm too. The
// warming asked the topology for the plan's untagged entry, a VLAN no
// filtering bridge carries, and warmed nothing (this kernel's host lacks
// VLAN filtering: the rig runs it).
func TestRigUplinkSocketWarmOnAFilteringBridge(t *testing.T) { uplinkSocketWarm(t, true) }

// An uplink added back to a VLAN-filtering bridge while up, its VLAN set a
// moment later (`ip link set master`, then `bridge vlan add`, as network
// scripts do): the port_added re-announces the VM on VLAN 100 out of it,
// tagged. The event was handled at once, when the port carried only the
// default PVID 1: "vlan_not_carried", and the VLAN's arrival is no event.
func TestRigPortAddedBeforeItsVLANs(t *testing.T) {
	mac := rarp.MAC{0x52, 0x54, 0x00, 0x13, 0x10, 0x00}
	h := newHost(t, hostOptions{settings: uplinkSettings(), holdDown: 200 * time.Millisecond, before: func(h *host) {
		hv := h.ns
		hv.Exec(t, "ip", "link", "set", "dev", netnstest.RigHostBridge, "type", "bridge", "vlan_filtering", "1")
		vlanPorts(t, hv, netnstest.RigHostUplink, []string{"100"})
		hv.Exec(t, "ip", "tuntap", "add", "dev", "tap100", "mode", "tap")
		hv.Attach(t, "tap100", netnstest.RigHostBridge)
		hv.Exec(t, "ip", "link", "set", "dev", "tap100", "up")
		vlanPorts(t, hv, "tap100", []string{"100", "pvid", "untagged"})
		netnstest.OpenTap(t, hv, "tap100")
		h.nicDomain(t, stateRunning, reasonBooted, libvirtfake.NIC{MAC: mac.String(), Bridge: netnstest.RigHostBridge, Target: "tap100"})
	}})
	h.waitRegistry(t, 1)
	hv := h.ns
	hv.Exec(t, "ip", "link", "set", "dev", netnstest.RigHostUplink, "nomaster")
	time.Sleep(300 * time.Millisecond)
	hv.Exec(t, "ip", "link", "set", "dev", netnstest.RigHostUplink, "master", netnstest.RigHostBridge)
	time.Sleep(50 * time.Millisecond)
	vlanPorts(t, hv, netnstest.RigHostUplink, []string{"100"})
	for _, s := range h.reannounced(t, mac, framesPerBurst, 5*time.Second) {
		if s.Interface != netnstest.RigHostUplink || s.VLAN.ID != 100 {
			t.Fatalf("re-announce frame on %s vlan %d, want %s vlan 100", s.Interface, s.VLAN.ID, netnstest.RigHostUplink)
		}
	}
}
