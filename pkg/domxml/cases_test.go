package domxml

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// realCase is a domain booted under a real libvirtd by TestLiveXML, whose
// live XML is kept in testdata/<name>.xml and parsed by TestParseTestdata.
type realCase struct {
	name    string
	driver  string // "qemu" (real QEMU, TCG) or "test" (libvirt's test driver, for NICs QEMU cannot start here)
	devices string // the <interface> elements of the definition
	// metadata, if set, is the content of the definition's <metadata>.
	metadata string
	want     Domain // as in testdata; TestLiveXML compares it with Target, portid, interfaceid and id masked
}

const uuidPrefix = "6c61622d-766d-4000-8000-0000000000"

// definition is the XML the case's domain is created from: 64 MiB, no disk,
// booting iPXE as a kernel (it idles), as in shared/lab/lab-up.sh.
func (c realCase) definition() string {
	dtype, os := "qemu", `<type arch='x86_64' machine='pc'>hvm</type>
    <kernel>/boot/ipxe.lkrn</kernel>
    <cmdline>sleep 2000000000</cmdline>`
	emulator := "<emulator>/usr/bin/qemu-system-x86_64</emulator>"
	if c.driver == "test" {
		dtype, os, emulator = "test", `<type arch='x86_64'>hvm</type>`, ""
	}
	return fmt.Sprintf(`<domain type='%s'>
  <name>%s</name>
  <uuid>%s</uuid>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os>
    %s
  </os>
  <devices>
    %s
    %s
    <memballoon model='none'/>
  </devices>
</domain>
`, dtype, c.want.Name, c.want.UUID, os, emulator, c.devices)
}

// definitionXML is definition with the case's <metadata>, if any.
func (c realCase) definitionXML() string {
	d := c.definition()
	if c.metadata == "" {
		return d
	}
	return strings.Replace(d, "</uuid>", "</uuid>\n  <metadata>"+c.metadata+"</metadata>", 1)
}

