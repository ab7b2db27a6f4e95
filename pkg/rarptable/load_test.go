package rarptable

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// fakeDNS is a tiny DNS server on loopback that answers A queries from a
// map and NXDOMAIN otherwise, so resolution tests do not depend on the
// machine's resolver. It counts queries to prove names resolve at load
// time only.
type fakeDNS struct {
	conn    net.PacketConn
	names   map[string][]string
	queries atomic.Int64
	down    atomic.Bool // answer SERVFAIL, as a resolver whose upstream is unreachable
}

func newFakeDNS(t *testing.T, names map[string][]string) *fakeDNS {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &fakeDNS{conn: c, names: names}
	t.Cleanup(func() { c.Close() })
	go d.serve()
	return d
}

func (d *fakeDNS) serve() {
	buf := make([]byte, 1500)
	for {
		n, from, err := d.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		var p dnsmessage.Parser
		h, err := p.Start(buf[:n])
		if err != nil {
			continue
		}
		q, err := p.Question()
		if err != nil {
			continue
		}
		d.queries.Add(1)
		name := strings.TrimSuffix(strings.ToLower(q.Name.String()), ".")
		var addrs []string
		for k, v := range d.names {
			if name == k || strings.HasPrefix(name, k+".") {
				addrs = v
			}
		}
		rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RCode: dnsmessage.RCodeSuccess}
		if addrs == nil {
			rh.RCode = dnsmessage.RCodeNameError
		}
		if d.down.Load() {
			rh.RCode, addrs = dnsmessage.RCodeServerFailure, nil
		}
		b := dnsmessage.NewBuilder(nil, rh)
		b.EnableCompression()
		_ = b.StartQuestions()
		_ = b.Question(q)
		_ = b.StartAnswers()
		if q.Type == dnsmessage.TypeA {
			for _, a := range addrs {
				ip := netip.MustParseAddr(a).As4()
				_ = b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 60}, dnsmessage.AResource{A: ip})
			}
		}
		out, err := b.Finish()
		if err == nil {
			_, _ = d.conn.WriteTo(out, from)
		}
	}
}

func (d *fakeDNS) resolver() *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var dl net.Dialer
		return dl.DialContext(ctx, "udp", d.conn.LocalAddr().String())
	}}
}

func writeFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func ip4(s string) [4]byte { return netip.MustParseAddr(s).As4() }

