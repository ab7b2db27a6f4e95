package domxml

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

func TestAddressesRoundTrip(t *testing.T) {
	seen := time.Date(2026, 12, 7, 17, 0, 0, 0, time.UTC)
	m := map[rarp.MAC][]Address{
		rarp.MustParseMAC("52:54:00:66:00:20"): {{IP: netip.MustParseAddr("10.66.0.20")}},
		rarp.MustParseMAC("52:54:00:66:00:10"): {{IP: netip.MustParseAddr("10.66.0.10"), Seen: seen}, {IP: netip.MustParseAddr("fd66::10"), Seen: seen.Add(time.Minute)}},
	}
	b := MarshalAddresses(m)
	want := `<addresses><nic mac="52:54:00:66:00:10"><ip address="10.66.0.10" seen="2026-12-07T17:00:00.000Z"/><ip address="fd66::10" seen="2026-12-07T17:01:00.000Z"/></nic>` +
		`<nic mac="52:54:00:66:00:20"><ip address="10.66.0.20"/></nic></addresses>`
	if string(b) != want {
		t.Fatalf("marshal:\n got %s\nwant %s", b, want)
	}
	got, err := ParseAddresses(b)
	if err != nil || !reflect.DeepEqual(got, m) {
		t.Fatalf("parse: %v %v", got, err)
	}
	// In the domain XML, as libvirt shows it: under <metadata>, in our
	// namespace with our key as prefix.
	ns := strings.Replace(string(b), "<addresses>", `<rarp:addresses xmlns:rarp="`+AddressesNamespace+`">`, 1)
	ns = strings.ReplaceAll(ns, "<nic", "<rarp:nic")
	ns = strings.ReplaceAll(ns, "</nic>", "</rarp:nic>")
	ns = strings.ReplaceAll(ns, "<ip", "<rarp:ip")
	ns = strings.Replace(ns, "</addresses>", "</rarp:addresses>", 1)
	x := `<domain><name>a</name><uuid>6c61622d-766d-4000-8000-000000000001</uuid><metadata>` + ns + `</metadata></domain>`
	d, err := Parse([]byte(x))
	if err != nil {
		t.Fatal(err)
	}
	got, err = d.CarriedAddresses()
	if err != nil || !reflect.DeepEqual(got, m) {
		t.Fatalf("carried: %v %v\n%s", got, err, x)
	}
	// Another namespace's <addresses> is not ours.
	other := strings.Replace(x, AddressesNamespace, "urn:other", 1)
	d, _ = Parse([]byte(other))
	if got, err := d.CarriedAddresses(); got != nil || err != nil {
		t.Fatalf("foreign element read as ours: %v %v", got, err)
	}
}

func TestParseAddressesBad(t *testing.T) {
	var many strings.Builder
	for i := range MaxMetadataAddresses + 1 {
		fmt.Fprintf(&many, `<ip address="10.0.%d.1"/>`, i)
	}
	cases := []struct {
		xml     string
		want    int // addresses kept for 52:54:00:00:00:01
		wantErr string
	}{
		{`<addresses><nic mac="52:54:00:00:00:01"><ip address="10.0.0.1"/><ip address="10.0.0.1"/></nic></addresses>`, 1, ""},
		{`<addresses><nic mac="52:54:00:00:00:01"><ip address="10.0.0.1" seen="yesterday"/><ip address="10.0.0.2" seen="2026-12-07T17:00:00+01:00"/></nic></addresses>`, 1, `seen "yesterday" is not`},
		{`<addresses><nic mac="ff:ff:ff:ff:ff:ff"><ip address="10.0.0.1"/></nic><nic mac="52:54:00:00:00:01"><ip address="10.0.0.2"/></nic></addresses>`, 1, "broadcast"},
		{`<addresses><nic mac="52:54:00:00:00:01"><ip address="10.0.0.300"/><ip address="fe80::1%eth0"/><ip address="10.0.0.2"/></nic></addresses>`, 1, `"10.0.0.300" is not`},
		{`<addresses><nic mac="52:54:00:00:00:01">` + many.String() + `</nic></addresses>`, MaxMetadataAddresses, "more than 64"},
		{`<addresses`, 0, "XML syntax error"},
	}
	for _, c := range cases {
		got, err := ParseAddresses([]byte(c.xml))
		if n := len(got[rarp.MustParseMAC("52:54:00:00:00:01")]); n != c.want {
			t.Errorf("%.60s: kept %d, want %d", c.xml, n, c.want)
		}
		if c.wantErr == "" && err != nil || c.wantErr != "" && (err == nil || !errors.Is(err, ErrAddresses) || !strings.Contains(err.Error(), c.wantErr)) {
			t.Errorf("%.60s: err %v, want %q", c.xml, err, c.wantErr)
		}
	}
}

func FuzzParseAddresses(f *testing.F) {
	f.Add([]byte(`<addresses><nic mac="52:54:00:66:00:10"><ip address="10.66.0.10"/><ip address="fd66::10"/></nic></addresses>`))
	f.Add([]byte(`<addresses><nic mac="zz"><ip address="x"/></nic></addresses>`))
	f.Add([]byte(`<addresses><nic mac="52:54:00:66:00:10"><ip address="10.66.0.10" seen="2026-12-07T17:00:00.5+01:00"/><ip address="10.66.0.10" seen="2026-12-07T18:00:00Z"/></nic></addresses>`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, _ := ParseAddresses(b)
		for mac, ips := range m {
			if mac.ValidateUnicast() != nil || len(ips) > MaxMetadataAddresses {
				t.Fatalf("%s: %v", mac, ips)
			}
			// What was accepted survives a round trip (seen to the
			// millisecond, in UTC).
			for i := range ips {
				ips[i].Seen = ips[i].Seen.Truncate(time.Millisecond)
				if !ips[i].Seen.IsZero() {
					ips[i].Seen = ips[i].Seen.UTC()
				}
			}
			back, err := ParseAddresses(MarshalAddresses(map[rarp.MAC][]Address{mac: ips}))
			if err != nil || !reflect.DeepEqual(back[mac], ips) {
				t.Fatalf("round trip of %s %v: %v %v", mac, ips, back, err)
			}
		}
	})
}
