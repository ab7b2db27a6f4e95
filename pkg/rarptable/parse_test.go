package rarptable

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// parseClean parses in with parse (parseEthers, parseMap) as file name,
// failing on any problem.
func parseClean(t *testing.T, parse func(string, []byte, *problems) []record, name, in string) []record {
	t.Helper()
	var p problems
	recs := parse(name, []byte(in), &p)
	if err := p.err(); err != nil {
		t.Fatal(err)
	}
	return recs
}

// sameRecords compares parsed records with the expected ones, in order.
func sameRecords(t *testing.T, recs, want []record) {
	t.Helper()
	if len(recs) != len(want) {
		t.Fatalf("got %d records %+v, want %d", len(recs), recs, len(want))
	}
	for i := range want {
		if recs[i] != want[i] {
			t.Errorf("record %d = %+v, want %+v", i, recs[i], want[i])
		}
	}
}

func TestParseEthers(t *testing.T) {
	in := strings.Join([]string{
		"# comment line",
		"",
		"52:54:00:00:00:01 10.99.0.1",
		"  52:54:00:00:00:02\t10.99.0.2   # trailing comment",
		"0:1:2:a:B:c 192.0.2.3",      // glibc accepts one hex digit per group
		"52-54-00-00-00-04 pxe-host", // net.ParseMAC form, host name
		"5254.0000.0005 192.0.2.5\r", // dot form, CRLF line end
		"52:54:00:00:00:06 host_6.example.org",
	}, "\n")
	recs := parseClean(t, parseEthers, "ethers", in)
	want := []record{
		{mac: rarp.MustParseMAC("52:54:00:00:00:01"), ip: [4]byte{10, 99, 0, 1}, line: 3},
		{mac: rarp.MustParseMAC("52:54:00:00:00:02"), ip: [4]byte{10, 99, 0, 2}, line: 4},
		{mac: rarp.MustParseMAC("00:01:02:0a:0b:0c"), ip: [4]byte{192, 0, 2, 3}, line: 5},
		{mac: rarp.MustParseMAC("52:54:00:00:00:04"), host: "pxe-host", line: 6},
		{mac: rarp.MustParseMAC("52:54:00:00:00:05"), ip: [4]byte{192, 0, 2, 5}, line: 7},
		{mac: rarp.MustParseMAC("52:54:00:00:00:06"), host: "host_6.example.org", line: 8},
	}
	sameRecords(t, recs, want)
}

func TestParseEthersProblems(t *testing.T) {
	cases := []struct {
		line string
		want string // substring of the reason
	}{
		{"52:54:00:00:00", "is not a MAC address"},
		{"52:54:00:00:00:01:02 10.0.0.1", "is not a MAC address"},
		{"52:54:00:00:00:001 10.0.0.1", "is not a MAC address"},
		{"zz:54:00:00:00:01 10.0.0.1", "is not a MAC address"},
		{"52:54:00:00:00:01", "has no IPv4 address or host name"},
		{"52:54:00:00:00:01 10.0.0.1 extra", `unexpected "extra"`},
		{"52:54:00:00:00:01 2001:db8::1", "IPv6 address"},
		{"52:54:00:00:00:01 10.0.0.256", "is not an IPv4 address"},
		{"52:54:00:00:00:01 010.0.0.1", "is not an IPv4 address"},
		{"52:54:00:00:00:01 10.1", "is not an IPv4 address"},
		{"52:54:00:00:00:01 bad/host", "neither an IPv4 address nor a host name"},
		{"ff:ff:ff:ff:ff:ff 10.0.0.1", "broadcast"},
		{"01:00:5e:00:00:01 10.0.0.1", "multicast"},
		{"00:00:00:00:00:00 10.0.0.1", "all-zero"},
	}
	for _, c := range cases {
		t.Run(c.line, func(t *testing.T) {
			var p problems
			recs := parseEthers("/etc/ethers", []byte("# header\n"+c.line+"\n"), &p)
			err := p.err()
			var le *LoadError
			if !errors.As(err, &le) || len(le.Problems) != 1 {
				t.Fatalf("got %v (records %v), want one problem", err, recs)
			}
			pr := le.Problems[0]
			if pr.File != "/etc/ethers" || pr.Line != 2 || !strings.Contains(pr.Reason, c.want) {
				t.Fatalf("problem %q, want /etc/ethers:2: ...%s...", pr, c.want)
			}
			if !strings.HasPrefix(err.Error(), "/etc/ethers:2: ") {
				t.Fatalf("error %q does not start with file:line", err)
			}
		})
	}
}

