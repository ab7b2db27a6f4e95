package ipsource

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rarp-announce/rarp-announce/pkg/domxml"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

func cands(src Source, ips ...string) []Candidate {
	var out []Candidate
	for _, s := range ips {
		out = append(out, Candidate{IP: netip.MustParseAddr(s), Source: src})
	}
	return out
}

func TestClaims(t *testing.T) {
	c := NewClaims(2)
	a := NIC{Domain: "a", MAC: rarp.MAC{2, 0, 0, 0, 0, 1}}
	b := NIC{Domain: "b", MAC: rarp.MAC{2, 0, 0, 0, 0, 2}}

	g, r := c.Claim(a, cands(SourceNova, "10.0.0.1", "10.0.0.1", "10.0.0.2", "10.0.0.3"))
	if !reflect.DeepEqual(g, cands(SourceNova, "10.0.0.1", "10.0.0.2")) {
		t.Fatalf("a granted %v", g)
	}
	if len(r) != 1 || r[0].Reason != ReasonLimit || r[0].IP.String() != "10.0.0.3" {
		t.Fatalf("a refused %+v, want 10.0.0.3 per_nic_limit", r)
	}
	// b asks for a's address: refused, naming a.
	g, r = c.Claim(b, cands(SourceLearned, "10.0.0.2", "10.0.0.9"))
	if !reflect.DeepEqual(g, cands(SourceLearned, "10.0.0.9")) || len(r) != 1 || r[0].Reason != ReasonClaimed || r[0].Holder != a {
		t.Fatalf("b: granted %v refused %+v", g, r)
	}
	// Re-claiming replaces: a drops 10.0.0.2, which b can then have.
	c.Claim(a, cands(SourceNova, "10.0.0.1"))
	if g, _ := c.Claim(b, cands(SourceLearned, "10.0.0.2", "10.0.0.9")); len(g) != 2 {
		t.Fatalf("b after a dropped 10.0.0.2: %v", g)
	}
	c.ReleaseDomain("a")
	if _, ok := c.Holder(netip.MustParseAddr("10.0.0.1")); ok {
		t.Fatal("released address still held")
	}
	if h, ok := c.Holder(netip.MustParseAddr("10.0.0.9")); !ok || h != b {
		t.Fatalf("b's address holder %v %v", h, ok)
	}
	c.Release(b)
	if _, ok := c.Holder(netip.MustParseAddr("10.0.0.9")); ok {
		t.Fatal("b's address still held after Release")
	}
}

func TestLearnedBounds(t *testing.T) {
	l := NewLearned(2, 2, 0)
	m1, m2, m3 := rarp.MAC{2, 0, 0, 0, 0, 1}, rarp.MAC{2, 0, 0, 0, 0, 2}, rarp.MAC{2, 0, 0, 0, 0, 3}
	ip := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	steps := []struct {
		mac  rarp.MAC
		ip   string
		want LearnResult
	}{
		{m1, "10.0.0.1", Learnt},
		{m1, "10.0.0.1", AlreadyKnow},
		{m1, "fd00::1", Learnt},
		{m1, "10.0.0.3", FullMAC},
		{m2, "10.0.0.4", Learnt},
		// m1 is seen again (a full MAC counts as seen too): m2 is now
		// the MAC seen least recently, and m3, new to the full store,
		// evicts it.
		{m1, "10.0.0.5", FullMAC},
		{m3, "10.0.0.6", Learnt},
	}
	for _, s := range steps {
		if got := l.Add(s.mac, ip(s.ip)); got != s.want {
			t.Errorf("Add(%s, %s) = %s, want %s", s.mac, s.ip, got, s.want)
		}
	}
	if got := l.Get(m1); !reflect.DeepEqual(got, []netip.Addr{ip("10.0.0.1"), ip("fd00::1")}) {
		t.Fatalf("Get(m1) = %v (first come must be kept)", got)
	}
	if got := l.Get(m2); got != nil {
		t.Errorf("Get(m2) = %v: the MAC seen least recently must be evicted", got)
	}
	if got := l.Get(m3); !reflect.DeepEqual(got, []netip.Addr{ip("10.0.0.6")}) {
		t.Errorf("Get(m3) = %v", got)
	}
	l.Forget(m1)
	if got := l.Get(m1); got != nil {
		t.Fatalf("Get after Forget = %v", got)
	}
	if l.Add(m2, ip("10.0.0.4")) != Learnt || l.Get(m3) == nil {
		t.Fatal("after Forget the store has room: nothing is evicted")
	}
}

// A store of maxMACs keeps learning for as many NICs as it was sized for,
// however many came and went before them.
func TestLearnedChurn(t *testing.T) {
	const maxMACs = 64
	l := NewLearned(1, maxMACs, 0)
	ip := netip.MustParseAddr("10.0.0.1")
	for i := range 10 * maxMACs {
		mac := rarp.MAC{2, 0, 0, 0, byte(i >> 8), byte(i)}
		if got := l.Add(mac, ip); got != Learnt {
			t.Fatalf("NIC %d: Add = %s, want learned", i, got)
		}
	}
	for i := 9 * maxMACs; i < 10*maxMACs; i++ {
		if l.Get(rarp.MAC{2, 0, 0, 0, byte(i >> 8), byte(i)}) == nil {
			t.Fatalf("NIC %d, among the last %d, was evicted", i, maxMACs)
		}
	}
}

