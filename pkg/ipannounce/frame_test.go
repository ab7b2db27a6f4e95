package ipannounce

import (
	"bytes"
	"encoding/binary"
	"errors"
	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mdlayher/ndp"

	"github.com/rarp-announce/rarp-announce/internal/frametest"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

var (
	vmMAC = rarp.MAC{0x52, 0x54, 0x00, 0x66, 0x00, 0x10}
	vm4   = netip.MustParseAddr("10.66.0.10")
	gw4   = netip.MustParseAddr("10.66.0.1")
	vm6   = netip.MustParseAddr("fd66::10")
	gw6   = netip.MustParseAddr("fd66::1")
)

func TestBuildARPBytes(t *testing.T) {
	pad := strings.Repeat("00", 18)
	cases := []struct {
		f    Frame
		want string
	}{
		{Frame{Kind: GARPRequest, MAC: vmMAC, IP: vm4},
			"ffffffffffff 525400660010 0806 0001 0800 0604 0001 525400660010 0a42000a 000000000000 0a42000a" + pad},
		{Frame{Kind: GARPReply, MAC: vmMAC, IP: vm4},
			"ffffffffffff 525400660010 0806 0001 0800 0604 0002 525400660010 0a42000a 525400660010 0a42000a" + pad},
		{Frame{Kind: GatewayARP, MAC: vmMAC, IP: vm4, Gateway: gw4},
			"ffffffffffff 525400660010 0806 0001 0800 0604 0001 525400660010 0a42000a 000000000000 0a420001" + pad},
		{Frame{Kind: GARPRequest, MAC: vmMAC, IP: vm4, VLAN: rarp.VLAN{ID: 100, Priority: 5}},
			"ffffffffffff 525400660010 8100 a064 0806 0001 0800 0604 0001 525400660010 0a42000a 000000000000 0a42000a" + pad},
	}
	for _, c := range cases {
		got, err := c.f.Build()
		if err != nil {
			t.Fatalf("%s: %v", c.f.Kind, err)
		}
		if want := frametest.Hex(t, c.want); !bytes.Equal(got, want) {
			t.Errorf("%s vlan %d:\n got %x\nwant %x", c.f.Kind, c.f.VLAN.ID, got, want)
		}
	}
}

func TestBuildNDPFields(t *testing.T) {
	cases := []struct {
		f                Frame
		dstMAC           string
		ipDst            string
		icmpType         byte
		flags            byte // NA: R S O bits
		target           netip.Addr
		optType          byte
		wantLen, ethHead int
	}{
		{Frame{Kind: UnsolicitedNA, MAC: vmMAC, IP: vm6}, "33:33:00:00:00:01", "ff02::1", 136, 0x20, vm6, 2, 86, 14},
		{Frame{Kind: UnsolicitedNA, MAC: vmMAC, IP: vm6, VLAN: rarp.VLAN{ID: 7}}, "33:33:00:00:00:01", "ff02::1", 136, 0x20, vm6, 2, 90, 18},
		{Frame{Kind: GatewayNS, MAC: vmMAC, IP: vm6, Gateway: gw6}, "33:33:ff:00:00:01", "ff02::1:ff00:1", 135, 0, gw6, 1, 86, 14},
	}
	for _, c := range cases {
		b, err := c.f.Build()
		if err != nil {
			t.Fatalf("%s: %v", c.f.Kind, err)
		}
		if len(b) != c.wantLen {
			t.Errorf("%s: %d bytes, want %d", c.f.Kind, len(b), c.wantLen)
		}
		if got := rarp.MAC(b[0:6]).String(); got != c.dstMAC {
			t.Errorf("%s: Ethernet destination %s, want %s", c.f.Kind, got, c.dstMAC)
		}
		ip := b[c.ethHead:]
		if ip[0]>>4 != 6 || ip[6] != 58 || ip[7] != 255 {
			t.Errorf("%s: IPv6 header %x: want version 6, next header 58, hop limit 255", c.f.Kind, ip[:8])
		}
		if got := netip.AddrFrom16([16]byte(ip[8:24])); got != c.f.IP {
			t.Errorf("%s: IPv6 source %s", c.f.Kind, got)
		}
		if got := netip.AddrFrom16([16]byte(ip[24:40])).String(); got != c.ipDst {
			t.Errorf("%s: IPv6 destination %s, want %s", c.f.Kind, got, c.ipDst)
		}
		icmp := ip[40:]
		if icmp[0] != c.icmpType || icmp[4] != c.flags {
			t.Errorf("%s: ICMPv6 type %d flags %#x, want %d %#x", c.f.Kind, icmp[0], icmp[4], c.icmpType, c.flags)
		}
		if got := netip.AddrFrom16([16]byte(icmp[8:24])); got != c.target {
			t.Errorf("%s: target %s, want %s", c.f.Kind, got, c.target)
		}
		if icmp[24] != c.optType || icmp[25] != 1 || !bytes.Equal(icmp[26:32], vmMAC[:]) {
			t.Errorf("%s: option %x, want type %d len 1 %s", c.f.Kind, icmp[24:32], c.optType, vmMAC)
		}
		if sum := checksum16(ip); sum != 0xffff && sum != 0 {
			t.Errorf("%s: ICMPv6 checksum does not verify (sum %#x)", c.f.Kind, sum)
		}
	}
}

// checksum16 folds the ones' complement sum of the ICMPv6 pseudo-header
// and body of an IPv6 packet; a correct checksum makes it 0xffff. It is an
// independent check of what x/net/icmp computed.
func checksum16(ip []byte) uint16 {
	plen := int(binary.BigEndian.Uint16(ip[4:6]))
	var s uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			s += uint32(binary.BigEndian.Uint16(b[i:]))
		}
		if len(b)%2 == 1 {
			s += uint32(b[len(b)-1]) << 8
		}
	}
	add(ip[8:40])
	s += uint32(plen) + 58
	add(ip[40 : 40+plen])
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