func TestLoadEthersAndMap(t *testing.T) {
	dns := newFakeDNS(t, map[string][]string{"pxe-a": {"192.0.2.10"}, "multi": {"198.51.100.1", "192.0.2.11", "198.51.100.1"}})
	dir := t.TempDir()
	ethers := writeFile(t, dir, "ethers", `# lab
52:54:00:00:00:01 10.99.0.1
52:54:00:00:00:02 pxe-a
52:54:00:00:00:03 multi
52:54:00:00:00:01 10.99.0.99
52:54:00:00:00:04 10.99.0.4
`)
	mapf := writeFile(t, dir, "map.yaml", `mappings:
  - mac: 52:54:00:00:00:04
    ip: 10.99.4.4
  - mac: 52:54:00:00:00:05
    ip: 10.99.5.5
    interface: br0
  - mac: 52:54:00:00:00:01
    ip: 10.99.1.1
    interface: br1
`)
	l := &Loader{Files: Files{Ethers: ethers, Map: mapf}, Resolver: dns.resolver()}
	res, err := l.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	tb := res.Table
	if tb.Len() != 6 || res.Names != 2 {
		t.Fatalf("entries %d names %d, want 6 and 2", tb.Len(), res.Names)
	}
	check := func(ifname, mac string, want ...string) {
		t.Helper()
		got := tb.Lookup(ifname, rarp.MustParseMAC(mac))
		var ws [][4]byte
		for _, w := range want {
			ws = append(ws, ip4(w))
		}
		if fmt.Sprint(got) != fmt.Sprint(ws) {
			t.Errorf("Lookup(%q, %s) = %v, want %v", ifname, mac, got, ws)
		}
	}
	check("eth0", "52:54:00:00:00:01", "10.99.0.1")                  // the first ethers line wins
	check("br1", "52:54:00:00:00:01", "10.99.1.1")                   // the interface's own mapping wins
	check("eth0", "52:54:00:00:00:02", "192.0.2.10")                 // resolved by name
	check("eth0", "52:54:00:00:00:03", "198.51.100.1", "192.0.2.11") // all addresses, in order, once
	check("eth0", "52:54:00:00:00:04", "10.99.4.4")                  // the map overrides ethers
	check("br0", "52:54:00:00:00:05", "10.99.5.5")
	check("eth0", "52:54:00:00:00:05") // restricted to br0
	check("eth0", "52:54:00:00:00:09") // unknown
	if got := tb.Source("eth0", rarp.MustParseMAC("52:54:00:00:00:02")); got != ethers+":3" {
		t.Errorf("source %q", got)
	}
	if got := tb.Source("br0", rarp.MustParseMAC("52:54:00:00:00:05")); got != mapf+":4" {
		t.Errorf("source %q", got)
	}
	if fmt.Sprint(tb.Interfaces()) != "[br0 br1]" {
		t.Errorf("interfaces %v", tb.Interfaces())
	}
	want := []string{
		ethers + ":5: 52:54:00:00:00:01 is also on line 2, which wins (as in glibc)",
		ethers + ":6: 52:54:00:00:00:04 is overridden by " + mapf + ":2",
	}
	var got []string
	for _, w := range res.Warnings {
		got = append(got, w.String())
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("warnings\n%q\nwant\n%q", got, want)
	}
	// Names resolve when the table loads, never on lookup.
	q := dns.queries.Load()
	for i := 0; i < 100; i++ {
		tb.Lookup("eth0", rarp.MustParseMAC("52:54:00:00:00:02"))
	}
	if dns.queries.Load() != q {
		t.Fatal("lookups queried DNS")
	}
}

func TestLoadReportsEveryUnresolvedLine(t *testing.T) {
	dns := newFakeDNS(t, map[string][]string{"known": {"192.0.2.1"}})
	dir := t.TempDir()
	ethers := writeFile(t, dir, "ethers", "52:54:00:00:00:01 known\n52:54:00:00:00:02 ghost\n52:54:00:00:00:03 ghost\n")
	mapf := writeFile(t, dir, "map.yaml", "mappings:\n  - mac: 52:54:00:00:00:04\n    host: phantom\n")
	l := &Loader{Files: Files{Ethers: ethers, Map: mapf}, Resolver: dns.resolver()}
	_, err := l.Load(context.Background())
	var le *LoadError
	if !errors.As(err, &le) {
		t.Fatalf("got %v", err)
	}
	var got []string
	for _, p := range le.Problems {
		got = append(got, p.String())
	}
	want := []string{
		ethers + `:2: host "ghost" does not resolve to an IPv4 address: no such host`,
		ethers + `:3: host "ghost" does not resolve to an IPv4 address: no such host`,
		mapf + `:2: host "phantom" does not resolve to an IPv4 address: no such host`,
	}
	if len(got) != 3 || !sameSet(got, want) {
		t.Fatalf("problems\n%q\nwant\n%q", got, want)
	}
}

func sameSet(a, b []string) bool {
	m := map[string]int{}
	for _, x := range a {
		m[x]++
	}
	for _, x := range b {
		m[x]--
	}
	for _, v := range m {
		if v != 0 {
			return false
		}
	}
	return true
}

func TestLoadSystemResolverUsesHostsFile(t *testing.T) {
	// "localhost" is in every /etc/hosts; the default resolver must find
	// it there without DNS.
	dir := t.TempDir()
	ethers := writeFile(t, dir, "ethers", "52:54:00:00:00:01 localhost\n")
	res, err := (&Loader{Files: Files{Ethers: ethers}}).Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Table.Lookup("x", rarp.MustParseMAC("52:54:00:00:00:01")); len(got) == 0 || got[0] != ip4("127.0.0.1") {
		t.Fatalf("localhost -> %v", got)
	}
}

