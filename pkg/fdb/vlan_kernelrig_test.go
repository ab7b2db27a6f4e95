//go:build kernelrig

package fdb

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/rarp-announce/rarp-announce/internal/netnstest"
)

// vlanLanded is the destination host on a VLAN-filtering bridge, run in the
// kernel rig (test/kernel): br0 (vlan_filtering 1) with the VM's tap vnet0
// on PVID 100 untagged and a trunk uplink carrying VLANs 100 and 200 to the
// switch's port swh.
func vlanLanded(t *testing.T) (host, sw *netnstest.NS, tap *netnstest.Tap) {
	t.Helper()
	netnstest.Require(t)
	host, sw = netnstest.New(t, "vhv"), netnstest.New(t, "vsw")
	host.VLANBridge(t, "br0")
	netnstest.Veth(t, host, "uplink", sw, "swh")
	host.Attach(t, "uplink", "br0")
	host.Exec(t, "ip", "tuntap", "add", "dev", vmPort, "mode", "tap")
	host.Attach(t, vmPort, "br0")
	host.Exec(t, "ip", "link", "set", "dev", vmPort, "up")
	for _, port := range []string{"uplink", vmPort} {
		host.Exec(t, "bridge", "vlan", "del", "dev", port, "vid", "1")
	}
	host.Exec(t, "bridge", "vlan", "add", "dev", vmPort, "vid", "100", "pvid", "untagged")
	host.Exec(t, "bridge", "vlan", "add", "dev", "uplink", "vid", "100")
	host.Exec(t, "bridge", "vlan", "add", "dev", "uplink", "vid", "200")
	tap = netnstest.OpenTap(t, host, vmPort)
	forwarding(t, host, vmPort)
	return host, sw, tap
}

// tagged builds a frame with an 802.1Q tag for vid, as a trunk carries it.
func tagged(dst, src string, vid uint16, marker byte) []byte {
	f := frame(dst, src, marker)
	return slices.Concat(f[:12], []byte{0x81, 0x00, byte(vid >> 8), byte(vid)}, f[12:])
}

// vmEntries returns the VLANs of br0's learned entries for the VM's MAC on
// port.
func vmEntries(t *testing.T, ns *netnstest.NS, port string) []int {
	t.Helper()
	neighs, err := ns.Netlink().NeighList(ns.Interface(t, port).Index, unix.AF_BRIDGE)
	if err != nil {
		t.Fatal(err)
	}
	var vids []int
	for _, n := range neighs {
		if bytes.Equal(n.HardwareAddr, vm[:]) && n.Flags&netlink.NTF_SELF == 0 &&
			n.State&(netlink.NUD_PERMANENT|netlink.NUD_NOARP) == 0 {
			vids = append(vids, n.Vlan)
		}
	}
	slices.Sort(vids)
	return vids
}

// TestRepairOnlyInTheVMPortsVLANs (issue 11 #7): the VM's MAC was learned
// on the uplink in VLAN 100 (the VM's, while it ran elsewhere) and in
// VLAN 200 (another broadcast domain); Repair removes only the VLAN 100
// entry, and traffic for the VM on VLAN 100 then reaches its tap. Both with
// the links by netlink and from a view (the agent's uplink.Resolver, which
// tells the bridge filters VLANs).
func TestRepairOnlyInTheVMPortsVLANs(t *testing.T) {
	for _, l := range []lookup{netlinkGet, {name: "view", view: true}} {
		t.Run(l.name, func(t *testing.T) { repairOnlyInTheVMPortsVLANs(t, l) })
	}
}

func repairOnlyInTheVMPortsVLANs(t *testing.T, l lookup) {
	host, sw, tap := vlanLanded(t)
	for _, vid := range []uint16{100, 200} {
		netnstest.Send(t, sw, "swh", tagged("ff:ff:ff:ff:ff:ff", vmMAC, vid, 0))
	}
	netnstest.Eventually(t, 2*time.Second, func() error {
		if got := vmEntries(t, host, "uplink"); !slices.Equal(got, []int{100, 200}) {
			return fmt.Errorf("br0 learned %s on the uplink in VLANs %v, want [100 200]", vmMAC, got)
		}
		return nil
	})
	toVM := func(marker byte) bool {
		f := tagged(vmMAC, clientMAC, 100, marker)
		netnstest.Send(t, sw, "swh", f)
		// The tap is VLAN 100's untagged egress: the tag is gone there.
		want := frame(vmMAC, clientMAC, marker)[:15]
		_, err := tap.Read(500*time.Millisecond, func(got []byte) bool { return bytes.Equal(got[:15], want) })
		if err != nil && !errors.Is(err, netnstest.ErrNoFrame) {
			t.Fatal(err)
		}
		return err == nil
	}
	if toVM(1) {
		t.Fatal("a frame for the VM on VLAN 100 reached its tap: no stale entry reproduced")
	}

	r := repairer(t, host, nil, l)
	// Without the VM's port there are no VLANs to repair in.
	if removed, err := r.Repair("br0", vm, ""); err != nil || len(removed) != 0 {
		t.Fatalf("without an own port: removed %+v, err %v; want nothing", removed, err)
	}
	removed, err := r.Repair("br0", vm, vmPort)
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 1 || removed[0].Port != "uplink" || removed[0].VLAN != 100 {
		t.Fatalf("removed %+v, want only the uplink entry in VLAN 100", removed)
	}
	if got := vmEntries(t, host, "uplink"); !slices.Equal(got, []int{200}) {
		t.Fatalf("entries left on the uplink in VLANs %v, want [200] (another VLAN's is not the VM's)", got)
	}
	if !toVM(2) {
		t.Fatal("after the repair, a frame for the VM on VLAN 100 did not reach its tap")
	}
}
