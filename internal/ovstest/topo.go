package ovstest

import (
	"encoding/binary"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// The names in a Topo: the OVS bridge and its ports, the switch bridge
// and its ports, the VM's MAC.
const (
	Bridge   = "ovsbr"
	VMPort   = "vm0"
	UpPort   = "up0"
	SwBridge = "sw0"
	SwToOVS  = "swh"
	SwToOld  = "swo"
	VMMAC    = "52:54:00:aa:bb:cc"
)

// VM is VMMAC.
var VM = rarp.MAC{0x52, 0x54, 0, 0xaa, 0xbb, 0xcc}

// Topo is a hypervisor running OVS with a VM port, uplinked to a switch
// that also reaches the host the VM came from:
//
//	VM: eth0 ── vm0 (tag 100) ┐
//	                         ovsbr (OVS, netdev) ── up0 (trunk) ── swh ┐
//	                                                                   sw0 (Linux bridge, the switch)
//	Old: o0 ────────────────────────────────────────────────────── swo ┘
type Topo struct {
	OVS                *OVS
	Hyp, VM, Sw, Old   *netnstest.NS
	VMPort, UplinkPort int // ofports
}

// NewTopo builds a Topo; vmPortSettings go to ovs-vsctl add-port for the
// VM's port (default tag=100).
func NewTopo(t testing.TB, vmPortSettings ...string) *Topo {
	t.Helper()
	netnstest.Require(t, append(slices.Clone(Tools), "tcpdump", "tshark")...)
	tp := &Topo{Hyp: netnstest.New(t, "hv"), VM: netnstest.New(t, "vm"), Sw: netnstest.New(t, "sw"), Old: netnstest.New(t, "old")}
	tp.OVS = Start(t, tp.Hyp)
	tp.OVS.AddBridge(t, Bridge)
	netnstest.Veth(t, tp.Hyp, VMPort, tp.VM, "eth0")
	netnstest.Veth(t, tp.Hyp, UpPort, tp.Sw, SwToOVS)
	netnstest.Veth(t, tp.Old, "o0", tp.Sw, SwToOld)
	tp.Sw.Bridge(t, SwBridge)
	tp.Sw.Attach(t, SwToOVS, SwBridge)
	tp.Sw.Attach(t, SwToOld, SwBridge)
	if len(vmPortSettings) == 0 {
		vmPortSettings = []string{"tag=100"}
	}
	tp.OVS.Vsctl(t, append([]string{"add-port", Bridge, VMPort}, vmPortSettings...)...)
	tp.OVS.Vsctl(t, "add-port", Bridge, UpPort)
	tp.VMPort, tp.UplinkPort = tp.OVS.OFPort(t, VMPort), tp.OVS.OFPort(t, UpPort)
	return tp
}

// LearnOnOld makes the switch learn the VM's MAC behind the old host, in
// VLAN 100, as while the VM ran there; the flood also teaches OVS the MAC
// on its uplink: the stale local entry of DESIGN-NOTES section 3.
func (tp *Topo) LearnOnOld(t *testing.T) {
	t.Helper()
	LearnTagged(t, tp.Old, "o0", VM, 100)
	if got := tp.Sw.WaitFDB(t, SwBridge, VMMAC, SwToOld, 2*time.Second); got != SwToOld {
		t.Fatalf("switch did not learn %s on %s (has %q)", VMMAC, SwToOld, got)
	}
	up := strconv.Itoa(tp.UplinkPort)
	if got := tp.OVS.WaitFDB(t, Bridge, VMMAC, up, 100, 2*time.Second); !slices.Contains(got, FDBEntry{Port: up, VLAN: 100, MAC: VMMAC}) {
		t.Fatalf("OVS did not learn %s on its uplink (port %s) in VLAN 100: %v", VMMAC, up, got)
	}
}

// LearnTagged sends one broadcast frame from mac tagged vlan out of dev
// in ns (this kernel has no 8021q module for VLAN devices).
func LearnTagged(t *testing.T, ns *netnstest.NS, dev string, mac rarp.MAC, vlan uint16) {
	t.Helper()
	frame := make([]byte, 64)
	copy(frame, rarp.Broadcast[:])
	copy(frame[6:], mac[:])
	binary.BigEndian.PutUint16(frame[12:], rarp.EtherTypeVLAN)
	binary.BigEndian.PutUint16(frame[14:], vlan)
	binary.BigEndian.PutUint16(frame[16:], 0x88b5) // local experimental: not RARP
	netnstest.Send(t, ns, dev, frame)
}

// Real ovs-vsctl 3.1 output for the ovs package's lookup (DB.Lookup), one
// case per shape OVSDB gives a column: empty set, bare atom, set; for a
// fake ovs-vsctl.
const (
	VsctlAccess = `ovsbr
{"data":[["vm0",100,["set",[]],["set",[]]]],"headings":["name","tag","trunks","vlan_mode"]}
{"data":[["vm0",1,["set",[]]]],"headings":["name","ofport","error"]}
`
	VsctlTrunk = `br-int
{"data":[["vnet3",["set",[]],["set",[200,300]],"trunk"]],"headings":["name","tag","trunks","vlan_mode"]}
{"data":[["vnet3",7,["set",[]]]],"headings":["name","ofport","error"]}
`
	VsctlNative = `br-int
{"data":[["vnet4",5,100,"native-untagged"]],"headings":["name","tag","trunks","vlan_mode"]}
{"data":[["vnet4",8,["set",[]]]],"headings":["name","ofport","error"]}
`
	VsctlBroken = `ovsbr
{"data":[["nosuchdev",["set",[]],["set",[]],["set",[]]]],"headings":["name","tag","trunks","vlan_mode"]}
{"data":[["nosuchdev",-1,"could not open network device nosuchdev (No such device)"]],"headings":["name","ofport","error"]}
`
	VsctlUnassigned = `ovsbr
{"data":[["vnet9",["set",[]],["set",[]],["set",[]]]],"headings":["name","tag","trunks","vlan_mode"]}
{"data":[["vnet9",["set",[]],["set",[]]]],"headings":["name","ofport","error"]}
`
)

// RARPRequests returns tshark's vlan.id|eth.src for every RARP request in
// a capture.
func RARPRequests(t *testing.T, path string) []string {
	t.Helper()
	var out []string
	for _, l := range netnstest.Tshark(t, path, "arp.opcode", "vlan.id", "eth.src") {
		if rest, ok := strings.CutPrefix(l, "3|"); ok {
			out = append(out, rest)
		}
	}
	return out
}
