package domxml

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// TestParseTestdata parses the live XML that TestLiveXML captured from a
// real libvirtd (testdata/*.xml) and checks every field.
func TestParseTestdata(t *testing.T) {
	ids := map[string]int{"bridge": 1, "network": 2, "direct": 3, "ethernet": 4, "ovs": 5, "vhostuser-hostdev": 2, "nova": 1}
	for _, c := range realCases {
		t.Run(c.name, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", c.name+".xml"))
			if err != nil {
				t.Fatal(err)
			}
			got, err := Parse(data)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got.ID != ids[c.name] {
				t.Errorf("ID = %d, want %d", got.ID, ids[c.name])
			}
			if g, w := maskGenerated(*got), maskGenerated(c.want); !reflect.DeepEqual(g, w) {
				t.Errorf("Parse(testdata/%s.xml):\n got %+v\nwant %+v", c.name, g, w)
			}
		})
	}
	// The generated ids themselves, which the comparison above masks.
	d := mustParseFile(t, "network.xml")
	if got := d.Interfaces[0].SourcePortID; got != "8884dd69-296f-4361-b22f-bbe31c4b344b" {
		t.Errorf("network portid = %q", got)
	}
	d = mustParseFile(t, "ovs.xml")
	if got := d.Interfaces[1].InterfaceID; got != "898e0e96-66f0-421b-8451-22ce251bf0bd" {
		t.Errorf("ovs generated interfaceid = %q", got)
	}
}

func mustParseFile(t *testing.T, name string) *Domain {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	d, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestNativeVLAN(t *testing.T) {
	d := mustParseFile(t, "ovs.xml")
	for i, want := range []uint16{42, 100} {
		if got := d.Interfaces[i].NativeVLAN(); got != want {
			t.Errorf("interface %d NativeVLAN = %d, want %d", i, got, want)
		}
	}
	if got := (Interface{VLANs: []VLANTag{{ID: 5}, {ID: 6}}, VLANTrunk: true}).NativeVLAN(); got != 0 {
		t.Errorf("trunk without native VLAN: NativeVLAN = %d, want 0", got)
	}
	if got := (Interface{}).NativeVLAN(); got != 0 {
		t.Errorf("no VLAN: NativeVLAN = %d, want 0", got)
	}
}

func domainWith(ifaces string) string {
	return `<domain type='kvm' id='7'><name>vm1</name><uuid>6C61622D766D40008000000000000001</uuid><devices>` + ifaces + `</devices></domain>`
}

func TestParse(t *testing.T) {
	good := `<interface type='bridge'><mac address='52:54:00:00:00:01'/><source bridge='br0'/><target dev='vnet0'/><alias name='net0'/></interface>`
	tests := []struct {
		name    string
		xml     string
		wantErr string // substring; "" = no error
		nIfc    int    // interfaces returned (also on interface errors)
	}{
		{"minimal", domainWith(good), "", 1},
		{"no devices", `<domain><name>a</name><uuid>6c61622d-766d-4000-8000-000000000001</uuid></domain>`, "", 0},
		{"leading comment and declaration", `<?xml version="1.0"?><!-- x -->` + domainWith(good), "", 1},
		{"not XML", `hello`, "domxml: EOF", 0},
		{"empty", ``, "domxml: EOF", 0},
		{"truncated", domainWith(good)[:60], "domxml: XML syntax error", 0},
		{"other root", `<network><name>n</name></network>`, "root element is not <domain>", 0},
		{"no name", `<domain><uuid>6c61622d-766d-4000-8000-000000000001</uuid></domain>`, "no <name>", 0},
		{"no uuid", `<domain><name>a</name></domain>`, "domain a: <uuid>", 0},
		{"bad uuid", `<domain><name>a</name><uuid>6c61622d-766d-4000-8000-00000000000g</uuid></domain>`, "not a UUID", 0},
		{"bad id", `<domain id='x'><name>a</name><uuid>6c61622d-766d-4000-8000-000000000001</uuid></domain>`, `id "x"`, 0},
		{"bad mac", domainWith(`<interface type='bridge'><mac address='52:54:00:zz:00:01'/><target dev='vnet3'/><alias name='net2'/></interface>`),
			`domain vm1: interface #0 bridge net2 vnet3: mac address: "52:54:00:zz:00:01": not a 48-bit MAC address`, 0},
		{"no mac", domainWith(`<interface type='network'><source network='default'/></interface>`), "interface #0 network: no <mac address>", 0},
		{"multicast mac", domainWith(`<interface type='bridge'><mac address='01:00:5e:00:00:01'/></interface>`), "multicast", 0},
		{"no type", domainWith(`<interface><mac address='52:54:00:00:00:01'/></interface>`), "no type attribute", 0},
		{"bad mac among good ones", domainWith(good + `<interface type='direct'><mac address='bad'/></interface>` + good), "interface #1 direct", 2},
		{"vlan id too big", domainWith(`<interface type='bridge'><mac address='52:54:00:00:00:01'/><vlan><tag id='4096'/></vlan></interface>`), "want 0-4095", 0},
		{"vlan id not a number", domainWith(`<interface type='bridge'><mac address='52:54:00:00:00:01'/><vlan><tag id='x'/></vlan></interface>`), `tag id="x"`, 0},
		{"vlan without tag", domainWith(`<interface type='bridge'><mac address='52:54:00:00:00:01'/><vlan/></interface>`), "without <tag>", 0},
		{"bad native mode", domainWith(`<interface type='bridge'><mac address='52:54:00:00:00:01'/><vlan trunk='yes'><tag id='1' nativeMode='both'/></vlan></interface>`), `nativeMode="both"`, 0},
		{"bad trunk", domainWith(`<interface type='bridge'><mac address='52:54:00:00:00:01'/><vlan trunk='maybe'><tag id='1'/></vlan></interface>`), `trunk="maybe"`, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := Parse([]byte(tt.xml))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
			} else if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Parse error = %v, want one containing %q", err, tt.wantErr)
			}
			n := 0
			if d != nil {
				n = len(d.Interfaces)
			}
			if n != tt.nIfc {
				t.Errorf("got %d interfaces, want %d", n, tt.nIfc)
			}
		})
	}
}

