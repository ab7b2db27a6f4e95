package libvirtfake

import (
	"fmt"
	"testing"

	"github.com/rarp-announce/rarp-announce/pkg/domxml"
)

// LiveXML's NICs read back through the agent's own parser as they were
// given: the tests that build domains from NIC values rely on it.
func TestLiveXMLReadsBack(t *testing.T) {
	nics := []NIC{
		{MAC: "52:54:00:00:00:01", Target: "vnet0"},
		{Type: "network", MAC: "52:54:00:00:00:02", Network: "default", Bridge: "virbr0", Target: "vnet1"},
		{Type: "direct", MAC: "52:54:00:00:00:03", Source: "eth0", Target: "macvtap0"},
		{MAC: "52:54:00:00:00:04", Bridge: "br-int", OVS: true, InterfaceID: "0b6a6e46-3c39-4bd1-9bbe-3b0a4d3a6a8d", Target: "tap0b6a6e46-3c"},
		{MAC: "52:54:00:00:00:05", Bridge: "br-ex", OVS: true},
	}
	d, err := domxml.Parse([]byte(LiveXML("vm1", TestUUID(1), 7, nics...)))
	if err != nil {
		t.Fatal(err)
	}
	if d.Name != "vm1" || d.UUID != TestUUID(1) || d.ID != 7 || len(d.Interfaces) != len(nics) {
		t.Fatalf("domain %s %s id %d with %d NICs", d.Name, d.UUID, d.ID, len(d.Interfaces))
	}
	// The fields LiveXML writes (domxml.Interface's String would hide
	// most of them in a failure).
	type view struct {
		Index                                                int
		Type, MAC, Alias, Model, Target                      string
		Bridge, Network, Dev, Mode, VirtualPort, InterfaceID string
	}
	want := []view{
		{Type: "bridge", Bridge: "br0", Target: "vnet0"},
		{Type: "network", Network: "default", Bridge: "virbr0", Target: "vnet1"},
		{Type: "direct", Dev: "eth0", Mode: "bridge", Target: "macvtap0"},
		{Type: "bridge", Bridge: "br-int", VirtualPort: "openvswitch", InterfaceID: "0b6a6e46-3c39-4bd1-9bbe-3b0a4d3a6a8d", Target: "tap0b6a6e46-3c"},
		{Type: "bridge", Bridge: "br-ex", VirtualPort: "openvswitch"},
	}
	for i, g := range d.Interfaces {
		got := view{g.Index, g.Type, g.MAC.String(), g.Alias, g.Model, g.Target,
			g.SourceBridge, g.SourceNetwork, g.SourceDev, g.SourceMode, g.VirtualPort, g.InterfaceID}
		w := want[i]
		w.Index, w.MAC, w.Alias, w.Model = i, nics[i].MAC, fmt.Sprintf("net%d", i), "virtio"
		if got != w {
			t.Errorf("NIC %d reads back as\n%+v, want\n%+v", i, got, w)
		}
	}
}