func TestLoadProblems(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "nope")
	if _, err := (&Loader{Files: Files{Ethers: missing}}).Load(context.Background()); err == nil ||
		err.Error() != missing+": cannot open: no such file or directory" {
		t.Fatalf("missing file: %v", err)
	}
	if _, err := (&Loader{}).Load(context.Background()); err == nil {
		t.Fatal("no files: no error")
	}
	mapf := writeFile(t, dir, "dup.yaml", "mappings:\n  - {mac: 52:54:00:00:00:01, ip: 10.0.0.1}\n  - {mac: 52:54:00:00:00:01, ip: 10.0.0.2}\n  - {mac: 52:54:00:00:00:01, ip: 10.0.0.3, interface: br0}\n")
	_, err := (&Loader{Files: Files{Map: mapf}}).Load(context.Background())
	if err == nil || err.Error() != mapf+":3: second mapping for 52:54:00:00:00:01 (first on line 2)" {
		t.Fatalf("duplicate in map: %v", err)
	}
	// A second mapping is the text's fault: a name that does not resolve
	// must neither hide it nor make the error transient (run would start
	// and retry a table that can never load).
	dupHost := writeFile(t, dir, "dup-host.yaml", "mappings:\n  - {mac: 52:54:00:00:00:01, ip: 10.0.0.1}\n  - {mac: 52:54:00:00:00:01, host: nosuch.invalid}\n")
	_, err = (&Loader{Files: Files{Map: dupHost}, Resolver: newFakeDNS(t, nil).resolver()}).Load(context.Background())
	var le *LoadError
	if !errors.As(err, &le) || le.Transient() || err.Error() != dupHost+":3: second mapping for 52:54:00:00:00:01 (first on line 2)" {
		t.Fatalf("duplicate beside an unresolvable name: %v", err)
	}
	both := writeFile(t, dir, "bad-ethers", "52:54:00:00:00:01 10.0.0.1\nbogus\n")
	badMap := writeFile(t, dir, "bad.yaml", "mappings:\n  - {mac: 52:54:00:00:00:01, ip: x.y}\n")
	_, err = (&Loader{Files: Files{Ethers: both, Map: badMap}}).Load(context.Background())
	if !errors.As(err, &le) || len(le.Problems) != 2 || !strings.HasPrefix(le.Problems[0].String(), badMap+":2: ip: ") ||
		le.Problems[1].String() != both+`:2: "bogus" is not a MAC address` {
		t.Fatalf("problems in both files: %v", err)
	}
}

func TestNewTable(t *testing.T) {
	tb, err := NewTable([]Entry{
		{MAC: rarp.MustParseMAC("52:54:00:00:00:01"), IPs: []netip.Addr{netip.MustParseAddr("10.0.0.1")}},
		{MAC: rarp.MustParseMAC("52:54:00:00:00:01"), IPs: []netip.Addr{netip.MustParseAddr("::ffff:10.0.0.2")}, Interface: "br0"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := tb.Lookup("br0", rarp.MustParseMAC("52:54:00:00:00:01")); len(got) != 1 || got[0] != ip4("10.0.0.2") {
		t.Fatalf("br0: %v", got)
	}
	if got := tb.Source("eth0", rarp.MustParseMAC("52:54:00:00:00:01")); got != "entry 1" {
		t.Fatalf("source %q", got)
	}
	_, err = NewTable([]Entry{
		{MAC: rarp.MustParseMAC("52:54:00:00:00:01"), IPs: []netip.Addr{netip.MustParseAddr("2001:db8::1")}, Source: "api"},
		{MAC: rarp.MustParseMAC("ff:ff:ff:ff:ff:ff"), IPs: []netip.Addr{netip.MustParseAddr("10.0.0.1")}},
		{MAC: rarp.MustParseMAC("52:54:00:00:00:02"), IPs: []netip.Addr{netip.MustParseAddr("10.0.0.1")}},
		{MAC: rarp.MustParseMAC("52:54:00:00:00:02"), IPs: []netip.Addr{netip.MustParseAddr("10.0.0.3")}},
	})
	var le *LoadError
	if !errors.As(err, &le) || len(le.Problems) != 4 {
		t.Fatalf("got %v", err)
	}
}

// Every entry has a source of its own; past 65,536 of them a 16-bit index
// wrapped and entry 65,537 was logged as entry 1's.
func TestNewTableSourcesPast65536(t *testing.T) {
	const n = 70000
	entries := make([]Entry, n)
	for i := range entries {
		mac := rarp.MAC{0x52, 0x54, 0, byte(i >> 16), byte(i >> 8), byte(i)}
		entries[i] = Entry{MAC: mac, IPs: []netip.Addr{netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})},
			Source: fmt.Sprintf("api:%d", i+1)}
	}
	tb, err := NewTable(entries)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 65535, 65536, 65537, n - 1} {
		if got, want := tb.Source("", entries[i].MAC), fmt.Sprintf("api:%d", i+1); got != want {
			t.Errorf("entry %d: source %q, want %q", i+1, got, want)
		}
	}
}

