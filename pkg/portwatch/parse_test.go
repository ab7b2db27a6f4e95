package portwatch

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Builders for link messages as the kernel lays them out.

func ifinfo(family uint8, index int32, flags uint32, attrs ...[]byte) []byte {
	b := make([]byte, unix.SizeofIfInfomsg)
	b[0] = family
	binary.NativeEndian.PutUint32(b[4:], uint32(index))
	binary.NativeEndian.PutUint32(b[8:], flags)
	for _, a := range attrs {
		b = append(b, a...)
	}
	return b
}

func attr(typ uint16, v []byte) []byte {
	b := make([]byte, 4, 4+len(v)+3)
	binary.NativeEndian.PutUint16(b[0:], uint16(4+len(v)))
	binary.NativeEndian.PutUint16(b[2:], typ)
	b = append(b, v...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func nest(typ uint16, children ...[]byte) []byte {
	var v []byte
	for _, c := range children {
		v = append(v, c...)
	}
	return attr(typ|unix.NLA_F_NESTED, v)
}

func str(typ uint16, s string) []byte { return attr(typ, append([]byte(s), 0)) }

func u32a(typ uint16, n uint32) []byte {
	v := make([]byte, 4)
	binary.NativeEndian.PutUint32(v, n)
	return attr(typ, v)
}

func u8a(typ uint16, n uint8) []byte { return attr(typ, []byte{n}) }

const upLowerUp = unix.IFF_UP | unix.IFF_LOWER_UP | unix.IFF_BROADCAST | unix.IFF_MULTICAST

func TestParseLink(t *testing.T) {
	tests := []struct {
		name string
		typ  uint16
		data []byte
		want update
	}{
		{
			name: "tap on a bridge, forwarding (device message)",
			typ:  unix.RTM_NEWLINK,
			data: ifinfo(unix.AF_UNSPEC, 7, upLowerUp,
				str(unix.IFLA_IFNAME, "vnet0"), u32a(unix.IFLA_MASTER, 2), u8a(unix.IFLA_OPERSTATE, uint8(netlink.OperUnknown)),
				nest(unix.IFLA_LINKINFO, str(unix.IFLA_INFO_KIND, "tun"), str(unix.IFLA_INFO_SLAVE_KIND, "bridge"),
					nest(unix.IFLA_INFO_SLAVE_DATA, u8a(unix.IFLA_BRPORT_PRIORITY, 32), u8a(unix.IFLA_BRPORT_STATE, 3)))),
			want: update{index: 7, name: "vnet0", flags: upLowerUp, kind: "tun", slaveKind: "bridge", master: 2, hasMaster: true,
				oper: netlink.OperUnknown, hasOper: true, portState: PortForwarding, hasPortSt: true, hasLinkInf: true},
		},
		{
			name: "bridge's notice about its port, listening",
			typ:  unix.RTM_NEWLINK,
			data: ifinfo(unix.AF_BRIDGE, 7, upLowerUp,
				str(unix.IFLA_IFNAME, "vnet0"), u32a(unix.IFLA_MASTER, 2), u8a(unix.IFLA_OPERSTATE, uint8(netlink.OperUp)),
				nest(unix.IFLA_PROTINFO, u8a(unix.IFLA_BRPORT_STATE, 1), u8a(unix.IFLA_BRPORT_LEARNING, 1))),
			want: update{bridge: true, index: 7, name: "vnet0", flags: upLowerUp, master: 2, hasMaster: true,
				oper: netlink.OperUp, hasOper: true, portState: PortListening, hasPortSt: true},
		},
		{
			name: "protinfo without the nested flag",
			typ:  unix.RTM_NEWLINK,
			data: ifinfo(unix.AF_BRIDGE, 7, 0, attr(unix.IFLA_PROTINFO, u8a(unix.IFLA_BRPORT_STATE, 2))),
			want: update{bridge: true, index: 7, portState: PortLearning, hasPortSt: true},
		},
		{
			name: "bridge lets go of its port",
			typ:  unix.RTM_DELLINK,
			data: ifinfo(unix.AF_BRIDGE, 7, 0, str(unix.IFLA_IFNAME, "vnet0")),
			want: update{del: true, bridge: true, index: 7, name: "vnet0"},
		},
		{
			name: "device deleted",
			typ:  unix.RTM_DELLINK,
			data: ifinfo(unix.AF_UNSPEC, 9, 0, str(unix.IFLA_IFNAME, "vnet1")),
			want: update{del: true, index: 9, name: "vnet1"},
		},
		{
			name: "macvtap on its lower device",
			typ:  unix.RTM_NEWLINK,
			data: ifinfo(unix.AF_UNSPEC, 12, upLowerUp, str(unix.IFLA_IFNAME, "macvtap0"), u32a(unix.IFLA_LINK, 3),
				nest(unix.IFLA_LINKINFO, str(unix.IFLA_INFO_KIND, "macvtap"))),
			want: update{index: 12, name: "macvtap0", flags: upLowerUp, kind: "macvtap", parent: 3, hasLinkInf: true},
		},
		{
			name: "lower device in another namespace",
			typ:  unix.RTM_NEWLINK,
			data: ifinfo(unix.AF_UNSPEC, 12, 0, u32a(unix.IFLA_LINK, 3), u32a(unix.IFLA_LINK_NETNSID, 0)),
			want: update{index: 12, parent: 3, parentNS: true},
		},
		{
			name: "port state of a non-bridge master is not read",
			typ:  unix.RTM_NEWLINK,
			data: ifinfo(unix.AF_UNSPEC, 4, 0, nest(unix.IFLA_LINKINFO, str(unix.IFLA_INFO_SLAVE_KIND, "bond"),
				nest(unix.IFLA_INFO_SLAVE_DATA, u8a(1, 1)))),
			want: update{index: 4, slaveKind: "bond", hasLinkInf: true},
		},
		{
			name: "unknown attributes and a name without NUL",
			typ:  unix.RTM_NEWLINK,
			data: ifinfo(unix.AF_UNSPEC, 5, 0, attr(999, []byte{1, 2, 3}), attr(unix.IFLA_IFNAME, []byte("eth0"))),
			want: update{index: 5, name: "eth0"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseLink(tc.typ, tc.data)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestParseLinkErrors(t *testing.T) {
	tests := []struct {
		name string
		typ  uint16
		data []byte
		want string
	}{
		{"not a link message", unix.RTM_NEWADDR, ifinfo(unix.AF_UNSPEC, 1, 0), "message type"},
		{"short header", unix.RTM_NEWLINK, make([]byte, 15), "short ifinfomsg"},
		{"IPv6 family", unix.RTM_NEWLINK, ifinfo(unix.AF_INET6, 1, 0), "family 10"},
		{"zero index", unix.RTM_NEWLINK, ifinfo(unix.AF_UNSPEC, 0, 0), "interface index 0"},
		{"attribute longer than the message", unix.RTM_NEWLINK, append(ifinfo(unix.AF_UNSPEC, 1, 0), 200, 0, 3, 0), "length 200"},
		{"attribute shorter than its header", unix.RTM_NEWLINK, append(ifinfo(unix.AF_UNSPEC, 1, 0), 2, 0, 3, 0), "length 2"},
		{"short master", unix.RTM_NEWLINK, ifinfo(unix.AF_UNSPEC, 1, 0, attr(unix.IFLA_MASTER, []byte{1})), "malformed"},
		{"empty operstate", unix.RTM_NEWLINK, ifinfo(unix.AF_UNSPEC, 1, 0, attr(unix.IFLA_OPERSTATE, nil)), "malformed"},
		{"bad nested port state", unix.RTM_NEWLINK, ifinfo(unix.AF_BRIDGE, 1, 0, nest(unix.IFLA_PROTINFO, attr(unix.IFLA_BRPORT_STATE, nil))), "malformed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseLink(tc.typ, tc.data)
			if !errors.Is(err, errMalformed) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want errMalformed mentioning %q", err, tc.want)
			}
		})
	}
}

// FuzzParseLink: no input makes the parser panic, and what it accepts is
// a positive-index link message of one of the two families.
func FuzzParseLink(f *testing.F) {
	f.Add(uint16(unix.RTM_NEWLINK), ifinfo(unix.AF_UNSPEC, 7, upLowerUp, str(unix.IFLA_IFNAME, "vnet0"), u32a(unix.IFLA_MASTER, 2),
		nest(unix.IFLA_LINKINFO, str(unix.IFLA_INFO_KIND, "tun"), str(unix.IFLA_INFO_SLAVE_KIND, "bridge"),
			nest(unix.IFLA_INFO_SLAVE_DATA, u8a(unix.IFLA_BRPORT_STATE, 3)))))
	f.Add(uint16(unix.RTM_NEWLINK), ifinfo(unix.AF_BRIDGE, 7, 0, nest(unix.IFLA_PROTINFO, u8a(unix.IFLA_BRPORT_STATE, 1))))
	f.Add(uint16(unix.RTM_DELLINK), ifinfo(unix.AF_UNSPEC, 3, 0))
	f.Fuzz(func(t *testing.T, typ uint16, data []byte) {
		u, err := parseLink(typ, data)
		if err != nil {
			return
		}
		if u.index <= 0 || (typ != unix.RTM_NEWLINK && typ != unix.RTM_DELLINK) {
			t.Fatalf("accepted %+v from type %d", u, typ)
		}
		if u.bridge != (data[0] == unix.AF_BRIDGE) {
			t.Fatalf("family %d parsed as bridge=%v", data[0], u.bridge)
		}
	})
}

func TestMissing(t *testing.T) {
	ready := State{Name: "vnet0", Index: 7, Kind: "tun", Master: "br0", MasterIndex: 2, AdminUp: true, Carrier: true,
		OperState: netlink.OperUp, BridgePort: true, PortState: PortForwarding}
	with := func(f func(*State)) State { s := ready; f(&s); return s }
	macvtap := State{Name: "macvtap0", Index: 9, Kind: "macvtap", Lower: "eth0", LowerIndex: 3, AdminUp: true, Carrier: true,
		OperState: netlink.OperUp}
	tests := []struct {
		name   string
		s      State
		master string
		want   Condition
		why    string
	}{
		{"ready", ready, "br0", None, "ready"},
		{"ready, any master", ready, "", None, "ready"},
		{"operstate unknown (libvirt's tap) is up", with(func(s *State) { s.OperState = netlink.OperUnknown }), "br0", None, "ready"},
		{"does not exist", State{}, "br0", Exists, "does not exist"},
		{"no master", with(func(s *State) { s.Master, s.MasterIndex, s.BridgePort = "", 0, false }), "br0", Attached, "not attached to br0 (master none)"},
		{"other bridge", with(func(s *State) { s.Master = "br1" }), "br0", Attached, "not attached to br0 (master br1)"},
		{"admin down", with(func(s *State) { s.AdminUp, s.Carrier, s.OperState = false, false, netlink.OperDown }), "br0", Up,
			"not up (admin down, no carrier, operstate down)"},
		{"tap nobody holds", with(func(s *State) { s.Carrier, s.OperState, s.PortState = false, netlink.OperDown, PortDisabled }), "br0", Up,
			"not up (no carrier, operstate down)"},
		{"dormant", with(func(s *State) { s.OperState = netlink.OperDormant }), "br0", Up, "not up (operstate dormant)"},
		{"STP listening", with(func(s *State) { s.PortState = PortListening }), "br0", Forwarding, "bridge port listening on br0, not forwarding"},
		{"STP learning", with(func(s *State) { s.PortState = PortLearning }), "", Forwarding, "bridge port learning on br0, not forwarding"},
		{"not a bridge port: no STP", with(func(s *State) { s.BridgePort, s.PortState, s.Master = false, PortDisabled, "ovs-system" }), "ovs-system", None, "ready"},
		{"macvtap on its lower device", macvtap, "eth0", None, "ready"},
		{"macvtap, no master asked", macvtap, "", None, "ready"},
		{"macvtap on another device", macvtap, "eth1", Attached, "not attached to eth1 (master none, lower device eth0)"},
		{"a veth's peer is not its master", State{Name: "v0", Index: 4, Kind: "veth", Lower: "br0", LowerIndex: 5, AdminUp: true,
			Carrier: true, OperState: netlink.OperUp}, "br0", Attached, "not attached to br0 (master none)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.s.Missing(tc.master); got != tc.want {
				t.Fatalf("Missing(%q) = %v, want %v", tc.master, got, tc.want)
			}
			if got := tc.s.Why(tc.master); got != tc.why {
				t.Fatalf("Why(%q) = %q, want %q", tc.master, got, tc.why)
			}
		})
	}
}

func TestCauseString(t *testing.T) {
	for c, want := range map[Cause]string{
		0:                               "none",
		CauseReattached:                 "reattached",
		CauseRestarted | CauseRecreated: "restarted+recreated",
		CauseResync | CauseReattached:   "reattached+resync",
		CauseReattached | CauseRestarted | CauseRecreated | CauseResync: "reattached+restarted+recreated+resync",
	} {
		if got := c.String(); got != want {
			t.Errorf("Cause(%d) = %q, want %q", c, got, want)
		}
	}
}
