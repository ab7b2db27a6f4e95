package fdb

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// Stale is tested here on entries this kernel cannot create (VLANs,
// offloaded or locked-port entries); the namespace tests cover real ones.
func TestStaleSelection(t *testing.T) {
	const br, uplink, tap, other = 2, 3, 4, 9
	vm := rarp.MAC{0x52, 0x54, 0, 0x12, 0x34, 0x56}
	hw := vm.HardwareAddr()
	learned := func(port int) netlink.Neigh {
		return netlink.Neigh{Family: unix.AF_BRIDGE, LinkIndex: port, MasterIndex: br,
			HardwareAddr: hw, State: netlink.NUD_REACHABLE}
	}
	with := func(n netlink.Neigh, f func(*netlink.Neigh)) netlink.Neigh { f(&n); return n }
	tests := []struct {
		name  string
		neigh netlink.Neigh
		own   int
		want  bool
	}{
		{"learned on the uplink", learned(uplink), tap, true},
		{"learned, aged (stale)", with(learned(uplink), func(n *netlink.Neigh) { n.State = netlink.NUD_STALE }), tap, true},
		{"learned with a VLAN", with(learned(uplink), func(n *netlink.Neigh) { n.Vlan = 100 }), tap, true},
		{"offloaded to hardware", with(learned(uplink), func(n *netlink.Neigh) { n.Flags = netlink.NTF_OFFLOADED }), tap, true},
		{"no own port given", learned(tap), 0, true},
		{"on the VM's own port", learned(tap), tap, false},
		{"on the VM's own port with a VLAN", with(learned(tap), func(n *netlink.Neigh) { n.Vlan = 100 }), tap, false},
		{"another bridge", with(learned(uplink), func(n *netlink.Neigh) { n.MasterIndex = other }), tap, false},
		{"no master (a port's own table)", with(learned(uplink), func(n *netlink.Neigh) { n.MasterIndex = 0 }), tap, false},
		{"another MAC", with(learned(uplink), func(n *netlink.Neigh) { n.HardwareAddr = net.HardwareAddr{0x52, 0x54, 0, 0x12, 0x34, 0x57} }), tap, false},
		{"permanent (local)", with(learned(uplink), func(n *netlink.Neigh) { n.State = netlink.NUD_PERMANENT }), tap, false},
		{"static", with(learned(uplink), func(n *netlink.Neigh) { n.State = netlink.NUD_NOARP }), tap, false},
		{"NTF_SELF", with(learned(uplink), func(n *netlink.Neigh) { n.Flags = netlink.NTF_SELF }), tap, false},
		{"externally learned", with(learned(uplink), func(n *netlink.Neigh) { n.Flags = netlink.NTF_EXT_LEARNED }), tap, false},
		{"sticky", with(learned(uplink), func(n *netlink.Neigh) { n.Flags = netlink.NTF_STICKY }), tap, false},
		{"locked port", with(learned(uplink), func(n *netlink.Neigh) { n.FlagsExt = ntfExtLocked }), tap, false},
		{"on the bridge device", learned(br), tap, false},
		{"no port", learned(0), tap, false},
		{"not AF_BRIDGE", with(learned(uplink), func(n *netlink.Neigh) { n.Family = unix.AF_INET }), tap, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Stale([]netlink.Neigh{tc.neigh}, br, tc.own, vm)
			if (len(got) == 1) != tc.want {
				t.Fatalf("selected %d entries, want selected=%v", len(got), tc.want)
			}
			if tc.want && (got[0].Vlan != tc.neigh.Vlan || got[0].LinkIndex != tc.neigh.LinkIndex) {
				t.Fatalf("selected %+v, want the entry itself %+v", got[0], tc.neigh)
			}
		})
	}
}

// Several entries for one MAC (one per VLAN on a VLAN-filtering bridge) are
// each selected with their own VLAN, so each is deleted exactly.
func TestStaleKeepsEachVLAN(t *testing.T) {
	vm := rarp.MAC{0x52, 0x54, 0, 0x12, 0x34, 0x56}
	var neighs []netlink.Neigh
	for _, vid := range []int{0, 10, 20} {
		neighs = append(neighs, netlink.Neigh{Family: unix.AF_BRIDGE, LinkIndex: 3, MasterIndex: 2,
			HardwareAddr: vm.HardwareAddr(), State: netlink.NUD_REACHABLE, Vlan: vid})
	}
	got := Stale(neighs, 2, 4, vm)
	if len(got) != 3 {
		t.Fatalf("selected %d, want 3", len(got))
	}
	for i, vid := range []int{0, 10, 20} {
		if got[i].Vlan != vid {
			t.Fatalf("entry %d has VLAN %d, want %d", i, got[i].Vlan, vid)
		}
	}
}

func TestFailureReason(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("x: %w", ErrPermission), ReasonPermission},
		{fmt.Errorf("x: %w", ErrNoBridge), ReasonNoBridge},
		{fmt.Errorf("x: %w", ErrNotBridge), ReasonNoBridge},
		{errors.New("boom"), ReasonNetlink},
	} {
		if got := FailureReason(tc.err); got != tc.want {
			t.Errorf("FailureReason(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

// On a VLAN-filtering bridge Repair keeps only the entries in the VM port's
// VLANs; the real bridge is in the kernel rig (vlan_kernelrig_test.go).
func TestInVLANs(t *testing.T) {
	var neighs []netlink.Neigh
	for _, vid := range []int{0, 100, 200, 300} {
		neighs = append(neighs, netlink.Neigh{Family: unix.AF_BRIDGE, LinkIndex: 3, Vlan: vid})
	}
	vids := func(ns []netlink.Neigh) (out []int) {
		for _, n := range ns {
			out = append(out, n.Vlan)
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		vlans []uint16
		want  []int
	}{
		{"the port's one VLAN", []uint16{100}, []int{100}},
		{"a trunk port's VLANs", []uint16{300, 100}, []int{100, 300}},
		{"a VLAN no entry has", []uint16{400}, nil},
		{"no port VLANs (no own port)", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := vids(InVLANs(neighs, tc.vlans)); !slices.Equal(got, tc.want) {
				t.Fatalf("kept VLANs %v, want %v", got, tc.want)
			}
		})
	}
}