func TestBuildErrors(t *testing.T) {
	cases := []struct {
		name string
		f    Frame
		want error
	}{
		{"no kind", Frame{MAC: vmMAC, IP: vm4}, ErrKind},
		{"v6 for GARP", Frame{Kind: GARPRequest, MAC: vmMAC, IP: vm6}, ErrFamily},
		{"v4 for NA", Frame{Kind: UnsolicitedNA, MAC: vmMAC, IP: vm4}, ErrFamily},
		{"no IP", Frame{Kind: GARPRequest, MAC: vmMAC}, ErrAddress},
		{"multicast IP", Frame{Kind: UnsolicitedNA, MAC: vmMAC, IP: netip.MustParseAddr("ff02::1")}, ErrAddress},
		{"broadcast IP", Frame{Kind: GARPRequest, MAC: vmMAC, IP: netip.MustParseAddr("255.255.255.255")}, ErrAddress},
		{"mapped IP", Frame{Kind: GARPRequest, MAC: vmMAC, IP: netip.MustParseAddr("::ffff:10.0.0.1")}, ErrAddress},
		{"gateway missing", Frame{Kind: GatewayARP, MAC: vmMAC, IP: vm4}, ErrAddress},
		{"gateway family", Frame{Kind: GatewayNS, MAC: vmMAC, IP: vm6, Gateway: gw4}, ErrFamily},
		{"gateway is self", Frame{Kind: GatewayARP, MAC: vmMAC, IP: vm4, Gateway: vm4}, ErrAddress},
		{"bad vlan", Frame{Kind: GARPRequest, MAC: vmMAC, IP: vm4, VLAN: rarp.VLAN{ID: 4095}}, rarp.ErrVLANID},
	}
	for _, c := range cases {
		if _, err := c.f.Build(); !errors.Is(err, c.want) {
			t.Errorf("%s: err %v, want %v", c.name, err, c.want)
		}
	}
	if _, err := (&Frame{Kind: GARPRequest, MAC: rarp.Broadcast, IP: vm4}).Build(); err == nil {
		t.Error("broadcast source MAC accepted")
	}
}

func TestRoundTripDecode(t *testing.T) {
	for _, f := range allKinds(rarp.VLAN{}) {
		b, err := f.Build()
		if err != nil {
			t.Fatal(err)
		}
		d, err := Decode(b)
		if err != nil {
			t.Fatalf("%s: decode: %v", f.Kind, err)
		}
		if d.Source != vmMAC {
			t.Errorf("%s: source %s", f.Kind, d.Source)
		}
		mac, ip, ok := d.Binding()
		if !ok || mac != vmMAC || ip != f.IP {
			t.Errorf("%s: binding %s %s %v, want %s %s", f.Kind, mac, ip, ok, vmMAC, f.IP)
		}
		if f.Kind == UnsolicitedNA {
			na := d.NDP.(*ndp.NeighborAdvertisement)
			if !na.Override || na.Solicited || na.Router {
				t.Errorf("NA flags %+v", na)
			}
		}
		// A flipped checksum bit must be caught.
		if f.Kind.IPv6() {
			b[len(b)-1] ^= 1
			if _, err := Decode(b); !errors.Is(err, ErrChecksum) {
				t.Errorf("%s: corrupted frame decoded: %v", f.Kind, err)
			}
		}
	}
}

func allKinds(vlan rarp.VLAN) []Frame {
	return []Frame{
		{Kind: GARPRequest, MAC: vmMAC, IP: vm4, VLAN: vlan},
		{Kind: GARPReply, MAC: vmMAC, IP: vm4, VLAN: vlan},
		{Kind: GatewayARP, MAC: vmMAC, IP: vm4, Gateway: gw4, VLAN: vlan},
		{Kind: UnsolicitedNA, MAC: vmMAC, IP: vm6, VLAN: vlan},
		{Kind: GatewayNS, MAC: vmMAC, IP: vm6, Gateway: gw6, VLAN: vlan},
	}
}