func TestHolderAndLookupDoNotAllocate(t *testing.T) {
	tb, err := NewTable([]Entry{{MAC: rarp.MustParseMAC("52:54:00:00:00:01"), IPs: []netip.Addr{netip.MustParseAddr("10.0.0.1")}}})
	if err != nil {
		t.Fatal(err)
	}
	h := NewHolder(nil)
	if h.Load().Len() != 0 || h.Load().Lookup("x", rarp.MustParseMAC("52:54:00:00:00:01")) != nil {
		t.Fatal("empty holder answers")
	}
	h.Store(tb)
	mac := rarp.MustParseMAC("52:54:00:00:00:01")
	var n int
	allocs := testing.AllocsPerRun(1000, func() {
		v := h.Load().View("eth0")
		n += len(v.Lookup(mac))
	})
	if allocs != 0 || n == 0 {
		t.Fatalf("%v allocations per lookup (found %d)", allocs, n)
	}
}

// At start, a table that fails only for reasons that pass by themselves
// (DNS down, a file not there yet) does not stop the start: it is retried
// in the background until it loads. A problem in a file's text does.
func TestStartRetriesTransientFailuresInTheBackground(t *testing.T) {
	mac1 := rarp.MustParseMAC("52:54:00:00:00:01")
	t.Run("DNS down at start", func(t *testing.T) {
		dns := newFakeDNS(t, map[string][]string{"pxe-1": {"192.0.2.1"}})
		dns.down.Store(true)
		ethers := writeFile(t, t.TempDir(), "ethers", "52:54:00:00:00:01 pxe-1\n")
		h := NewHolder(nil)
		m := NewMetrics(h, nil)
		r := &Reloader{Loader: &Loader{Files: Files{Ethers: ethers}, Resolver: dns.resolver(), ResolveTimeout: time.Second},
			Holder: h, Metrics: m, RetryMin: 50 * time.Millisecond, RetryMax: 100 * time.Millisecond}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		if err := r.Start(ctx); err != nil {
			t.Fatalf("a DNS failure refused the start: %v", err)
		}
		if h.Load().Len() != 0 || r.Loaded() {
			t.Fatal("a table was served although the name did not resolve")
		}
		netnstest.WaitFor(t, "two failed reloads", func() bool { return counterValue(t, m, "rarp_announce_table_reloads_total", "error") >= 2 })
		dns.down.Store(false)
		netnstest.WaitFor(t, "the table with mac1", func() bool { return h.Load().Lookup("br0", mac1) != nil })
		if !r.Loaded() {
			t.Fatal("Loaded is false after the retry loaded the table")
		}
		if got := h.Load().Lookup("br0", mac1); got[0] != ip4("192.0.2.1") {
			t.Fatalf("lookup %v", got)
		}
	})
	t.Run("file not there yet", func(t *testing.T) {
		dir := t.TempDir()
		ethers := filepath.Join(dir, "ethers")
		h := NewHolder(nil)
		r := &Reloader{Loader: &Loader{Files: Files{Ethers: ethers}}, Holder: h, RetryMin: 20 * time.Millisecond, RetryMax: 50 * time.Millisecond}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		if err := r.Start(ctx); err != nil {
			t.Fatalf("a missing file refused the start: %v", err)
		}
		writeFile(t, dir, "ethers", "52:54:00:00:00:01 10.0.0.1\n")
		netnstest.WaitFor(t, "the table with mac1", func() bool { return h.Load().Lookup("br0", mac1) != nil })
	})
	t.Run("syntax error is final", func(t *testing.T) {
		dir := t.TempDir()
		// A bad line and a missing map: the bad line decides.
		ethers := writeFile(t, dir, "ethers", "52:54:00:00:00:01 10.0.0.300\n")
		r := &Reloader{Loader: &Loader{Files: Files{Ethers: ethers, Map: filepath.Join(dir, "map.yaml")}}, Holder: NewHolder(nil)}
		err := r.Start(context.Background())
		var le *LoadError
		if !errors.As(err, &le) || le.Transient() || len(le.Problems) != 2 || !le.Problems[0].Transient || le.Problems[1].Transient {
			t.Fatalf("got %v (%+v)", err, le)
		}
	})
}

