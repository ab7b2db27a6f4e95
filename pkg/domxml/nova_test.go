package domxml

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestNovaFixedIPs(t *testing.T) {
	d := mustParseFile(t, "nova.xml")
	if len(d.NovaPorts) != 3 {
		t.Fatalf("%d nova ports, want 3", len(d.NovaPorts))
	}
	cases := []struct {
		nic     int
		want    []string
		found   bool
		wantErr string
	}{
		// OVS: matched by interfaceid; the floating IP is left out.
		{0, []string{"10.66.0.10", "fd66::10"}, true, ""},
		// Linux bridge: matched by tap name; the ipVersion mismatch and
		// the non-IP are reported, the good address still comes back.
		{1, []string{"192.0.2.20"}, true, `address 192.0.2.21 contradicts ipVersion "6"`},
		// No port names vnet7.
		{2, nil, false, ""},
	}
	for _, c := range cases {
		ifc := d.Interfaces[c.nic]
		ips, found, err := d.NovaFixedIPs(ifc)
		var got []string
		for _, ip := range ips {
			got = append(got, ip.String())
		}
		if !reflect.DeepEqual(got, c.want) || found != c.found {
			t.Errorf("%s: %v found=%v, want %v found=%v", ifc, got, found, c.want, c.found)
		}
		if c.wantErr == "" && err != nil {
			t.Errorf("%s: %v", ifc, err)
		}
		if c.wantErr != "" {
			if err == nil || !errors.Is(err, ErrNovaIP) || !strings.Contains(err.Error(), c.wantErr) || !strings.Contains(err.Error(), `"not-an-ip" is not an IP`) {
				t.Errorf("%s: err %v, want %q and the non-IP", ifc, err, c.wantErr)
			}
		}
	}
}

func TestNovaPortMatchesNIC(t *testing.T) {
	p := NovaPort{UUID: "A1B2C3D4-E5F6-4a7b-8c9d-0e1f2a3b4c5d"}
	cases := []struct {
		ifc  Interface
		want bool
	}{
		{Interface{InterfaceID: "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"}, true},
		{Interface{Target: "tapa1b2c3d4-e5"}, true},
		{Interface{Target: "tapa1b2c3d4-e6"}, false},
		{Interface{Target: "tapa1b2c3d4-e"}, false},
		{Interface{InterfaceID: "other", Target: "vnet0"}, false},
		{Interface{}, false},
	}
	for _, c := range cases {
		if got := p.MatchesNIC(c.ifc); got != c.want {
			t.Errorf("%+v: %v, want %v", c.ifc, got, c.want)
		}
	}
	if (NovaPort{}).MatchesNIC(Interface{Target: "tap"}) {
		t.Error("a port without uuid matched")
	}
}

func TestNoNovaMetadata(t *testing.T) {
	d := mustParseFile(t, "bridge.xml")
	if d.NovaPorts != nil {
		t.Fatalf("NovaPorts %+v without metadata", d.NovaPorts)
	}
	// Metadata in another namespace (ours, or another tool's) is not Nova's.
	x := `<domain><name>a</name><uuid>6c61622d-766d-4000-8000-000000000001</uuid><metadata>` +
		`<x:instance xmlns:x="urn:other"><x:ports><x:port uuid="a1b2c3d4-e5f6"><x:ip type="fixed" address="10.0.0.1" ipVersion="4"/></x:port></x:ports></x:instance>` +
		`</metadata></domain>`
	d2, err := Parse([]byte(x))
	if err != nil || d2.NovaPorts != nil {
		t.Fatalf("foreign metadata read as Nova's: %+v %v", d2.NovaPorts, err)
	}
}
