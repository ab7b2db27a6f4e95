package ipsource

import (
	"net/netip"
	"testing"

	"golang.org/x/net/bpf"

	"github.com/rarp-announce/rarp-announce/pkg/ipannounce"
	"github.com/rarp-announce/rarp-announce/pkg/ipannounce/ipannouncetest"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

var (
	guestMAC = rarp.MAC{0x52, 0x54, 0x00, 0x66, 0x00, 0x10}
	otherMAC = rarp.MAC{0x52, 0x54, 0x00, 0x66, 0x00, 0x99}
)

func build(t testing.TB, f ipannounce.Frame) []byte {
	t.Helper()
	b, err := f.Build()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// dhcpAck is a DHCP ACK giving yiaddr to chaddr.
func dhcpAck(chaddr rarp.MAC, yiaddr string, ipFlags uint16) []byte {
	return ipannouncetest.DHCPReply(chaddr, netip.MustParseAddr(yiaddr), ipFlags, 53, 1, 5, 255)
}

// TestFilter runs the learner's BPF program in x/net/bpf's VM, without the
// VLAN guard the VM cannot run (TestLearnOnTap checks that on a real tap).
func TestFilter(t *testing.T) {
	if full, err := Filter(guestMAC); err != nil || len(full) < 2 {
		t.Fatalf("Filter: %v", err)
	}
	prog, err := filter(guestMAC, false)
	if err != nil {
		t.Fatal(err)
	}
	var ins []bpf.Instruction
	for _, r := range prog {
		ins = append(ins, r.Disassemble())
	}
	vm, err := bpf.NewVM(ins)
	if err != nil {
		t.Fatal(err)
	}
	v4, v6 := netip.MustParseAddr("10.66.0.10"), netip.MustParseAddr("fd66::10")
	gw4, gw6 := netip.MustParseAddr("10.66.0.1"), netip.MustParseAddr("fd66::1")
	cases := []struct {
		name  string
		frame []byte
		pass  bool
	}{
		{"guest GARP", build(t, ipannounce.Frame{Kind: ipannounce.GARPRequest, MAC: guestMAC, IP: v4}), true},
		{"guest ARP request", build(t, ipannounce.Frame{Kind: ipannounce.GatewayARP, MAC: guestMAC, IP: v4, Gateway: gw4}), true},
		{"guest NA", build(t, ipannounce.Frame{Kind: ipannounce.UnsolicitedNA, MAC: guestMAC, IP: v6}), true},
		{"guest NS", build(t, ipannounce.Frame{Kind: ipannounce.GatewayNS, MAC: guestMAC, IP: v6, Gateway: gw6}), true},
		{"other MAC's GARP", build(t, ipannounce.Frame{Kind: ipannounce.GARPRequest, MAC: otherMAC, IP: v4}), false},
		{"other MAC's NA", build(t, ipannounce.Frame{Kind: ipannounce.UnsolicitedNA, MAC: otherMAC, IP: v6}), false},
		{"DHCP ack", dhcpAck(guestMAC, "10.66.0.10", 0), true},
		{"DHCP ack fragment", dhcpAck(guestMAC, "10.66.0.10", 0x2000), false},
		{"RARP", func() []byte { f := rarp.Announce(guestMAC, rarp.VLAN{}); b, _ := f.MarshalBinary(); return b }(), false},
	}
	for _, c := range cases {
		n, err := vm.Run(c.frame)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if (n > 0) != c.pass {
			t.Errorf("%s: filter returned %d, want pass=%v", c.name, n, c.pass)
		}
	}
	// An ICMPv6 echo from the guest is not NDP.
	echo := build(t, ipannounce.Frame{Kind: ipannounce.UnsolicitedNA, MAC: guestMAC, IP: v6})
	echo[14+40] = 128
	if n, _ := vm.Run(echo); n != 0 {
		t.Error("ICMPv6 echo passed")
	}
}

func TestLearnerHandle(t *testing.T) {
	store := NewLearned(4, 4, 0)
	var events []Event
	l := &Learner{mac: guestMAC, store: store, OnEvent: func(e Event) { events = append(events, e) }}
	v4 := netip.MustParseAddr("10.66.0.10")
	l.handle(build(t, ipannounce.Frame{Kind: ipannounce.GARPRequest, MAC: guestMAC, IP: v4}))
	l.handle(build(t, ipannounce.Frame{Kind: ipannounce.GARPRequest, MAC: otherMAC, IP: netip.MustParseAddr("10.66.0.11")}))
	l.handle(dhcpAck(otherMAC, "10.66.0.12", 0))
	l.handle(dhcpAck(guestMAC, "10.66.0.13", 0))
	got := store.Get(guestMAC)
	if len(got) != 2 || got[0] != v4 || got[1].String() != "10.66.0.13" {
		t.Fatalf("learned %v", got)
	}
	if len(events) != 2 || events[1].Proto != ipannounce.ProtoDHCP {
		t.Fatalf("events %+v", events)
	}
}