// An address the MAC has not shown for maxAge is no longer returned (a VIP
// that moved to another VM must not be announced from this one), makes
// room for a new one, and comes back when shown again; Fresh tells when
// each was last shown.
func TestLearnedMaxAge(t *testing.T) {
	const age = 10 * time.Minute
	l := NewLearned(2, 4, age)
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	l.SetClock(func() time.Time { return now })
	mac := rarp.MAC{2, 0, 0, 0, 0, 1}
	ip := netip.MustParseAddr
	vip, own, renumbered := ip("10.0.0.100"), ip("10.0.0.5"), ip("10.0.0.6")
	step := func(d time.Duration) { now = now.Add(d) }
	want := func(what string, ips ...netip.Addr) {
		t.Helper()
		if got := l.Get(mac); !slices.Equal(got, ips) {
			t.Fatalf("%s: Get = %v, want %v", what, got, ips)
		}
	}

	l.Add(mac, vip)
	step(time.Minute)
	l.Add(mac, own)
	if got := l.Add(mac, renumbered); got != FullMAC {
		t.Fatalf("third address with both fresh: %s, want %s", got, FullMAC)
	}
	if got, want := l.Fresh(mac), []domxml.Address{{IP: vip, Seen: now.Add(-time.Minute)}, {IP: own, Seen: now}}; !slices.Equal(got, want) {
		t.Fatalf("Fresh = %v, want %v", got, want)
	}
	// The guest keeps showing its own address; the VIP went elsewhere.
	for range 9 {
		step(time.Minute)
		if got := l.Add(mac, own); got != AlreadyKnow {
			t.Fatalf("own address again: %s", got)
		}
	}
	want("at 10 min", own)
	if got, want := l.Fresh(mac), []domxml.Address{{IP: own, Seen: now}}; !slices.Equal(got, want) {
		t.Fatalf("Fresh = %v, want the own address, seen now (%v)", got, want)
	}
	if got := l.Add(mac, renumbered); got != Learnt {
		t.Fatalf("the forgotten VIP must make room: %s", got)
	}
	want("after renumbering", own, renumbered)
	step(age)
	want("all quiet for maxAge")
	if got := l.Fresh(mac); got != nil {
		t.Fatalf("Fresh = %v, want nothing", got)
	}
	if got := l.Add(mac, vip); got != Learnt {
		t.Fatalf("the VIP back: %s", got)
	}
	want("VIP back", vip)
}

func TestResolve(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "domxml", "testdata", "nova.xml"))
	if err != nil {
		t.Fatal(err)
	}
	d, err := domxml.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	ovs := d.Interfaces[0] // Nova: 10.66.0.10, fd66::10
	learned := NewLearned(4, 16, 0)
	learned.Add(ovs.MAC, netip.MustParseAddr("10.66.0.10")) // also from Nova: listed once, as nova
	learned.Add(ovs.MAC, netip.MustParseAddr("10.66.0.99"))
	claims := NewClaims(3)
	r := Resolver{
		Nova:    true,
		Static:  Static{ovs.MAC: {netip.MustParseAddr("192.0.2.50")}},
		Learned: learned,
		Claims:  claims,
	}
	g, ref, err := r.Resolve(d, ovs)
	if err != nil {
		t.Fatal(err)
	}
	want := append(cands(SourceNova, "10.66.0.10", "fd66::10"), cands(SourceStatic, "192.0.2.50")...)
	if !reflect.DeepEqual(g, want) {
		t.Fatalf("granted %v, want %v", g, want)
	}
	if len(ref) != 1 || ref[0].IP.String() != "10.66.0.99" || ref[0].Reason != ReasonLimit {
		t.Fatalf("refused %+v", ref)
	}
	// Switched off: Nova off leaves static then learned.
	r2 := Resolver{Static: r.Static, Learned: learned}
	g, _, _ = r2.Resolve(d, ovs)
	want = append(cands(SourceStatic, "192.0.2.50"), cands(SourceLearned, "10.66.0.10", "10.66.0.99")...)
	if !reflect.DeepEqual(g, want) {
		t.Fatalf("without nova: %v, want %v", g, want)
	}
	// Carried addresses (learned on the previous host) come last.
	x := strings.Replace(string(data), "</metadata>", `<rarp:addresses xmlns:rarp="`+domxml.AddressesNamespace+
		`"><rarp:nic mac="`+ovs.MAC.String()+`"><rarp:ip address="10.66.0.77"/><rarp:ip address="10.66.0.10"/></rarp:nic></rarp:addresses></metadata>`, 1)
	dc, err := domxml.Parse([]byte(x))
	if err != nil {
		t.Fatal(err)
	}
	r3 := Resolver{Nova: true, Carried: true}
	g, _, err = r3.Resolve(dc, dc.Interfaces[0])
	want = append(cands(SourceNova, "10.66.0.10", "fd66::10"), cands(SourceCarried, "10.66.0.77")...)
	if err != nil || !reflect.DeepEqual(g, want) {
		t.Fatalf("with carried: %v %v, want %v", g, err, want)
	}
	// The Linux-bridge NIC's bad Nova entries are reported, its good one used.
	g, _, err = r.Resolve(d, d.Interfaces[1])
	if err == nil || len(g) != 1 || g[0].IP.String() != "192.0.2.20" {
		t.Fatalf("lb NIC: %v, %v", g, err)
	}
}

