package ovs

import (
	"errors"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/rarp-announce/rarp-announce/internal/ovstest"
)

// Real ovs-vsctl 3.1 output for the lookup (ovstest's fixtures).
const (
	lookupAccess, lookupTrunk, lookupNative = ovstest.VsctlAccess, ovstest.VsctlTrunk, ovstest.VsctlNative
	lookupBroken, lookupUnassigned          = ovstest.VsctlBroken, ovstest.VsctlUnassigned
)

func TestParseLookup(t *testing.T) {
	for _, c := range []struct {
		name string
		in   string
		want Port
		mode string
		err  string
	}{
		{"access", lookupAccess, Port{Name: "vm0", Bridge: "ovsbr", OFPort: 1, Tag: 100, HasTag: true}, ModeAccess, ""},
		{"trunk", lookupTrunk, Port{Name: "vnet3", Bridge: "br-int", OFPort: 7, Trunks: []uint16{200, 300}, VLANMode: "trunk"}, ModeTrunk, ""},
		{"native, one trunk as a bare atom", lookupNative, Port{Name: "vnet4", Bridge: "br-int", OFPort: 8, Tag: 5, HasTag: true, Trunks: []uint16{100}, VLANMode: "native-untagged"}, ModeNativeUntagged, ""},
		{"device missing", lookupBroken, Port{Name: "nosuchdev", Bridge: "ovsbr", OFPort: -1, Error: "could not open network device nosuchdev (No such device)"}, ModeTrunk, ""},
		{"ofport not assigned yet", lookupUnassigned, Port{Name: "vnet9", Bridge: "ovsbr"}, ModeTrunk, ""},
		{"two lines", "ovsbr\n{}\n", Port{}, "", "want 3 lines"},
		{"empty bridge", " \n{}\n{}\n", Port{}, "", "empty bridge"},
		{"not json", "ovsbr\nnope\n{}\n", Port{}, "", "Port table"},
		{"two rows", "ovsbr\n" + `{"data":[["a",1,1,"trunk"],["b",1,1,"trunk"]],"headings":["name","tag","trunks","vlan_mode"]}` + "\n{}\n", Port{}, "", "2 rows"},
		{"missing column", "ovsbr\n" + `{"data":[["vm0",1,1]],"headings":["name","tag","trunks"]}` + "\n" + `{"data":[["vm0",1,["set",[]]]],"headings":["name","ofport","error"]}`, Port{}, "", "column vlan_mode missing"},
		{"values and headings differ", "ovsbr\n" + `{"data":[["vm0",1]],"headings":["name","tag","trunks","vlan_mode"]}` + "\n{}", Port{}, "", "2 values for 4 headings"},
		// tag 0 is a tag: OVS makes the port an access port on VLAN 0
		// (bridge.c), where a tagged frame would be dropped.
		{"tag 0", strings.Replace(lookupAccess, `"vm0",100,`, `"vm0",0,`, 1), Port{Name: "vm0", Bridge: "ovsbr", OFPort: 1, Tag: 0, HasTag: true}, ModeAccess, ""},
		{"tag out of range", strings.Replace(lookupAccess, `"vm0",100,`, `"vm0",5000,`, 1), Port{}, "", "tag 5000 out of range"},
		{"tag not a number", strings.Replace(lookupAccess, `"vm0",100,`, `"vm0","x",`, 1), Port{}, "", "not an integer"},
		{"trunk out of range", strings.Replace(lookupTrunk, "[200,300]", "[200,-1]", 1), Port{}, "", "trunk -1 out of range"},
		{"unknown vlan_mode", strings.Replace(lookupTrunk, `"trunk"]`, `"sideways"]`, 1), Port{}, "", `unknown vlan_mode "sideways"`},
		{"ofport out of range", strings.Replace(lookupAccess, `["vm0",1,`, `["vm0",65534,`, 1), Port{}, "", "ofport 65534 out of range"},
		{"interface of another name", strings.Replace(lookupAccess, `[["vm0",1,`, `[["vm1",1,`, 1), Port{}, "", `Interface "vm1" does not match`},
		{"uuid where a set is expected", strings.Replace(lookupAccess, `["set",[]],["set",[]]]]`, `["uuid","x"],["set",[]]]]`, 1), Port{}, "", "unexpected value"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := ParseLookup([]byte(c.in))
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) || !errors.Is(err, ErrCommand) {
					t.Fatalf("err %v, want one containing %q (ErrCommand)", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Name != c.want.Name || got.Bridge != c.want.Bridge || got.OFPort != c.want.OFPort || got.Tag != c.want.Tag ||
				!slices.Equal(got.Trunks, c.want.Trunks) || got.VLANMode != c.want.VLANMode || got.Error != c.want.Error {
				t.Fatalf("got %+v\nwant %+v", got, c.want)
			}
			if got.Mode() != c.mode {
				t.Fatalf("mode %q, want %q", got.Mode(), c.mode)
			}
		})
	}
}

func FuzzParseLookup(f *testing.F) {
	for _, s := range []string{lookupAccess, lookupTrunk, lookupNative, lookupBroken, lookupUnassigned, "a\n{}\n{}"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParseLookup(b)
		if err != nil {
			if !errors.Is(err, ErrCommand) {
				t.Fatalf("error %v is not ErrCommand", err)
			}
			return
		}
		// What parses is in range, whatever the input.
		if p.Bridge == "" || p.Tag > 4095 || p.OFPort > maxOFPort || p.OFPort < -1 {
			t.Fatalf("accepted %+v", p)
		}
		for _, v := range p.Trunks {
			if v > 4095 {
				t.Fatalf("accepted trunk %d", v)
			}
		}
	})
}

func TestVsctlErrorReasons(t *testing.T) {
	exit := &exec.ExitError{}
	for _, c := range []struct {
		err    error
		stderr string
		want   error
	}{
		{exit, "ovs-vsctl: unix:/run/openvswitch/db.sock: database connection failed (No such file or directory)\n", ErrNotRunning},
		{exit, "ovs-vsctl: no port named vnet9\n", ErrPortNotFound},
		{exit, `ovs-vsctl: no row "vnet9" in table Interface` + "\n", ErrPortNotFound},
		{exit, "ovs-vsctl: timeout expired\n", ErrTimeout},
		{exit, "ovs-vsctl: something else\n", ErrCommand},
		{exec.ErrNotFound, "", ErrCommand},
	} {
		got := vsctlError("vnet9", c.err, c.stderr)
		if !errors.Is(got, c.want) || !strings.Contains(got.Error(), "vnet9") {
			t.Errorf("%q: %v, want %v", c.stderr, got, c.want)
		}
	}
}