func TestParseInterfaceError(t *testing.T) {
	d, err := Parse([]byte(domainWith(`<interface type='bridge'><mac address='52:54:00:00:00:01'/></interface><interface type='direct'><mac address='ff:ff:ff:ff:ff:ff'/><target dev='macvtap0'/></interface>`)))
	var ie *InterfaceError
	if !errors.As(err, &ie) {
		t.Fatalf("error %v is not an *InterfaceError", err)
	}
	if ie.Domain != "vm1" || ie.Interface.Index != 1 || ie.Interface.Target != "macvtap0" || ie.Interface.MAC != rarp.Broadcast {
		t.Errorf("InterfaceError = %+v", ie)
	}
	if d == nil || len(d.Interfaces) != 1 || d.Interfaces[0].MAC.String() != "52:54:00:00:00:01" {
		t.Errorf("the valid interface is not returned: %+v", d)
	}
	if d.UUID != "6c61622d-766d-4000-8000-000000000001" || d.ID != 7 {
		t.Errorf("UUID/ID = %s/%d, want canonical lower case and 7", d.UUID, d.ID)
	}
}

func TestParseVLAN(t *testing.T) {
	d, err := Parse([]byte(domainWith(`<interface type='hostdev'><mac address='52:54:00:00:00:01'/><vlan><tag id='7'/><tag id='8' nativeMode='tagged'/></vlan></interface>`)))
	if err != nil {
		t.Fatal(err)
	}
	ifc := d.Interfaces[0]
	if !ifc.VLANTrunk {
		t.Error("two tags without trunk='yes' must be a trunk, as libvirt implies")
	}
	if want := []VLANTag{{ID: 7}, {ID: 8, NativeMode: "tagged"}}; !reflect.DeepEqual(ifc.VLANs, want) {
		t.Errorf("VLANs = %+v, want %+v", ifc.VLANs, want)
	}
	if ifc.NativeVLAN() != 8 {
		t.Errorf("NativeVLAN = %d, want 8", ifc.NativeVLAN())
	}
}

func TestCanonicalUUID(t *testing.T) {
	for in, want := range map[string]string{
		"6c61622d-766d-4000-8000-000000000001":  "6c61622d-766d-4000-8000-000000000001",
		"6C61622D766D40008000000000000001":      "6c61622d-766d-4000-8000-000000000001",
		"6c-61622d766d400080000000000000-01":    "6c61622d-766d-4000-8000-000000000001",
		"":                                      "",
		"6c61622d-766d-4000-8000-00000000000":   "",
		"6c61622d-766d-4000-8000-0000000000011": "",
		"6c61622d-766d-4000-8000-00000000000x":  "",
	} {
		got, err := CanonicalUUID(in)
		if want == "" {
			if err == nil {
				t.Errorf("CanonicalUUID(%q) = %q, want an error", in, got)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("CanonicalUUID(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if u, err := ParseUUID("6C61622D766D40008000000000000001"); err != nil || u[0] != 0x6c || u[15] != 1 {
		t.Errorf("ParseUUID = %x, %v", u, err)
	}
}

// FuzzParse: Parse never panics; whatever it accepts satisfies the
// invariants the agent relies on.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.xml"))
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(domainWith(`<interface type='bridge'><mac address='52:54:00:00:00:01'/><vlan trunk='yes'><tag id='1' nativeMode='untagged'/></vlan></interface>`)))
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := Parse(data)
		if d == nil {
			if err == nil {
				t.Fatal("nil Domain without an error")
			}
			return
		}
		if d.Name == "" {
			t.Fatal("Domain without a name")
		}
		if u, err := CanonicalUUID(d.UUID); err != nil || u != d.UUID {
			t.Fatalf("UUID %q is not canonical", d.UUID)
		}
		for _, ifc := range d.Interfaces {
			if ifc.Type == "" {
				t.Fatalf("interface %s has no type", ifc)
			}
			if e := ifc.MAC.ValidateUnicast(); e != nil {
				t.Fatalf("interface %s: %v", ifc, e)
			}
			for _, v := range ifc.VLANs {
				if v.ID > 4095 {
					t.Fatalf("VLAN %d", v.ID)
				}
			}
			if len(ifc.VLANs) > 1 && !ifc.VLANTrunk {
				t.Fatal("several VLANs but not a trunk")
			}
			ips, _, _ := d.NovaFixedIPs(ifc)
			for _, ip := range ips {
				if !ip.IsValid() || ip.Zone() != "" || ip.Is4In6() {
					t.Fatalf("nova IP %s", ip)
				}
			}
		}
	})
}
