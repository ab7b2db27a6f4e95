package ipsource

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

func TestParseStatic(t *testing.T) {
	good := `# NICs and their addresses
52:54:00:66:00:10  10.66.0.10  fd66::10

FA-16-3E-00-00-01 192.0.2.7 # trailing comment
`
	m, err := ParseStatic(strings.NewReader(good), "static.map")
	if err != nil {
		t.Fatal(err)
	}
	want := Static{
		rarp.MAC{0x52, 0x54, 0, 0x66, 0, 0x10}: {netip.MustParseAddr("10.66.0.10"), netip.MustParseAddr("fd66::10")},
		rarp.MAC{0xfa, 0x16, 0x3e, 0, 0, 1}:    {netip.MustParseAddr("192.0.2.7")},
	}
	if !reflect.DeepEqual(m, want) {
		t.Fatalf("got %v, want %v", m, want)
	}

	bad := []struct{ text, want string }{
		{"52:54:00:66:00:1g 10.0.0.1", `static.map:1: "52:54:00:66:00:1g": not a 48-bit MAC address`},
		{"\n\nff:ff:ff:ff:ff:ff 10.0.0.1", "static.map:3: ff:ff:ff:ff:ff:ff is the broadcast address, not a station"},
		{"01:00:5e:00:00:01 10.0.0.1", "static.map:1: 01:00:5e:00:00:01 is a multicast address, not a station"},
		{"52:54:00:00:00:01", "static.map:1: 52:54:00:00:00:01: no address"},
		{"52:54:00:00:00:01 10.0.0.300", `static.map:1: "10.0.0.300" is not an IPv4 or IPv6 address`},
		{"52:54:00:00:00:01 224.0.0.1", "static.map:1: ipannounce: address cannot be announced: 224.0.0.1 is not a unicast host address"},
		{"52:54:00:00:00:01 fe80::1%eth0", "static.map:1: ipannounce: address cannot be announced: fe80::1%eth0 has a zone"},
		{"52:54:00:00:00:01 10.0.0.1\n52:54:00:00:00:01 10.0.0.2", "static.map:2: 52:54:00:00:00:01 already listed on line 1"},
		{"52:54:00:00:00:01 10.0.0.1\n52:54:00:00:00:02 10.0.0.1", "static.map:2: 10.0.0.1 already belongs to 52:54:00:00:00:01 (line 1)"},
		{"52:54:00:00:00:01 10.0.0.1 10.0.0.1", "static.map:1: 10.0.0.1 listed twice"},
	}
	for _, c := range bad {
		_, err := ParseStatic(strings.NewReader(c.text), "static.map")
		if err == nil || err.Error() != c.want {
			t.Errorf("%q:\n got %v\nwant %s", c.text, err, c.want)
		}
	}
}

func TestLoadStatic(t *testing.T) {
	p := filepath.Join(t.TempDir(), "ips")
	if err := os.WriteFile(p, []byte("52:54:00:00:00:01 10.0.0.1\nbad\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadStatic(p)
	if err == nil || !strings.HasPrefix(err.Error(), p+":2: ") {
		t.Fatalf("err %v, want it to name %s:2", err, p)
	}
	if _, err := LoadStatic(p + ".missing"); err == nil {
		t.Fatal("missing file accepted")
	}
}

func FuzzParseStatic(f *testing.F) {
	f.Add("52:54:00:66:00:10  10.66.0.10  fd66::10\n# c\nfa:16:3e:00:00:01 192.0.2.7 # x\n")
	f.Add("52:54:00:00:00:01 10.0.0.1\n52:54:00:00:00:02 10.0.0.1")
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseStatic(strings.NewReader(s), "f")
		if err != nil {
			if !strings.HasPrefix(err.Error(), "f:") {
				t.Fatalf("error without file:line: %v", err)
			}
			return
		}
		owners := map[netip.Addr]bool{}
		for mac, ips := range m {
			if mac.ValidateUnicast() != nil || len(ips) == 0 {
				t.Fatalf("entry %s %v", mac, ips)
			}
			for _, ip := range ips {
				if owners[ip] {
					t.Fatalf("%s owned twice", ip)
				}
				owners[ip] = true
			}
		}
	})
}