func TestLoadErrorListsAllProblemsBounded(t *testing.T) {
	var b strings.Builder
	for i := 0; i < 1500; i++ {
		fmt.Fprintf(&b, "not-a-mac %d\n", i)
	}
	var p problems
	parseEthers("big", []byte(b.String()), &p)
	err := p.err()
	var le *LoadError
	if !errors.As(err, &le) {
		t.Fatal(err)
	}
	if len(le.Problems) != maxKept+1 || !strings.Contains(le.Problems[maxKept].Reason, "500 further problems") {
		t.Fatalf("kept %d problems, last %q", len(le.Problems), le.Problems[len(le.Problems)-1])
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "1001 problems:\n  big:1: ") || !strings.Contains(msg, "... and 981 more") {
		t.Fatalf("message:\n%s", msg)
	}
	if n := strings.Count(msg, "\n"); n != maxListed+1 {
		t.Fatalf("message has %d lines, want %d", n+1, maxListed+2)
	}
}

func TestParseMap(t *testing.T) {
	in := `# rarp-announce mappings
mappings:
  - mac: 52:54:00:00:00:01
    ip: 10.99.0.1
  - mac: "52:54:00:00:00:02"
    host: pxe-2
    interface: br0.100
  - {mac: 52-54-00-00-00-03, ip: 192.0.2.3}
`
	recs := parseClean(t, parseMap, "map.yaml", in)
	want := []record{
		{mac: rarp.MustParseMAC("52:54:00:00:00:01"), ip: [4]byte{10, 99, 0, 1}, line: 3},
		{mac: rarp.MustParseMAC("52:54:00:00:00:02"), host: "pxe-2", iface: "br0.100", line: 5},
		{mac: rarp.MustParseMAC("52:54:00:00:00:03"), ip: [4]byte{192, 0, 2, 3}, line: 8},
	}
	sameRecords(t, recs, want)
	for _, empty := range []string{"", "# nothing\n", "mappings:\n", "mappings: []\n"} {
		var p problems
		if recs := parseMap("m", []byte(empty), &p); len(recs) != 0 || p.err() != nil {
			t.Errorf("%q: got %v, %v; want no mappings and no error", empty, recs, p.err())
		}
	}
}

func TestParseMapProblems(t *testing.T) {
	cases := []struct {
		name, in string
		line     int
		want     string
	}{
		{"unknown top key", "mapping:\n  - mac: 52:54:00:00:00:01\n", 1, `unknown key "mapping"`},
		{"unknown item key", "mappings:\n  - mac: 52:54:00:00:00:01\n    ip: 10.0.0.1\n    interfce: br0\n", 4, `unknown key "interfce"`},
		{"no mac", "mappings:\n  - ip: 10.0.0.1\n", 2, "has no mac"},
		{"bad mac", "mappings:\n  - mac: 52:54:00\n    ip: 10.0.0.1\n", 2, "is not a MAC address"},
		{"neither", "mappings:\n  - mac: 52:54:00:00:00:01\n", 2, "neither ip nor host"},
		{"both", "mappings:\n  - mac: 52:54:00:00:00:01\n    ip: 10.0.0.1\n    host: h\n", 4, "both ip and host"},
		{"ipv6", "mappings:\n  - mac: 52:54:00:00:00:01\n    ip: 2001:db8::1\n", 3, "IPv4 addresses only"},
		{"name as ip", "mappings:\n  - mac: 52:54:00:00:00:01\n    ip: pxe-1\n", 3, "use host:"},
		{"bad iface", "mappings:\n  - mac: 52:54:00:00:00:01\n    ip: 10.0.0.1\n    interface: a-very-long-interface\n", 4, "longer than 15"},
		{"list value", "mappings:\n  - mac: [1, 2]\n    ip: 10.0.0.1\n", 2, "expected a value"},
		{"dup key", "mappings:\n  - mac: 52:54:00:00:00:01\n    ip: 10.0.0.1\n    ip: 10.0.0.2\n", 4, "given twice"},
		{"not a list", "mappings:\n  mac: 52:54:00:00:00:01\n", 2, "expected a list"},
		{"item not a map", "mappings:\n  - 52:54:00:00:00:01\n", 2, "must be a set of keys"},
		{"top is a list", "- mac: 52:54:00:00:00:01\n", 1, "expected a mapping"},
		{"syntax", "mappings:\n  - mac: 52:54:00:00:00:01\n    ip: 10.0.0.1: x\n", 3, "YAML: mapping values are not allowed"},
		{"mappings twice", "mappings:\n  - mac: 52:54:00:00:00:01\n    ip: 10.0.0.1\nmappings:\n  - mac: 52:54:00:00:00:02\n    ip: 10.0.0.2\n", 4, `key "mappings" given twice (first on line 1)`},
		{"second document", "mappings:\n  - mac: 52:54:00:00:00:01\n    ip: 10.0.0.1\n---\nmappings: []\n", 4, "a second YAML document"},
		{"tab indent", "mappings:\n\t- mac: 52:54:00:00:00:01\n", 2, "YAML:"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var p problems
			parseMap("map.yaml", []byte(c.in), &p)
			err := p.err()
			var le *LoadError
			if !errors.As(err, &le) {
				t.Fatalf("no error for\n%s", c.in)
			}
			pr := le.Problems[0]
			if pr.File != "map.yaml" || pr.Line != c.line || !strings.Contains(pr.Reason, c.want) {
				t.Fatalf("problem %q, want map.yaml:%d: ...%s...", pr, c.line, c.want)
			}
		})
	}
}

