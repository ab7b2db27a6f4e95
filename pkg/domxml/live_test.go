package domxml

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/rarp-announce/rarp-announce/internal/libvirtdtest"
	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

var update = flag.Bool("update", false, "TestLiveXML: rewrite testdata/*.xml with the live XML it reads")

// TestLiveXML boots each realCase as a real domain (QEMU under a real
// libvirtd in a network namespace with a Linux bridge, a libvirt network, a
// veth for macvtap and an Open vSwitch), reads its live XML with virsh
// dumpxml (virDomainGetXMLDesc, flags 0) and checks what Parse makes of it.
// With -update it also writes the XML to testdata/ (how testdata was made).
func TestLiveXML(t *testing.T) {
	libvirtdtest.RequireQEMU(t)
	libvirtdtest.RequireOVS(t)
	ns := netnstest.New(t, "domxml")
	ns.Bridge(t, "br0")
	ns.Exec(t, "ip", "link", "add", "lower0", "type", "veth", "peer", "name", "lower1")
	ns.Exec(t, "ip", "link", "set", "lower0", "up")
	ns.Exec(t, "ip", "link", "set", "lower1", "up")
	ovs := libvirtdtest.StartOVS(t, ns.Name)
	ovs.AddBridge(t, "ovsbr0")
	d := libvirtdtest.Start(t, libvirtdtest.Options{NetNS: ns.Name, OVSRunDir: ovs.RunDir})

	netXML := libvirtdtest.XMLFile(t, "lan.xml", "<network><name>lan</name><forward mode='bridge'/><bridge name='br0'/></network>\n")
	d.Virsh(t, d.URI("qemu"), "net-create "+netXML)

	for _, c := range realCases {
		t.Run(c.name, func(t *testing.T) {
			def := libvirtdtest.XMLFile(t, c.name+".xml", c.definitionXML())
			// create + dumpxml in one connection: the test driver's state
			// lives only as long as a connection to it.
			out := d.Virsh(t, d.URI(c.driver), "create "+def, "dumpxml "+c.want.Name)
			live := out[strings.Index(out, "<domain"):]
			got, err := Parse([]byte(live))
			if err != nil {
				t.Fatalf("Parse(live XML): %v\n%s", err, live)
			}
			if got.ID < 1 {
				t.Errorf("live XML has domain id %d, want >= 1", got.ID)
			}
			for _, ifc := range got.Interfaces {
				if ifc.Type != "user" && ifc.Target == "" {
					t.Errorf("interface %s: live XML has no <target dev>", ifc)
				}
			}
			if g, w := maskBoot(*got), maskBoot(c.want); !reflect.DeepEqual(g, w) {
				t.Errorf("Parse(live XML of %s):\n got %+v\nwant %+v\n%s", c.name, g, w, live)
			}
			if c.name == "nova" {
				checkCarriedAddresses(t, d, c, got)
			}
			if *update {
				note := "<!-- " + c.name + ": live XML (virsh dumpxml) of a domain created by TestLiveXML under libvirt 9.0 (" + c.driver + " driver); regenerate with: go test ./pkg/domxml -run TestLiveXML -update -->\n"
				if err := os.WriteFile(filepath.Join("testdata", c.name+".xml"), []byte(note+live), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// checkCarriedAddresses sets our <metadata> element on the running domain
// the way the agent would (virDomainSetMetadata, live) and reads it back
// from the live XML: libvirt keeps it in our namespace, next to Nova's.
func checkCarriedAddresses(t *testing.T, d *libvirtdtest.Daemon, c realCase, before *Domain) {
	t.Helper()
	seen := time.Date(2026, 12, 7, 17, 0, 0, 0, time.UTC)
	want := map[rarp.MAC][]Address{before.Interfaces[2].MAC: {{IP: netip.MustParseAddr("10.66.0.30"), Seen: seen}, {IP: netip.MustParseAddr("fd66::30")}}}
	out := d.Virsh(t, d.URI(c.driver),
		"metadata "+c.want.Name+" "+AddressesNamespace+" --key "+AddressesKey+" --set '"+string(MarshalAddresses(want))+"' --live",
		"dumpxml "+c.want.Name)
	live := out[strings.Index(out, "<domain"):]
	after, err := Parse([]byte(live))
	if err != nil {
		t.Fatal(err)
	}
	got, err := after.CarriedAddresses()
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("carried addresses after virsh metadata --set: %v, %v\n%s", got, err, live)
	}
	if !reflect.DeepEqual(after.NovaPorts, before.NovaPorts) {
		t.Fatalf("Nova's metadata changed: %+v", after.NovaPorts)
	}
	t.Logf("our metadata in the live XML: %s", live[strings.Index(live, "<"+AddressesKey+":addresses"):strings.Index(live, "</"+AddressesKey+":addresses>")])
}
