package uplink

import (
	"errors"
	"reflect"
	"testing"

	"github.com/vishvananda/netlink/nl"

	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// topo builds a table: br0 (index 1) with the given VLAN filtering, a VM
// tap vnet0 (2) and the extra links given.
func topo(filtering bool, vmVLANs []PortVLAN, extra ...*Link) table {
	t := table{
		1: {Port: Port{1, "br0"}, Kind: "bridge", AdminUp: true, Carrier: true, VLANFiltering: filtering, BondMode: BondNone},
		2: {Port: Port{2, "vnet0"}, Kind: "tuntap", Master: 1, AdminUp: true, Carrier: true, VLANs: vmVLANs, VLANsKnown: true},
		3: {Port: Port{3, "vnet1"}, Kind: "tuntap", Master: 1, AdminUp: true, Carrier: true, VLANsKnown: true},
	}
	for _, l := range extra {
		t[l.Index] = l
	}
	return t
}

func port(idx int, name, kind string, vlans ...PortVLAN) *Link {
	return &Link{Port: Port{idx, name}, Kind: kind, Master: 1, AdminUp: true, Carrier: true, VLANs: vlans, VLANsKnown: true}
}

func TestResolve(t *testing.T) {
	pvid100 := []PortVLAN{{ID: 100, PVID: true, Untagged: true}}
	down := port(10, "eth0", "device")
	down.Carrier = false
	tests := []struct {
		name    string
		t       table
		bridge  string
		xml     []rarp.VLAN
		want    []Target
		noUp    NoUplinkReason
		fallbck FallbackReason
	}{
		{name: "plain bridge, one NIC", t: topo(false, nil, port(10, "eth0", "device")),
			want: []Target{{Uplink: Port{10, "eth0"}}}},
		{name: "plain bridge, two uplinks, in index order", t: topo(false, nil, port(11, "vxlan0", "vxlan"), port(10, "bond0", "bond")),
			want: []Target{{Uplink: Port{10, "bond0"}}, {Uplink: Port{11, "vxlan0"}}}},
		{name: "isolated", t: topo(false, nil), noUp: Isolated},
		{name: "uplink down", t: topo(false, nil, down), noUp: UplinksDown},
		{name: "unknown bridge", t: topo(false, nil), bridge: "br9", fallbck: NotABridge},
		{name: "pvid 100, trunk uplink", t: topo(true, pvid100, port(10, "eth0", "device", PortVLAN{ID: 1, PVID: true, Untagged: true}, PortVLAN{ID: 100}, PortVLAN{ID: 200})),
			want: []Target{{Uplink: Port{10, "eth0"}, VLAN: rarp.VLAN{ID: 100}}}},
		{name: "pvid 100, uplink carries 100 untagged", t: topo(true, pvid100, port(10, "eth0", "device", PortVLAN{ID: 100, PVID: true, Untagged: true})),
			want: []Target{{Uplink: Port{10, "eth0"}}}},
		{name: "pvid 100, one of two uplinks carries it", t: topo(true, pvid100, port(10, "eth0", "device", PortVLAN{ID: 200}), port(11, "eth1", "device", PortVLAN{ID: 100})),
			want: []Target{{Uplink: Port{11, "eth1"}, VLAN: rarp.VLAN{ID: 100}}}},
		{name: "pvid 100 not carried", t: topo(true, pvid100, port(10, "eth0", "device", PortVLAN{ID: 200})), noUp: VLANNotCarried},
		{name: "no pvid: the guest tags, every VLAN of the port", t: topo(true, []PortVLAN{{ID: 300}, {ID: 301}}, port(10, "eth0", "device", PortVLAN{ID: 300}, PortVLAN{ID: 301})),
			want: []Target{{Uplink: Port{10, "eth0"}, VLAN: rarp.VLAN{ID: 300}}, {Uplink: Port{10, "eth0"}, VLAN: rarp.VLAN{ID: 301}}}},
		{name: "port in no VLAN", t: topo(true, nil, port(10, "eth0", "device", PortVLAN{ID: 100})), noUp: PortWithoutVLAN},
		{name: "XML VLAN overrides the table", t: topo(true, pvid100, port(10, "eth0", "device", PortVLAN{ID: 100}, PortVLAN{ID: 200})),
			xml: []rarp.VLAN{{ID: 200, Priority: 5}}, want: []Target{{Uplink: Port{10, "eth0"}, VLAN: rarp.VLAN{ID: 200, Priority: 5}}}},
		{name: "XML VLAN on a plain bridge: tagged on a NIC, untagged on a VLAN sub-interface",
			t: topo(false, nil, port(10, "eth0", "device"), port(11, "eth1.100", "vlan")), xml: []rarp.VLAN{{ID: 100}},
			want: []Target{{Uplink: Port{10, "eth0"}, VLAN: rarp.VLAN{ID: 100}}, {Uplink: Port{11, "eth1.100"}}}},
		{name: "VLAN sub-interface uplink on a plain bridge", t: topo(false, nil, port(10, "eth0.100", "vlan")),
			want: []Target{{Uplink: Port{10, "eth0.100"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			br := tt.bridge
			if br == "" {
				br = "br0"
			}
			got, err := tt.t.resolve(br, "vnet0", tt.xml, DefaultIsVMPort)
			var nu *NoUplinkError
			var fb *FallbackError
			switch {
			case tt.noUp != 0:
				if !errors.As(err, &nu) || nu.Reason != tt.noUp || !errors.Is(err, ErrNoUplink) {
					t.Fatalf("got %v, %v; want no uplink: %s", got, err, tt.noUp)
				}
			case tt.fallbck != 0:
				if !errors.As(err, &fb) || fb.Reason != tt.fallbck || !errors.Is(err, ErrFallback) {
					t.Fatalf("got %v, %v; want fallback: %s", got, err, tt.fallbck)
				}
			default:
				if err != nil || !reflect.DeepEqual(got, tt.want) {
					t.Fatalf("got %v, %v; want %v", got, err, tt.want)
				}
			}
		})
	}
}

func TestResolveNotAPort(t *testing.T) {
	tb := topo(false, nil, port(10, "eth0", "device"))
	tb[2].Master = 0
	_, err := tb.resolve("br0", "vnet0", nil, DefaultIsVMPort)
	var fb *FallbackError
	if !errors.As(err, &fb) || fb.Reason != NotAPort {
		t.Fatalf("got %v, want fallback not_a_port", err)
	}
}

func vlanInfo(vid, flags uint16) []byte {
	a := nl.NewRtAttr(nl.IFLA_BRIDGE_VLAN_INFO, (&nl.BridgeVlanInfo{Flags: flags, Vid: vid}).Serialize())
	return a.Serialize()
}

func TestVLANsFromCompressed(t *testing.T) {
	var spec []byte
	spec = append(spec, vlanInfo(1, nl.BRIDGE_VLAN_INFO_PVID|nl.BRIDGE_VLAN_INFO_UNTAGGED)...)
	spec = append(spec, vlanInfo(10, nl.BRIDGE_VLAN_INFO_RANGE_BEGIN)...)
	spec = append(spec, vlanInfo(12, nl.BRIDGE_VLAN_INFO_RANGE_END)...)
	got, err := vlansFrom(spec)
	want := []PortVLAN{{ID: 1, PVID: true, Untagged: true}, {ID: 10}, {ID: 11}, {ID: 12}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, %v; want %v", got, err, want)
	}
	if _, err := vlansFrom(vlanInfo(12, nl.BRIDGE_VLAN_INFO_RANGE_END)); err == nil {
		t.Fatal("a range end without begin was accepted")
	}
}

func FuzzVLANsFrom(f *testing.F) {
	f.Add(vlanInfo(100, nl.BRIDGE_VLAN_INFO_PVID))
	f.Add(append(vlanInfo(10, nl.BRIDGE_VLAN_INFO_RANGE_BEGIN), vlanInfo(4094, nl.BRIDGE_VLAN_INFO_RANGE_END)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		vs, err := vlansFrom(b)
		if err == nil && len(vs) > 4096*len(b) {
			t.Fatalf("%d VLANs from %d bytes", len(vs), len(b))
		}
	})
}