func TestReloadKeepsOldTableOnError(t *testing.T) {
	dir := t.TempDir()
	ethers := writeFile(t, dir, "ethers", "52:54:00:00:00:01 10.0.0.1\n")
	h := NewHolder(nil)
	m := NewMetrics(h, nil)
	r := &Reloader{Loader: &Loader{Files: Files{Ethers: ethers}}, Holder: h, Metrics: m}
	if err := r.Reload(context.Background(), "start"); err != nil {
		t.Fatal(err)
	}
	first := h.Load()
	writeFile(t, dir, "ethers", "52:54:00:00:00:01 10.0.0.1\n52:54:00:00:00:02 10.0.0.300\n")
	err := r.Reload(context.Background(), "test")
	if err == nil || !strings.HasPrefix(err.Error(), ethers+":2: ") {
		t.Fatalf("reload of a broken file: %v", err)
	}
	if h.Load() != first {
		t.Fatal("a broken file replaced the table")
	}
	if got := counterValue(t, m, "rarp_announce_table_reloads_total", "error"); got != 1 {
		t.Fatalf("error reloads %v", got)
	}
	if got := counterValue(t, m, "rarp_announce_table_reloads_total", "ok"); got != 1 {
		t.Fatalf("ok reloads %v", got)
	}
	if got := counterValue(t, m, "rarp_announce_table_entries", ""); got != 1 {
		t.Fatalf("entries %v", got)
	}
}

// A file changed after the last load but before Watch added its watches
// makes no event: Watch looks at the files once when it starts. (serve
// logs "answering RARP requests" before its watch is in place; a table
// written then was missed until the next change.)
func TestWatchSeesAChangeMadeBeforeItStarted(t *testing.T) {
	r, h, dir := loadedReloader(t, 20*time.Millisecond)
	writeFile(t, dir, "ethers", "52:54:00:00:00:01 10.0.0.22\n")
	watchInBackground(t, r)
	netnstest.WaitFor(t, "the change made before Watch", tableSays(h, rarp.MustParseMAC("52:54:00:00:00:01"), "10.0.0.22"))
}

// loadedReloader returns a Reloader of dir/ethers (52:54:00:00:00:01 is
// 10.0.0.1) with the table loaded into h, and dir.
func loadedReloader(t *testing.T, debounce time.Duration) (r *Reloader, h *Holder, dir string) {
	t.Helper()
	dir = t.TempDir()
	ethers := writeFile(t, dir, "ethers", "52:54:00:00:00:01 10.0.0.1\n")
	h = NewHolder(nil)
	r = &Reloader{Loader: &Loader{Files: Files{Ethers: ethers}}, Holder: h, Debounce: debounce}
	if err := r.Reload(context.Background(), "start"); err != nil {
		t.Fatal(err)
	}
	return r, h, dir
}

// watchInBackground runs r.Watch until the test ends, and fails the test
// if it returns an error.
func watchInBackground(t *testing.T, r *Reloader) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Watch(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
}