var realCases = []realCase{
	{
		name:   "bridge",
		driver: "qemu",
		devices: `<interface type='bridge'><source bridge='br0'/><mac address='52:54:00:00:01:01'/><model type='virtio'/></interface>
    <interface type='bridge'><source bridge='br0'/><mac address='52:54:00:00:01:02'/><model type='e1000'/></interface>`,
		want: Domain{Name: "xml-bridge", UUID: uuidPrefix + "01", Interfaces: []Interface{
			{Index: 0, Type: "bridge", MAC: rarp.MustParseMAC("52:54:00:00:01:01"), Target: "vnet0", Alias: "net0", SourceBridge: "br0", Model: "virtio"},
			{Index: 1, Type: "bridge", MAC: rarp.MustParseMAC("52:54:00:00:01:02"), Target: "vnet1", Alias: "net1", SourceBridge: "br0", Model: "e1000"},
		}},
	},
	{
		// A libvirt network in forward mode bridge: the live XML shows
		// the actual type (bridge) and keeps the network's name.
		name:    "network",
		driver:  "qemu",
		devices: `<interface type='network'><source network='lan'/><mac address='52:54:00:00:02:01'/><model type='virtio'/></interface>`,
		want: Domain{Name: "xml-network", UUID: uuidPrefix + "02", Interfaces: []Interface{
			{Index: 0, Type: "bridge", MAC: rarp.MustParseMAC("52:54:00:00:02:01"), Target: "vnet2", Alias: "net0", SourceBridge: "br0",
				SourceNetwork: "lan", SourcePortID: "set", Model: "virtio"},
		}},
	},
	{
		name:   "direct",
		driver: "qemu",
		devices: `<interface type='direct'><source dev='lower0' mode='bridge'/><mac address='52:54:00:00:03:01'/><model type='virtio'/></interface>
    <interface type='direct'><source dev='lower0' mode='vepa'/><mac address='52:54:00:00:03:02'/><model type='virtio'/></interface>`,
		want: Domain{Name: "xml-direct", UUID: uuidPrefix + "03", Interfaces: []Interface{
			{Index: 0, Type: "direct", MAC: rarp.MustParseMAC("52:54:00:00:03:01"), Target: "macvtap0", Alias: "net0", SourceDev: "lower0", SourceMode: "bridge", Model: "virtio"},
			{Index: 1, Type: "direct", MAC: rarp.MustParseMAC("52:54:00:00:03:02"), Target: "macvtap1", Alias: "net1", SourceDev: "lower0", SourceMode: "vepa", Model: "virtio"},
		}},
	},
	{
		name:   "ethernet",
		driver: "qemu",
		devices: `<interface type='ethernet'><mac address='52:54:00:00:04:01'/><model type='virtio'/></interface>
    <interface type='user'><mac address='52:54:00:00:04:02'/><model type='rtl8139'/></interface>`,
		want: Domain{Name: "xml-ethernet", UUID: uuidPrefix + "04", Interfaces: []Interface{
			{Index: 0, Type: "ethernet", MAC: rarp.MustParseMAC("52:54:00:00:04:01"), Target: "vnet3", Alias: "net0", Model: "virtio"},
			{Index: 1, Type: "user", MAC: rarp.MustParseMAC("52:54:00:00:04:02"), Alias: "net1", Model: "rtl8139"},
		}},
	},
	{
		// Open vSwitch: an access port on VLAN 42 with a given
		// interfaceid (as Neutron sets it), and a trunk with a native
		// untagged VLAN whose interfaceid libvirt generates.
		name:   "ovs",
		driver: "qemu",
		devices: `<interface type='bridge'><source bridge='ovsbr0'/><mac address='52:54:00:00:05:01'/><virtualport type='openvswitch'><parameters interfaceid='09b11c53-8b5c-4eeb-8f00-d84eaa0aaa4f'/></virtualport><vlan><tag id='42'/></vlan><model type='virtio'/></interface>
    <interface type='bridge'><source bridge='ovsbr0'/><mac address='52:54:00:00:05:02'/><virtualport type='openvswitch'/><vlan trunk='yes'><tag id='42'/><tag id='100' nativeMode='untagged'/><tag id='200'/></vlan><model type='virtio'/></interface>`,
		want: Domain{Name: "xml-ovs", UUID: uuidPrefix + "05", Interfaces: []Interface{
			{Index: 0, Type: "bridge", MAC: rarp.MustParseMAC("52:54:00:00:05:01"), Target: "vnet4", Alias: "net0", SourceBridge: "ovsbr0", Model: "virtio",
				VLANs: []VLANTag{{ID: 42}}, VirtualPort: "openvswitch", InterfaceID: "09b11c53-8b5c-4eeb-8f00-d84eaa0aaa4f"},
			{Index: 1, Type: "bridge", MAC: rarp.MustParseMAC("52:54:00:00:05:02"), Target: "vnet5", Alias: "net1", SourceBridge: "ovsbr0", Model: "virtio",
				VLANs: []VLANTag{{ID: 42}, {ID: 100, NativeMode: "untagged"}, {ID: 200}}, VLANTrunk: true,
				VirtualPort: "openvswitch", InterfaceID: "set"},
		}},
	},
	{
		// vhost-user and hostdev cannot be started here (no DPDK switch,
		// no SR-IOV NIC); libvirt's test driver formats them with the same
		// code as the QEMU driver (and names targets testnetN).
		name:   "vhostuser-hostdev",
		driver: "test",
		devices: `<interface type='vhostuser'><mac address='52:54:00:00:06:01'/><source type='unix' path='/run/vhost0.sock' mode='server'/><model type='virtio'/></interface>
    <interface type='hostdev' managed='yes'><mac address='52:54:00:00:06:02'/><source><address type='pci' domain='0x0000' bus='0x03' slot='0x07' function='0x1'/></source><vlan><tag id='42'/></vlan></interface>`,
		want: Domain{Name: "xml-vhostuser-hostdev", UUID: uuidPrefix + "06", Interfaces: []Interface{
			{Index: 0, Type: "vhostuser", MAC: rarp.MustParseMAC("52:54:00:00:06:01"), Target: "testnet0", SourcePath: "/run/vhost0.sock", SourceMode: "server", Model: "virtio"},
			{Index: 1, Type: "hostdev", MAC: rarp.MustParseMAC("52:54:00:00:06:02"), Target: "testnet1", VLANs: []VLANTag{{ID: 42}}},
		}},
	},
	{
		// Nova's metadata: libvirt keeps <metadata> as given. NICs as
		// Nova plugs them: OVS with the port id as interfaceid, a Linux
		// bridge tap named tap + 11 characters of the port id, and one
		// without a port. QEMU driver: a real tap, with Nova's name.
		name:     "nova",
		driver:   "qemu",
		metadata: novaMetadata,
		devices: `<interface type='bridge'><source bridge='ovsbr0'/><mac address='fa:16:3e:66:00:10'/><virtualport type='openvswitch'><parameters interfaceid='a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d'/></virtualport><target dev='tapa1b2c3d4-e5'/><model type='virtio'/></interface>
    <interface type='bridge'><source bridge='br0'/><mac address='fa:16:3e:66:00:20'/><target dev='tap0d9c8b7a-6f'/><model type='virtio'/></interface>
    <interface type='bridge'><source bridge='br0'/><mac address='fa:16:3e:66:00:30'/><model type='virtio'/></interface>`,
		want: Domain{Name: "xml-nova", UUID: uuidPrefix + "07", NovaPorts: novaPorts, Interfaces: []Interface{
			{Index: 0, Type: "bridge", MAC: rarp.MustParseMAC("fa:16:3e:66:00:10"), Target: "tapa1b2c3d4-e5", Alias: "net0", SourceBridge: "ovsbr0", Model: "virtio",
				VirtualPort: "openvswitch", InterfaceID: "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"},
			{Index: 1, Type: "bridge", MAC: rarp.MustParseMAC("fa:16:3e:66:00:20"), Target: "tap0d9c8b7a-6f", Alias: "net1", SourceBridge: "br0", Model: "virtio"},
			{Index: 2, Type: "bridge", MAC: rarp.MustParseMAC("fa:16:3e:66:00:30"), Target: "vnet0", Alias: "net2", SourceBridge: "br0", Model: "virtio"},
		}},
	},
}