func TestPlan(t *testing.T) {
	fs, err := Plan(vmMAC, rarp.VLAN{}, []netip.Addr{vm4, vm6, {}}, []netip.Addr{gw4, gw6}, true)
	if err == nil {
		t.Error("invalid address not reported")
	}
	var kinds []string
	for _, f := range fs {
		kinds = append(kinds, f.Kind.String())
	}
	want := "garp_request garp_reply gateway_arp unsolicited_na gateway_ns"
	if got := strings.Join(kinds, " "); got != want {
		t.Fatalf("plan %q, want %q", got, want)
	}
}

// writePcap writes frames as a classic little-endian pcap (link type
// Ethernet), what tshark reads.
func writePcap(t testing.TB, path string, frames [][]byte) {
	t.Helper()
	var b bytes.Buffer
	hdr := []uint32{0xa1b2c3d4, 0x00040002, 0, 0, 65535, 1}
	for i, v := range hdr {
		if i == 1 {
			binary.Write(&b, binary.LittleEndian, uint16(2))
			binary.Write(&b, binary.LittleEndian, uint16(4))
			continue
		}
		binary.Write(&b, binary.LittleEndian, v)
	}
	for i, f := range frames {
		binary.Write(&b, binary.LittleEndian, []uint32{uint32(1700000000 + i), 0, uint32(len(f)), uint32(len(f))})
		b.Write(f)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestTsharkDecodes has Wireshark's dissectors (an independent
// implementation) read every frame and checks the fields that make a
// receiver accept it, including tshark's own checksum verdict.
func TestTsharkDecodes(t *testing.T) {
	netnstest.RequireTools(t, "tshark")
	var frames [][]byte
	for _, vlan := range []rarp.VLAN{{}, {ID: 100, Priority: 3}} {
		for _, f := range allKinds(vlan) {
			b, err := f.Build()
			if err != nil {
				t.Fatal(err)
			}
			frames = append(frames, b)
		}
	}
	path := filepath.Join(t.TempDir(), "ip.pcap")
	writePcap(t, path, frames)
	out, err := exec.Command("tshark", "-r", path, "-T", "fields", "-E", "separator=|",
		"-e", "vlan.id", "-e", "eth.dst", "-e", "eth.src",
		"-e", "arp.opcode", "-e", "arp.src.hw_mac", "-e", "arp.src.proto_ipv4", "-e", "arp.dst.hw_mac", "-e", "arp.dst.proto_ipv4", "-e", "arp.isgratuitous",
		"-e", "ipv6.src", "-e", "ipv6.dst", "-e", "ipv6.hlim",
		"-e", "icmpv6.type", "-e", "icmpv6.nd.na.flag.o", "-e", "icmpv6.nd.na.flag.s", "-e", "icmpv6.nd.na.target_address", "-e", "icmpv6.nd.ns.target_address",
		"-e", "icmpv6.opt.linkaddr", "-e", "icmpv6.checksum.status").Output()
	if err != nil {
		t.Fatalf("tshark: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	m, a, g := vmMAC.String(), vm4.String(), gw4.String()
	// tshark prints flags as True/False or 1/0 depending on the version;
	// normalise below.
	// 19 fields per line; "" where a field does not apply. Checksum
	// status 1 is tshark's "Good".
	row := func(f ...string) string { return strings.Join(f, "|") }
	want := []string{
		row("", "ff:ff:ff:ff:ff:ff", m, "1", m, a, "00:00:00:00:00:00", a, "1", "", "", "", "", "", "", "", "", "", ""),
		row("", "ff:ff:ff:ff:ff:ff", m, "2", m, a, m, a, "1", "", "", "", "", "", "", "", "", "", ""),
		row("", "ff:ff:ff:ff:ff:ff", m, "1", m, a, "00:00:00:00:00:00", g, "", "", "", "", "", "", "", "", "", "", ""),
		row("", "33:33:00:00:00:01", m, "", "", "", "", "", "", "fd66::10", "ff02::1", "255", "136", "1", "0", "fd66::10", "", m, "1"),
		row("", "33:33:ff:00:00:01", m, "", "", "", "", "", "", "fd66::10", "ff02::1:ff00:1", "255", "135", "", "", "", "fd66::1", m, "1"),
	}
	if len(lines) != 2*len(want) {
		t.Fatalf("tshark printed %d lines, want %d:\n%s", len(lines), 2*len(want), out)
	}
	for i, l := range lines {
		l = strings.NewReplacer("True", "1", "False", "0").Replace(l)
		w := want[i%len(want)]
		if i >= len(want) {
			w = "100" + w
		}
		if l != w {
			t.Errorf("frame %d:\n got %s\nwant %s", i+1, l, w)
		}
	}
}