// tableSays reports whether h's table maps mac to the one address ip.
func tableSays(h *Holder, mac rarp.MAC, ip string) func() bool {
	return func() bool {
		got := h.Load().Lookup("x", mac)
		return len(got) == 1 && got[0] == ip4(ip)
	}
}

// Another file in the table's directory changing more often than the
// debounce (a log, a lease file) must not put the look at the table off
// for ever: it used to, and an edit of the table was never loaded.
func TestWatchReloadsBesideABusyFile(t *testing.T) {
	r, h, dir := loadedReloader(t, 50*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	busy := make(chan struct{})
	go func() {
		defer close(busy)
		for i := 0; ctx.Err() == nil; i++ {
			_ = os.WriteFile(filepath.Join(dir, "busy.log"), []byte(fmt.Sprint(i)), 0o644)
			time.Sleep(20 * time.Millisecond)
		}
	}()
	defer func() { cancel(); <-busy }()
	watchInBackground(t, r)
	time.Sleep(100 * time.Millisecond) // let the watcher start
	start := time.Now()
	writeFile(t, dir, "ethers", "52:54:00:00:00:01 10.0.0.2\n")
	netnstest.WaitWithin(t, 2*time.Second, "the edit beside a busy file", tableSays(h, rarp.MustParseMAC("52:54:00:00:00:01"), "10.0.0.2"))
	t.Logf("loaded %v after the edit (at most 8 x 50 ms)", time.Since(start).Round(time.Millisecond))
}

func TestWatchReloadsOnChange(t *testing.T) {
	dir := t.TempDir()
	ethers := writeFile(t, dir, "ethers", "52:54:00:00:00:01 10.0.0.1\n")
	h := NewHolder(nil)
	m := NewMetrics(h, nil)
	r := &Reloader{Loader: &Loader{Files: Files{Ethers: ethers}}, Holder: h, Metrics: m, Debounce: 20 * time.Millisecond}
	if err := r.Reload(context.Background(), "start"); err != nil {
		t.Fatal(err)
	}
	watchInBackground(t, r)
	mac := rarp.MustParseMAC("52:54:00:00:00:01")
	ipIs := func(s string) func() bool { return tableSays(h, mac, s) }
	time.Sleep(50 * time.Millisecond) // let the watcher start

	// Written in place.
	writeFile(t, dir, "ethers", "52:54:00:00:00:01 10.0.0.2\n")
	netnstest.WaitFor(t, "in-place write", ipIs("10.0.0.2"))

	// Replaced by rename, as editors and config management do.
	tmp := writeFile(t, dir, ".ethers.tmp", "52:54:00:00:00:01 10.0.0.3\n")
	if err := os.Rename(tmp, ethers); err != nil {
		t.Fatal(err)
	}
	netnstest.WaitFor(t, "rename", ipIs("10.0.0.3"))

	// Deleted: the old table stays; created again: loaded.
	okBefore := counterValue(t, m, "rarp_announce_table_reloads_total", "ok")
	if err := os.Remove(ethers); err != nil {
		t.Fatal(err)
	}
	netnstest.WaitFor(t, "failed reload after delete", func() bool { return counterValue(t, m, "rarp_announce_table_reloads_total", "error") >= 1 })
	if !ipIs("10.0.0.3")() {
		t.Fatal("deleting the file changed the table")
	}
	writeFile(t, dir, "ethers", "52:54:00:00:00:01 10.0.0.4\n")
	netnstest.WaitFor(t, "re-created file", ipIs("10.0.0.4"))

	// Another file in the directory changing does not reload.
	ok := counterValue(t, m, "rarp_announce_table_reloads_total", "ok")
	if ok != okBefore+1 {
		t.Fatalf("ok reloads %v, want %v", ok, okBefore+1)
	}
	writeFile(t, dir, "unrelated", "x")
	time.Sleep(200 * time.Millisecond)
	if got := counterValue(t, m, "rarp_announce_table_reloads_total", "ok"); got != ok {
		t.Fatalf("an unrelated file reloaded the table (%v -> %v)", ok, got)
	}
}
