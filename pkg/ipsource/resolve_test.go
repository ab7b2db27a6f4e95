package ipsource

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/rarp-announce/rarp-announce/pkg/domxml"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// TestResolveLeases: libvirt's leases are asked for a NIC on a libvirt
// network only, come last in the order (an address the static map has is
// listed under static), and a failed lookup is reported without losing
// the other sources.
func TestResolveLeases(t *testing.T) {
	mac := rarp.MAC{0x52, 0x54, 0, 0, 0, 1}
	var asked []string
	r := &Resolver{
		Static: Static{mac: {netip.MustParseAddr("192.168.122.10")}},
		Leases: func(_ context.Context, network string, m rarp.MAC) ([]netip.Addr, error) {
			asked = append(asked, network+" "+m.String())
			if network == "broken" {
				return nil, errors.New("no network with matching name 'broken'")
			}
			return []netip.Addr{netip.MustParseAddr("192.168.122.10"), netip.MustParseAddr("192.168.122.11")}, nil
		},
	}
	d := &domxml.Domain{Name: "vm", UUID: "u1"}
	got, _, err := r.Resolve(d, domxml.Interface{MAC: mac, SourceNetwork: "default"})
	if err != nil {
		t.Fatal(err)
	}
	want := []Candidate{{IP: netip.MustParseAddr("192.168.122.10"), Source: SourceStatic}, {IP: netip.MustParseAddr("192.168.122.11"), Source: SourceLeases}}
	if !slices.Equal(got, want) {
		t.Fatalf("granted %v, want %v", got, want)
	}
	if _, _, err := r.Resolve(d, domxml.Interface{MAC: mac, SourceBridge: "br0"}); err != nil {
		t.Fatal(err)
	}
	got, _, err = r.Resolve(d, domxml.Interface{MAC: mac, SourceNetwork: "broken"})
	if err == nil || len(got) != 1 || got[0].Source != SourceStatic {
		t.Fatalf("broken network: %v, %v; want the static address and an error", got, err)
	}
	if want := []string{"default 52:54:00:00:00:01", "broken 52:54:00:00:00:01"}; !slices.Equal(asked, want) {
		t.Fatalf("asked %q, want %q (nothing for the bridge NIC)", asked, want)
	}
}

// TestCandidatesClaimNothing: Candidates gathers without claiming, so a
// caller can drop what a NIC that left meanwhile would have claimed; Grant
// claims, and a second NIC is then refused the address.
func TestCandidatesClaimNothing(t *testing.T) {
	ip := netip.MustParseAddr("192.0.2.20")
	vm, left := rarp.MAC{2, 0, 0, 0, 0, 0x21}, rarp.MAC{2, 0, 0, 0, 0, 0x22}
	r := &Resolver{
		Leases: func(context.Context, string, rarp.MAC) ([]netip.Addr, error) { return []netip.Addr{ip}, nil },
		Claims: NewClaims(4),
	}
	d := &domxml.Domain{Name: "vm2", UUID: "u2"}
	ifc := domxml.Interface{MAC: left, SourceNetwork: "default"}
	cands, err := r.Candidates(d, ifc)
	if err != nil || len(cands) != 1 || cands[0].IP != ip {
		t.Fatalf("Candidates = %v, %v; want %s", cands, err, ip)
	}
	if h, ok := r.Claims.Holder(ip); ok {
		t.Fatalf("Candidates claimed %s for %v", ip, h)
	}
	vmDom := &domxml.Domain{Name: "vm", UUID: "u1"}
	vmIfc := domxml.Interface{MAC: vm, SourceNetwork: "default"}
	if g, ref := r.Grant(vmDom, vmIfc, cands); len(g) != 1 || len(ref) != 0 {
		t.Fatalf("Grant to vm: granted %v, refused %v; want %s granted", g, ref, ip)
	}
	if g, ref := r.Grant(d, ifc, cands); len(g) != 0 || len(ref) != 1 || ref[0].Reason != ReasonClaimed {
		t.Fatalf("Grant to vm2 after vm: granted %v, refused %v; want %s refused as claimed", g, ref, ip)
	}
}