// A carried address last seen longer ago than MaxAge is not a candidate
// (it moved, or the guest stopped using it); one without a seen time (an
// older agent's element) still is.
func TestResolveDropsAgedCarried(t *testing.T) {
	recent := time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)
	old := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	d, err := domxml.Parse([]byte(`<domain><name>vm</name><uuid>72616c61-766d-4000-8000-000000000009</uuid>
<metadata><rarp:addresses xmlns:rarp='` + domxml.AddressesNamespace + `'><rarp:nic mac='52:54:00:aa:bb:cc'>
<rarp:ip address='10.66.0.1' seen='` + recent + `'/><rarp:ip address='10.66.0.100' seen='` + old + `'/><rarp:ip address='10.66.0.2'/>
</rarp:nic></rarp:addresses></metadata>
<devices><interface type='bridge'><mac address='52:54:00:aa:bb:cc'/><source bridge='br0'/><target dev='vnet0'/></interface></devices></domain>`))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		maxAge time.Duration
		want   []Candidate
	}{
		{30 * time.Minute, cands(SourceCarried, "10.66.0.1", "10.66.0.2")},
		{0, cands(SourceCarried, "10.66.0.1", "10.66.0.100", "10.66.0.2")},
	} {
		r := Resolver{Carried: true, MaxAge: c.maxAge}
		got, err := r.Candidates(d, d.Interfaces[0])
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("MaxAge %v: %v, %v; want %v", c.maxAge, got, err, c.want)
		}
	}
}

// A link-local address is unique on its link only: two NICs (two routers
// on two networks) may both have fe80::1, and neither is refused. The
// second used to be refused as claimed by the first.
func TestClaimsLinkLocalPerLink(t *testing.T) {
	c := NewClaims(4)
	a := NIC{Domain: "a", MAC: rarp.MAC{2, 0, 0, 0, 0, 1}}
	b := NIC{Domain: "b", MAC: rarp.MAC{2, 0, 0, 0, 0, 2}}
	for _, nic := range []NIC{a, b} {
		if g, r := c.Claim(nic, cands(SourceLearned, "fe80::1", "2001:db8::1")); nic == a && (len(g) != 2 || len(r) != 0) {
			t.Fatalf("a granted %v, refused %+v", g, r)
		} else if nic == b && (len(g) != 1 || g[0].IP.String() != "fe80::1" || len(r) != 1 || r[0].Reason != ReasonClaimed) {
			t.Fatalf("b granted %v, refused %+v: want fe80::1 granted, 2001:db8::1 refused as a's", g, r)
		}
	}
	if _, ok := c.Holder(netip.MustParseAddr("fe80::1")); ok {
		t.Error("fe80::1 is held host-wide")
	}
}

// Users finds the MACs using an address, and stays in step with what the
// store holds: an address two MACs showed has both; one gone quiet for
// maxAge, replaced, evicted with its MAC or forgotten has none.
func TestLearnedUsers(t *testing.T) {
	const age = 10 * time.Minute
	l := NewLearned(1, 2, age)
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	l.SetClock(func() time.Time { return now })
	a, b, c := rarp.MAC{2, 0, 0, 0, 0, 1}, rarp.MAC{2, 0, 0, 0, 0, 2}, rarp.MAC{2, 0, 0, 0, 0, 3}
	vip, other := netip.MustParseAddr("10.0.0.100"), netip.MustParseAddr("10.0.0.7")
	want := func(what string, ip netip.Addr, macs ...rarp.MAC) {
		t.Helper()
		got := l.Users(ip)
		slices.SortFunc(got, func(x, y rarp.MAC) int { return slices.Compare(x[:], y[:]) })
		if !slices.Equal(got, macs) {
			t.Fatalf("%s: Users(%s) = %v, want %v", what, ip, got, macs)
		}
	}
	want("empty store", vip)
	l.Add(a, vip)
	l.Add(b, vip) // a VIP that failed over: both showed it
	want("two users", vip, a, b)
	now = now.Add(age)
	want("both quiet for maxAge", vip)
	l.Add(a, other) // the expired VIP makes room (perMAC 1)
	want("a renumbered", vip)
	want("a's new address", other, a)
	l.Add(b, vip)
	want("b shows it again", vip, b)
	l.Add(c, other) // a third MAC: the store of 2 evicts a, seen least recently
	want("a evicted", other, c)
	l.Forget(b)
	want("b forgotten", vip)
	if n := len(l.users); n != 1 {
		t.Fatalf("index holds %d addresses, want 1 (c's): %v", n, l.users)
	}
}