// novaMetadata is what Nova's LibvirtConfigGuestMetaNova* classes write,
// with a floating IP and two bad entries (an ipVersion that contradicts the
// address, a non-IP) that NovaFixedIPs must report and skip.
const novaMetadata = `
    <nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.1">
      <nova:package version="27.1.0"/>
      <nova:name>web-1</nova:name>
      <nova:flavor name="m1.small"><nova:memory>64</nova:memory><nova:vcpus>1</nova:vcpus></nova:flavor>
      <nova:ports>
        <nova:port uuid="a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d">
          <nova:ip type="fixed" address="10.66.0.10" ipVersion="4"/>
          <nova:ip type="fixed" address="fd66::10" ipVersion="6"/>
          <nova:ip type="floating" address="203.0.113.7" ipVersion="4"/>
        </nova:port>
        <nova:port uuid="0d9c8b7a-6f5e-4d3c-b2a1-9f8e7d6c5b4a">
          <nova:ip type="fixed" address="192.0.2.20" ipVersion="4"/>
          <nova:ip type="fixed" address="192.0.2.21" ipVersion="6"/>
          <nova:ip type="fixed" address="not-an-ip" ipVersion="4"/>
        </nova:port>
        <nova:port uuid="77777777-0000-4000-8000-000000000000">
          <nova:ip type="fixed" address="198.51.100.5" ipVersion="4"/>
        </nova:port>
      </nova:ports>
    </nova:instance>
  `

var novaPorts = []NovaPort{
	{UUID: "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d", IPs: []NovaIP{{"fixed", "10.66.0.10", "4"}, {"fixed", "fd66::10", "6"}, {"floating", "203.0.113.7", "4"}}},
	{UUID: "0d9c8b7a-6f5e-4d3c-b2a1-9f8e7d6c5b4a", IPs: []NovaIP{{"fixed", "192.0.2.20", "4"}, {"fixed", "192.0.2.21", "6"}, {"fixed", "not-an-ip", "4"}}},
	{UUID: "77777777-0000-4000-8000-000000000000", IPs: []NovaIP{{"fixed", "198.51.100.5", "4"}}},
}

var digits = regexp.MustCompile(`[0-9]+$`)

// maskGenerated replaces the UUIDs libvirt generates (network port ids,
// Open vSwitch interface ids) and the domain id by placeholders.
func maskGenerated(d Domain) Domain { return mask(d, false) }

// maskBoot also masks device numbers, which depend on what ran before.
func maskBoot(d Domain) Domain { return mask(d, true) }

func mask(d Domain, targets bool) Domain {
	d.ID = 0
	ifcs := make([]Interface, len(d.Interfaces))
	for i, ifc := range d.Interfaces {
		if targets {
			ifc.Target = digits.ReplaceAllString(ifc.Target, "N")
		}
		if ifc.SourcePortID != "" {
			ifc.SourcePortID = "set"
		}
		if ifc.InterfaceID != "" && ifc.InterfaceID != "09b11c53-8b5c-4eeb-8f00-d84eaa0aaa4f" {
			ifc.InterfaceID = "set"
		}
		ifcs[i] = ifc
	}
	d.Interfaces = ifcs
	return d
}
