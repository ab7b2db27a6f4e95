package agent

import (
	"context"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mdlayher/ndp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/rarp-announce/rarp-announce/pkg/announce"
	"github.com/rarp-announce/rarp-announce/pkg/domxml"
	"github.com/rarp-announce/rarp-announce/pkg/ipannounce"
	"github.com/rarp-announce/rarp-announce/pkg/ipsource"
	"github.com/rarp-announce/rarp-announce/pkg/plan"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// wire records what an announcer writes, decoded by ipannounce.Decode.
type wire struct {
	mu     sync.Mutex
	frames [][]byte
}

func (w *wire) Send(b []byte) error {
	w.mu.Lock()
	w.frames = append(w.frames, append([]byte(nil), b...))
	w.mu.Unlock()
	return nil
}
func (w *wire) Close() error { return nil }

// kinds returns the IP-layer frames' kinds in send order (RARPs left out).
func (w *wire) kinds(t *testing.T) []ipannounce.Kind {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []ipannounce.Kind
	for _, b := range w.frames {
		if isRARP(b) {
			continue
		}
		d, err := ipannounce.Decode(b)
		if err != nil {
			t.Fatalf("undecodable frame %x: %v", b, err)
		}
		out = append(out, kindOf(d))
	}
	return out
}

// isRARP reports a RARP frame, untagged or 802.1Q-tagged.
func isRARP(b []byte) bool {
	et := 12
	if len(b) > 17 && b[12] == 0x81 && b[13] == 0x00 {
		et = 16
	}
	return len(b) > et+1 && b[et] == 0x80 && b[et+1] == 0x35
}

func kindOf(d ipannounce.Decoded) ipannounce.Kind {
	switch {
	case d.Proto == ipannounce.ProtoARP && d.ARP.Operation == rarp.OpReply:
		return ipannounce.GARPReply
	case d.Proto == ipannounce.ProtoARP && d.ARP.TargetIP == d.ARP.SenderIP:
		return ipannounce.GARPRequest
	case d.Proto == ipannounce.ProtoARP:
		return ipannounce.GatewayARP
	}
	if _, ok := d.NDP.(*ndp.NeighborAdvertisement); ok {
		return ipannounce.UnsolicitedNA
	}
	return ipannounce.GatewayNS
}

// TestIPFollowerTriggers: only a landed NIC's first RARP starts its IP
// frames (on the RARP's port), not refreshes, repeats or the frames of a
// MAC that did not land here; a release stops the repeats still due; a
// second NIC claiming the same address gets nothing for it.
func TestIPFollowerTriggers(t *testing.T) {
	w := &wire{}
	f := NewIPFollower(IPOptions{
		Resolver: &ipsource.Resolver{
			Static: ipsource.Static{
				rarp.MAC{2, 0, 0, 0, 0, 1}: {netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("2001:db8::10")},
				rarp.MAC{2, 0, 0, 0, 0, 3}: {netip.MustParseAddr("192.0.2.10")},
			},
			Claims: ipsource.NewClaims(4),
		},
		Gateways: []netip.Addr{netip.MustParseAddr("192.0.2.1")},
		Schedule: ipannounce.Schedule{Count: 2, Interval: ipannounce.MinInterval},
		Metrics:  NewIPMetrics(nil),
	})
	a := announce.New(announce.Options{Open: func(string) (announce.Sender, error) { return w, nil }, OnFrame: f.Observe})
	defer a.Close()
	f.SetSender(announce.KindHost, a.Announce)

	mac, other, dup := rarp.MAC{2, 0, 0, 0, 0, 1}, rarp.MAC{2, 0, 0, 0, 0, 2}, rarp.MAC{2, 0, 0, 0, 0, 3}
	dom := &domxml.Domain{Name: "vm", UUID: "u1"}
	f.Landed(dom, []plan.Target{{NIC: domxml.Interface{MAC: mac}, Strategy: plan.Host}}, zap.NewNop())
	f.Landed(&domxml.Domain{Name: "vm2", UUID: "u2"}, []plan.Target{{NIC: domxml.Interface{MAC: dup}, Strategy: plan.Host}}, zap.NewNop())
	if n := testutil.ToFloat64(f.o.Metrics.skipped.WithLabelValues(string(ipsource.ReasonClaimed))); n != 1 {
		t.Fatalf("skipped{claimed_by_other_nic} = %v, want 1", n)
	}

	s := announce.Schedule{Rounds: 2, Initial: 10 * time.Millisecond, Max: time.Second, Bursts: 1}
	for _, m := range []rarp.MAC{mac, other, dup} {
		if _, err := a.Announce(announce.Request{MAC: m, Interface: "br0", Schedule: s}); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(300 * time.Millisecond)
	// First round: GARP request and gateway ARP for 192.0.2.10, NA for
	// 2001:db8::10; nothing for other (not landed) or dup (refused).
	got := w.kinds(t)
	count := map[ipannounce.Kind]int{}
	for _, k := range got {
		count[k]++
	}
	if len(got) != 3 || count[ipannounce.GARPRequest] != 1 || count[ipannounce.GatewayARP] != 1 || count[ipannounce.UnsolicitedNA] != 1 {
		t.Fatalf("first round: %v, want one GARP request, gateway ARP and NA", got)
	}
	// The domain leaves before the second round (due 1.1 s later).
	f.Release("u1")
	time.Sleep(ipannounce.MinInterval + 200*time.Millisecond)
	if n := len(w.kinds(t)); n != 3 {
		t.Fatalf("%d IP frames after the release, want the 3 of the first round", n)
	}
	// After the release the address is free for the other NIC.
	if h, ok := f.o.Resolver.Claims.Holder(netip.MustParseAddr("192.0.2.10")); ok {
		t.Fatalf("192.0.2.10 still held by %v after the release", h)
	}
}

// failFirstRARP is a wire whose first RARP send fails (ENOBUFS).
type failFirstRARP struct {
	wire
	failed bool
}

func (w *failFirstRARP) Send(b []byte) error {
	w.mu.Lock()
	fail := isRARP(b) && !w.failed
	w.failed = w.failed || fail
	w.mu.Unlock()
	if fail {
		return syscall.ENOBUFS
	}
	return w.wire.Send(b)
}

// An announce whose first RARP failed but whose second went out still
// starts the IP frames (at the second). Before, only a first RARP that went
// out started them: the RARP error was logged, the GARPs and NAs were lost
// without a word.
func TestIPFollowerStartsAfterAFailedFirstRARP(t *testing.T) {
	w := &failFirstRARP{}
	mac := rarp.MAC{2, 0, 0, 0, 0, 1}
	f := NewIPFollower(IPOptions{
		Resolver: &ipsource.Resolver{Static: ipsource.Static{mac: {netip.MustParseAddr("192.0.2.10")}}},
		Schedule: ipannounce.Schedule{Count: 1, Interval: ipannounce.MinInterval},
		Metrics:  NewIPMetrics(nil),
	})
	a := announce.New(announce.Options{Open: func(string) (announce.Sender, error) { return w, nil }, OnFrame: f.Observe})
	defer a.Close()
	f.SetSender(announce.KindHost, a.Announce)
	f.Landed(&domxml.Domain{Name: "vm", UUID: "u1"}, []plan.Target{{NIC: domxml.Interface{MAC: mac}, Strategy: plan.Host}}, zap.NewNop())
	s := announce.Schedule{Rounds: 3, Initial: 10 * time.Millisecond, Max: time.Second, Bursts: 1}
	if _, err := a.Announce(announce.Request{MAC: mac, Interface: "br0", Schedule: s}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if got := w.kinds(t); len(got) != 1 || got[0] != ipannounce.GARPRequest {
		t.Fatalf("IP frames %v, want one GARP request (started once, by the second RARP)", got)
	}
}

type guestCalls struct {
	mu    sync.Mutex
	calls [][]string
}

func (g *guestCalls) AnnounceSelf(_ context.Context, uuid string, aliases []string, s announce.Schedule) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.calls = append(g.calls, append([]string{uuid}, aliases...))
	return s.Validate()
}

// TestIPFollowerAsksGuestOnce: with guest announce on, a landed NIC's first
// RARP asks QEMU once for that NIC's alias, however many ports and VLANs
// its RARPs take; a NIC without addresses is asked too (the guest knows
// its own), a MAC that did not land is not.
func TestIPFollowerAsksGuestOnce(t *testing.T) {
	g := &guestCalls{}
	f := NewIPFollower(IPOptions{Schedule: ipannounce.DefaultSchedule, Guest: g, Metrics: NewIPMetrics(nil)})
	mac := rarp.MAC{2, 0, 0, 0, 0, 1}
	f.Landed(&domxml.Domain{Name: "vm", UUID: "u1"}, []plan.Target{{NIC: domxml.Interface{MAC: mac, Alias: "net3"}, Strategy: plan.Host}}, zap.NewNop())
	first := announce.Slot{Burst: 1, Round: 1}
	f.Observe(announce.Sent{MAC: mac, Port: announce.HostPort("up1"), Slot: first})
	f.Observe(announce.Sent{MAC: mac, Port: announce.HostPort("up2"), VLAN: rarp.VLAN{ID: 7}, Slot: first})
	f.Observe(announce.Sent{MAC: rarp.MAC{2, 0, 0, 0, 0, 9}, Port: announce.HostPort("up1"), Slot: first})
	deadline := time.Now().Add(2 * time.Second)
	for testutil.ToFloat64(f.o.Metrics.guests.WithLabelValues("ok")) < 1 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.calls) != 1 || len(g.calls[0]) != 2 || g.calls[0][0] != "u1" || g.calls[0][1] != "net3" {
		t.Fatalf("announce-self calls %v, want one for u1 net3", g.calls)
	}
}

// TestIPFollowerKeepsTheRARPsVLAN: a NIC announced tagged (a VLAN of its
// port) gets its IP frames with the same 802.1Q tag, priority included.
func TestIPFollowerKeepsTheRARPsVLAN(t *testing.T) {
	w := &wire{}
	mac := rarp.MAC{2, 0, 0, 0, 0, 1}
	f := NewIPFollower(IPOptions{
		Resolver: &ipsource.Resolver{Static: ipsource.Static{mac: {netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("2001:db8::10")}}},
		Schedule: ipannounce.Schedule{Count: 1},
	})
	a := announce.New(announce.Options{Open: func(string) (announce.Sender, error) { return w, nil }, OnFrame: f.Observe})
	defer a.Close()
	f.SetSender(announce.KindHost, a.Announce)
	f.Landed(&domxml.Domain{Name: "vm", UUID: "u1"}, []plan.Target{{NIC: domxml.Interface{MAC: mac}, Strategy: plan.Host}}, zap.NewNop())
	vlan := rarp.VLAN{ID: 7, Priority: 5}
	if _, err := a.Announce(announce.Request{MAC: mac, Interface: "br0", VLAN: vlan, Schedule: announce.Schedule{Rounds: 1, Bursts: 1}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for len(w.kinds(t)) < 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, b := range w.frames {
		d, err := ipannounce.Decode(b)
		if err != nil {
			continue // the RARP
		}
		n++
		if d.VLAN != vlan {
			t.Errorf("%v frame tagged %+v, want %+v", kindOf(d), d.VLAN, vlan)
		}
	}
	if n != 2 {
		t.Fatalf("%d IP frames, want a GARP and an NA", n)
	}
}

// TestIPFollowerLeasesDoNotHoldTheFirstRARP: a NIC whose addresses come
// from libvirt's leases (an RPC) is resolved in the background: Landed
// returns while libvirt has not answered, the first RARP goes out, and
// the IP frames follow on its port once the lease is known. A domain that
// leaves before the answer gets no frame, and its claim is given back.
func TestIPFollowerLeasesDoNotHoldTheFirstRARP(t *testing.T) {
	answer := make(chan struct{})
	lease := netip.MustParseAddr("192.0.2.20")
	w := &wire{}
	f := NewIPFollower(IPOptions{
		Resolver: &ipsource.Resolver{
			Leases: func(ctx context.Context, network string, m rarp.MAC) ([]netip.Addr, error) {
				select {
				case <-answer:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
				if network != "default" {
					return nil, nil
				}
				return []netip.Addr{lease}, nil
			},
			Claims: ipsource.NewClaims(4),
		},
		Schedule: ipannounce.Schedule{Count: 1, Interval: ipannounce.MinInterval},
		Metrics:  NewIPMetrics(nil),
	})
	a := announce.New(announce.Options{Open: func(string) (announce.Sender, error) { return w, nil }, OnFrame: f.Observe})
	defer a.Close()
	f.SetSender(announce.KindHost, a.Announce)

	mac, gone := rarp.MAC{2, 0, 0, 0, 0, 0x21}, rarp.MAC{2, 0, 0, 0, 0, 0x22}
	nic := func(m rarp.MAC) []plan.Target {
		return []plan.Target{{NIC: domxml.Interface{MAC: m, Type: "network", SourceNetwork: "default"}, Strategy: plan.Host}}
	}
	start := time.Now()
	f.Landed(&domxml.Domain{Name: "vm", UUID: "u1"}, nic(mac), zap.NewNop())
	f.Landed(&domxml.Domain{Name: "vm2", UUID: "u2"}, nic(gone), zap.NewNop())
	if took := time.Since(start); took > 500*time.Millisecond {
		t.Fatalf("Landed took %v waiting for libvirt's leases", took)
	}
	s := announce.Schedule{Rounds: 1, Initial: 10 * time.Millisecond, Max: time.Second, Bursts: 1}
	for _, m := range []rarp.MAC{mac, gone} {
		h, err := a.Announce(announce.Request{MAC: m, Interface: "br0", Schedule: s})
		if err != nil {
			t.Fatal(err)
		}
		// First closes after OnFrame (Observe) has seen the RARP: no
		// sleep to guess how long that takes on a loaded machine.
		select {
		case <-h.First():
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: no first RARP after 5s", m)
		}
	}
	w.mu.Lock()
	rarps := len(w.frames)
	w.mu.Unlock()
	if rarps != 2 || len(w.kinds(t)) != 0 {
		t.Fatalf("before libvirt answers: %d frames, IP frames %v; want the 2 RARPs alone", rarps, w.kinds(t))
	}
	f.Release("u2") // vm2 leaves before libvirt answers
	close(answer)
	f.Wait()
	if got := w.kinds(t); len(got) != 1 || got[0] != ipannounce.GARPRequest {
		t.Fatalf("after the lease is known: %v, want one GARP request (vm's; vm2 left)", got)
	}
	w.mu.Lock()
	last := w.frames[len(w.frames)-1]
	w.mu.Unlock()
	d, err := ipannounce.Decode(last)
	if err != nil || d.ARP.SenderIP != lease || d.ARP.SenderHardware != mac {
		t.Fatalf("GARP %+v (%v), want %s from %s", d.ARP, err, lease, mac)
	}
	if h, ok := f.o.Resolver.Claims.Holder(lease); !ok || h.MAC != mac {
		t.Fatalf("%s held by %v (%v), want vm's NIC", lease, h, ok)
	}
	if n := testutil.ToFloat64(f.o.Metrics.addresses.WithLabelValues(string(ipsource.SourceLeases))); n != 1 {
		t.Fatalf("addresses{leases} = %v, want 1 (vm2's dropped)", n)
	}
}

// TestIPFollowerSkipsInvalidAddresses: an address no receiver would take
// (multicast, loopback) is counted and logged with the reason, not
// recorded for the NIC's frames; the NIC's good address still is.
func TestIPFollowerSkipsInvalidAddresses(t *testing.T) {
	mac := rarp.MAC{2, 0, 0, 0, 0, 0x31}
	good := netip.MustParseAddr("192.0.2.31")
	f := NewIPFollower(IPOptions{
		Resolver: &ipsource.Resolver{Static: ipsource.Static{
			mac: {good, netip.MustParseAddr("224.0.0.1"), netip.MustParseAddr("::1")},
		}},
		Schedule: ipannounce.DefaultSchedule,
		Metrics:  NewIPMetrics(nil),
	})
	core, logs := observer.New(zap.WarnLevel)
	f.Landed(&domxml.Domain{Name: "vm", UUID: "u1"}, []plan.Target{{NIC: domxml.Interface{MAC: mac}, Strategy: plan.Host}}, zap.New(core))
	if n := testutil.ToFloat64(f.o.Metrics.skipped.WithLabelValues("invalid")); n != 2 {
		t.Fatalf("skipped{invalid} = %v, want 2", n)
	}
	if n := testutil.ToFloat64(f.o.Metrics.addresses.WithLabelValues(string(ipsource.SourceStatic))); n != 1 {
		t.Fatalf("addresses{static} = %v, want 1", n)
	}
	f.mu.Lock()
	addrs := f.nics[mac].addrs
	f.mu.Unlock()
	if len(addrs) != 1 || addrs[0].IP != good {
		t.Fatalf("recorded %v, want %s alone", addrs, good)
	}
	warned := logs.FilterMessage("IP not announced").All()
	if len(warned) != 2 {
		t.Fatalf("%d warnings, want 2", len(warned))
	}
	for _, e := range warned {
		if err, _ := e.ContextMap()["error"].(string); !strings.Contains(err, "not a unicast host address") {
			t.Errorf("warning %v: error %q does not say why", e.ContextMap(), err)
		}
	}
}

// ReleaseAbsent releases a domain that a listing of the running domains no
// longer shows (here seen by its claims, given back); a domain handed over
// after the listing was taken, or still listed, is kept.
func TestIPFollowerReleasesDomainsAbsentFromAListing(t *testing.T) {
	ip := netip.MustParseAddr("192.0.2.10")
	gone, kept := rarp.MAC{2, 0, 0, 0, 0, 1}, rarp.MAC{2, 0, 0, 0, 0, 2}
	claims := ipsource.NewClaims(4)
	f := NewIPFollower(IPOptions{
		Resolver: &ipsource.Resolver{Static: ipsource.Static{gone: {ip}, kept: {netip.MustParseAddr("192.0.2.11")}}, Claims: claims},
		Metrics:  NewIPMetrics(nil),
	})
	land := func(uuid string, mac rarp.MAC) {
		f.Landed(&domxml.Domain{Name: uuid, UUID: uuid}, []plan.Target{{NIC: domxml.Interface{MAC: mac}, Strategy: plan.Host}}, zap.NewNop())
	}
	holder := func(a netip.Addr) string {
		n, ok := claims.Holder(a)
		if !ok {
			return ""
		}
		return n.Domain
	}
	early := time.Now()
	land("u-gone", gone)
	land("u-kept", kept)
	f.ReleaseAbsent(map[string]bool{}, early) // a listing taken before both landed
	if holder(ip) != "u-gone" {
		t.Fatal("a domain handed over after the listing was released")
	}
	f.ReleaseAbsent(map[string]bool{"u-kept": true}, time.Now())
	if h := holder(ip); h != "" {
		t.Fatalf("%s still holds %s after a listing without it", h, ip)
	}
	if holder(netip.MustParseAddr("192.0.2.11")) != "u-kept" {
		t.Fatal("the listed domain lost its claim")
	}
	land("u-new", gone) // a new VM with the address
	if holder(ip) != "u-new" {
		t.Fatalf("the address went to %q, want the new VM", holder(ip))
	}
}

// A NIC hot-unplugged gives its addresses back: another NIC landing here
// with the same address (a Neutron port moved, an address reused) gets
// it. It used to be refused as claimed by the unplugged NIC until that
// NIC's whole domain left.
func TestIPFollowerUnpluggedFreesItsAddresses(t *testing.T) {
	ip := netip.MustParseAddr("192.0.2.50")
	a, c := rarp.MAC{2, 0, 0, 0, 0, 1}, rarp.MAC{2, 0, 0, 0, 0, 2}
	claims := ipsource.NewClaims(4)
	f := NewIPFollower(IPOptions{
		Resolver: &ipsource.Resolver{Static: ipsource.Static{a: {ip}, c: {ip}}, Claims: claims},
		Metrics:  NewIPMetrics(nil),
	})
	f.Landed(&domxml.Domain{Name: "a", UUID: "u-a"}, []plan.Target{{NIC: domxml.Interface{MAC: a}, Strategy: plan.Host}}, zap.NewNop())
	f.Unplugged(a)
	f.Landed(&domxml.Domain{Name: "c", UUID: "u-c"}, []plan.Target{{NIC: domxml.Interface{MAC: c}, Strategy: plan.Host}}, zap.NewNop())
	if n, ok := claims.Holder(ip); !ok || n.MAC != c {
		t.Fatalf("%s held by %+v (%v) after a's NIC was unplugged, want c's NIC", ip, n, ok)
	}
}

// A VM that started here claims nothing (claims come from landings), but
// the learner on its port knows the address it uses now: a VM landing with
// a stale record of that address (carried, or a static entry) is refused
// it, rather than pulling it away from the local VM. Once the local VM
// has left, the same landing gets it.
func TestLandingRefusedAnAddressALocalVMUses(t *testing.T) {
	local, landing := rarp.MAC{0x52, 0x54, 0, 0, 7, 1}, rarp.MAC{0x52, 0x54, 0, 0, 7, 2}
	ip := netip.MustParseAddr("10.66.0.10")
	ll := netip.MustParseAddr("fe80::1")
	store := ipsource.NewLearned(4, 16, 0)
	open := func(string, rarp.MAC, func(ipsource.Event)) (Learner, error) {
		return &stillLearner{done: make(chan struct{})}, nil
	}
	claims := ipsource.NewClaims(4)
	core, logs := observer.New(zap.WarnLevel)
	f := NewIPFollower(IPOptions{
		Resolver: &ipsource.Resolver{Learned: store, Static: ipsource.Static{landing: {ip, ll}}, Claims: claims},
		Learn:    open, Metrics: NewIPMetrics(nil), Logger: zap.NewNop(),
	})
	defer f.Release("landing")
	f.RunningDomain(&domxml.Domain{Name: "local", UUID: "local"},
		[]plan.Target{{NIC: domxml.Interface{MAC: local}, Strategy: plan.Host, Port: "vnet0"}}, zap.NewNop())
	store.Add(local, ip) // the local VM's ARP, seen by its learner
	store.Add(local, ll) // a link-local address: unique on its link only

	land := func() {
		f.Landed(&domxml.Domain{Name: "landing", UUID: "landing"},
			[]plan.Target{{NIC: domxml.Interface{MAC: landing}, Strategy: plan.Host, Port: "vnet1"}}, zap.New(core))
	}
	land()
	if h, ok := claims.Holder(ip); ok {
		t.Fatalf("%s granted to %v while the local VM %s uses it", ip, h, local)
	}
	if n := testutil.ToFloat64(f.o.Metrics.skipped.WithLabelValues(string(ipsource.ReasonClaimed))); n != 1 {
		t.Fatalf("skipped{claimed_by_other_nic} = %v, want 1 (the link-local address is no conflict)", n)
	}
	if w := logs.FilterMessage("IP not announced").All(); len(w) != 1 || w[0].ContextMap()["holder_domain"] != "local" {
		t.Fatalf("warnings %v, want one naming the local domain as the holder", w)
	}

	f.Release("local") // the local VM left: its address is free
	land()
	if h, ok := claims.Holder(ip); !ok || h.MAC != landing {
		t.Fatalf("after the local VM left: holder %v %v, want %s", h, ok, landing)
	}
}
