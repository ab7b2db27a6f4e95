package plan

import (
	"reflect"
	"strings"
	"testing"

	"github.com/rarp-announce/rarp-announce/pkg/domxml"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

var defaults = Options{
	Strategies: Strategies{KindBridge: Host, KindNetwork: Host, KindDirect: Host, KindOpenVSwitch: OVS, KindVhostUser: QEMU, KindEthernet: Skip},
	RepairFDB:  true,
}

var vm = rarp.MAC{0x52, 0x54, 0, 0xaa, 0xbb, 0xcc}

func TestPlan(t *testing.T) {
	untagged := []rarp.VLAN{{}}
	cases := []struct {
		name string
		nic  domxml.Interface
		o    Options
		want Target
	}{
		{"bridge: send on the bridge, repair, wait for the tap",
			domxml.Interface{Type: "bridge", MAC: vm, Target: "vnet0", Alias: "net0", SourceBridge: "br0"}, defaults,
			Target{Kind: KindBridge, Strategy: Host, Device: "br0", Master: "br0", Port: "vnet0", RepairFDB: true, VLANs: untagged}},
		{"bridge without fdb repair",
			domxml.Interface{Type: "bridge", MAC: vm, Target: "vnet0", SourceBridge: "br0"}, Options{Strategies: defaults.Strategies},
			Target{Kind: KindBridge, Strategy: Host, Device: "br0", Master: "br0", Port: "vnet0", VLANs: untagged}},
		{"network on a bridge",
			domxml.Interface{Type: "network", MAC: vm, Target: "vnet3", SourceNetwork: "default", SourceBridge: "virbr0"}, defaults,
			Target{Kind: KindNetwork, Strategy: Host, Device: "virbr0", Master: "virbr0", Port: "vnet3", RepairFDB: true, VLANs: untagged}},
		{"network as the live XML shows it: bridge with a source network",
			domxml.Interface{Type: "bridge", MAC: vm, Target: "vnet4", SourceNetwork: "default", SourceBridge: "virbr0"}, defaults,
			Target{Kind: KindNetwork, Strategy: Host, Device: "virbr0", Master: "virbr0", Port: "vnet4", RepairFDB: true, VLANs: untagged}},
		{"network of macvtaps is direct",
			domxml.Interface{Type: "network", MAC: vm, Target: "macvtap0", SourceNetwork: "mv", SourceDev: "eth0", SourceMode: "bridge"}, defaults,
			Target{Kind: KindDirect, Strategy: Host, Device: "macvtap0", Port: "macvtap0", VLANs: untagged}},
		{"direct: send on the macvtap",
			domxml.Interface{Type: "direct", MAC: vm, Target: "macvtap1", SourceDev: "eth0", SourceMode: "bridge"}, defaults,
			Target{Kind: KindDirect, Strategy: Host, Device: "macvtap1", Port: "macvtap1", VLANs: untagged}},
		{"never the tap: a bridge NIC without a bridge is skipped",
			domxml.Interface{Type: "bridge", MAC: vm, Target: "vnet0"}, defaults,
			Target{Kind: KindBridge, Strategy: Skip, Skip: "no bridge in the live XML's <source>"}},
		{"openvswitch: ovs on its port with the XML tag",
			domxml.Interface{Type: "bridge", MAC: vm, Target: "vnet5", SourceBridge: "br-int", VirtualPort: "openvswitch", VLANs: []domxml.VLANTag{{ID: 42}}}, defaults,
			Target{Kind: KindOpenVSwitch, Strategy: OVS, Port: "vnet5", VLANs: []rarp.VLAN{{ID: 42}}}},
		{"vhostuser: qemu by alias",
			domxml.Interface{Type: "vhostuser", MAC: vm, Alias: "net1"}, defaults,
			Target{Kind: KindVhostUser, Strategy: QEMU, Alias: "net1"}},
		{"vhostuser without alias",
			domxml.Interface{Type: "vhostuser", MAC: vm}, defaults,
			Target{Kind: KindVhostUser, Strategy: Skip, Skip: "qemu strategy needs the NIC's alias, which the live XML lacks"}},
		{"hostdev is never announced",
			domxml.Interface{Type: "hostdev", MAC: vm}, Options{Strategies: defaults.Strategies, Force: QEMU},
			Target{Kind: KindHostdev, Strategy: Skip, Skip: never[KindHostdev]}},
		{"ethernet skipped by default",
			domxml.Interface{Type: "ethernet", MAC: vm, Target: "tap0", Alias: "net0"}, defaults,
			Target{Kind: KindEthernet, Strategy: Skip, Skip: "strategy for ethernet NICs is skip"}},
		{"forced qemu on a bridge",
			domxml.Interface{Type: "bridge", MAC: vm, Target: "vnet0", Alias: "net0", SourceBridge: "br0"}, Options{Strategies: defaults.Strategies, Force: QEMU},
			Target{Kind: KindBridge, Strategy: QEMU, Alias: "net0"}},
		{"forced ovs on a bridge is refused",
			domxml.Interface{Type: "bridge", MAC: vm, Target: "vnet0", SourceBridge: "br0"}, Options{Strategies: defaults.Strategies, Force: OVS},
			Target{Kind: KindBridge, Strategy: Skip, Skip: "strategy ovs cannot announce a bridge NIC"}},
		{"multicast MAC is never announced",
			domxml.Interface{Type: "bridge", MAC: rarp.MAC{1, 0, 0x5e, 0, 0, 1}, Target: "vnet0", SourceBridge: "br0"}, defaults,
			Target{Kind: KindBridge, Strategy: Skip, Skip: "MAC 01:00:5e:00:00:01 is a multicast address, not a station"}},
		{"user networking has no port",
			domxml.Interface{Type: "user", MAC: vm}, defaults,
			Target{Kind: KindOther, Strategy: Skip, Skip: never[KindOther]}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := Plan(&domxml.Domain{Interfaces: []domxml.Interface{c.nic}}, c.o)
			c.want.NIC = c.nic
			if len(got) != 1 || !reflect.DeepEqual(got[0], c.want) {
				t.Fatalf("\n got %+v\nwant %+v", got, c.want)
			}
			if s := got[0].String(); !strings.Contains(s, vm.String()) && c.nic.MAC == vm {
				t.Fatalf("String() = %q", s)
			}
		})
	}
}

func TestVLANs(t *testing.T) {
	cases := []struct {
		tags []domxml.VLANTag
		want []rarp.VLAN
	}{
		{nil, []rarp.VLAN{{}}},
		{[]domxml.VLANTag{{ID: 42}}, []rarp.VLAN{{ID: 42}}},
		{[]domxml.VLANTag{{ID: 42}, {ID: 47}}, []rarp.VLAN{{ID: 42}, {ID: 47}}},
		{[]domxml.VLANTag{{ID: 42, NativeMode: "untagged"}, {ID: 47}}, []rarp.VLAN{{}, {ID: 47}}},
		{[]domxml.VLANTag{{ID: 42, NativeMode: "tagged"}, {ID: 47}}, []rarp.VLAN{{ID: 42}, {ID: 47}}},
		{[]domxml.VLANTag{{ID: 0}, {ID: 5000}}, []rarp.VLAN{{}}},
	}
	for _, c := range cases {
		if got := vlans(domxml.Interface{VLANs: c.tags}); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%v: got %v, want %v", c.tags, got, c.want)
		}
	}
}
