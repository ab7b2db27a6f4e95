package ipannounce

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/rarp-announce/rarp-announce/pkg/ipannounce/ipannouncetest"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

func dhcpFrame(chaddr rarp.MAC, yiaddr netip.Addr, opts []byte) []byte {
	return ipannouncetest.DHCPReply(chaddr, yiaddr, 0, opts...)
}

func TestDecodeDHCP(t *testing.T) {
	cases := []struct {
		name    string
		opts    []byte
		wantErr error
		bind    bool
	}{
		{"ack", []byte{53, 1, 5, 255}, nil, true},
		{"ack after pad and other options", []byte{0, 0, 1, 4, 255, 255, 255, 0, 53, 1, 5, 255}, nil, true},
		{"offer", []byte{53, 1, 2, 255}, nil, false},
		{"no type", []byte{255}, ErrMalformed, false},
		{"option overruns", []byte{53, 9, 5}, ErrMalformed, false},
	}
	for _, c := range cases {
		d, err := Decode(dhcpFrame(vmMAC, vm4, c.opts))
		if !errors.Is(err, c.wantErr) {
			t.Errorf("%s: err %v, want %v", c.name, err, c.wantErr)
			continue
		}
		mac, ip, ok := d.Binding()
		if ok != c.bind || (ok && (mac != vmMAC || ip != vm4)) {
			t.Errorf("%s: binding %s %s %v", c.name, mac, ip, ok)
		}
	}
}

func TestBindingRefuses(t *testing.T) {
	// An ARP probe (spa 0.0.0.0) and an ARP whose sha is not the
	// Ethernet source teach nothing.
	probe := rarp.Frame{Destination: rarp.Broadcast, Source: vmMAC, EtherType: rarp.EtherTypeARP,
		Operation: rarp.OpRequest, SenderHardware: vmMAC, TargetIP: vm4}
	spoof := probe
	spoof.SenderIP, spoof.SenderHardware = vm4, rarp.MAC{2, 0, 0, 0, 0, 9}
	for name, f := range map[string]rarp.Frame{"probe": probe, "sha != source": spoof} {
		b, _ := f.MarshalBinary()
		d, err := Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, ok := d.Binding(); ok {
			t.Errorf("%s: binding accepted", name)
		}
	}
	// An NA whose hop limit is not 255 was routed: not from the link.
	b, _ := (&Frame{Kind: UnsolicitedNA, MAC: vmMAC, IP: vm6}).Build()
	b[14+7] = 64
	d, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, ok := d.Binding(); ok {
		t.Error("NA with hop limit 64 accepted")
	}
}

func FuzzDecode(f *testing.F) {
	for _, fr := range allKinds(rarp.VLAN{ID: 5}) {
		b, _ := fr.Build()
		f.Add(b)
	}
	for _, fr := range allKinds(rarp.VLAN{}) {
		b, _ := fr.Build()
		f.Add(b)
	}
	f.Add(dhcpFrame(vmMAC, vm4, []byte{53, 1, 5, 255}))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := Decode(b)
		if err != nil {
			return
		}
		if mac, ip, ok := d.Binding(); ok {
			if ValidateIP(ip) != nil {
				t.Fatalf("binding %s %s with an invalid IP", mac, ip)
			}
		}
	})
}

func FuzzParseDHCPReply(f *testing.F) {
	f.Add(dhcpFrame(vmMAC, vm4, []byte{53, 1, 5, 255})[42:])
	f.Add(dhcpFrame(vmMAC, vm4, []byte{0, 53, 1})[42:])
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseDHCPReply(b)
		if err == nil && r.MessageType == 0 {
			t.Fatal("reply without type accepted")
		}
	})
}