func TestParseIPv4(t *testing.T) {
	good := map[string][4]byte{"0.0.0.0": {}, "10.99.0.1": {10, 99, 0, 1}, "255.255.255.255": {255, 255, 255, 255}}
	for s, want := range good {
		if got, ok := parseIPv4([]byte(s)); !ok || got != want {
			t.Errorf("%s: got %v %v", s, got, ok)
		}
	}
	for _, s := range []string{"", "1.2.3", "1.2.3.4.5", "256.1.1.1", "01.2.3.4", "1.2.3.4 ", "a.b.c.d", "1..2.3", "1.2.3.-4"} {
		if got, ok := parseIPv4([]byte(s)); ok {
			t.Errorf("%q parsed as %v", s, got)
		}
	}
}

// FuzzParseEthers checks that any input parses without panicking, that
// every record comes from a real line of the input, and that a record
// written back in ethers form parses to the same record.
func FuzzParseEthers(f *testing.F) {
	f.Add([]byte("52:54:00:00:00:01 10.99.0.1\n# c\n\n0:1:2:3:4:5 host\n"))
	f.Add([]byte("52-54-00-00-00-01 10.99.0.1 x\nzz\n52:54:00:00:00:01\n"))
	f.Add([]byte("5254.0000.0001\t2001:db8::1\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var p problems
		recs := parseEthers("f", data, &p)
		lines := strings.Count(string(data), "\n") + 1
		for _, r := range recs {
			if r.line < 1 || r.line > lines {
				t.Fatalf("record line %d outside 1..%d", r.line, lines)
			}
			if r.mac.ValidateUnicast() != nil {
				t.Fatalf("group MAC %s accepted", r.mac)
			}
			addr := r.host
			if addr == "" {
				addr = fmt.Sprintf("%d.%d.%d.%d", r.ip[0], r.ip[1], r.ip[2], r.ip[3])
			}
			var q problems
			again := parseEthers("f", []byte(r.mac.String()+" "+addr+"\n"), &q)
			if q.err() != nil || len(again) != 1 || again[0].mac != r.mac || again[0].ip != r.ip || again[0].host != r.host {
				t.Fatalf("record %+v does not round-trip: %+v %v", r, again, q.err())
			}
		}
		for _, pr := range p.list {
			if pr.File != "f" || pr.Reason == "" {
				t.Fatalf("bad problem %+v", pr)
			}
		}
	})
}

// FuzzParseMap checks that any input parses or is refused with problems
// that name the file, never both silently.
func FuzzParseMap(f *testing.F) {
	f.Add([]byte("mappings:\n  - mac: 52:54:00:00:00:01\n    ip: 10.99.0.1\n    interface: br0\n"))
	f.Add([]byte("mappings:\n  - {mac: 52:54:00:00:00:02, host: pxe}\n"))
	f.Add([]byte("mappings: [\n"))
	f.Add([]byte("a: &x [*x]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var p problems
		recs := parseMap("m.yaml", data, &p)
		for _, r := range recs {
			if r.mac.ValidateUnicast() != nil {
				t.Fatalf("group MAC %s accepted", r.mac)
			}
			if r.iface != "" && CheckInterfaceName(r.iface) != nil {
				t.Fatalf("bad interface %q accepted", r.iface)
			}
		}
		for _, pr := range p.list {
			if pr.File != "m.yaml" || pr.Reason == "" {
				t.Fatalf("bad problem %+v", pr)
			}
		}
	})
}
