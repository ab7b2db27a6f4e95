package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap/zaptest"

	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/pkg/domxml"
	"github.com/rarp-announce/rarp-announce/pkg/ipsource"
	"github.com/rarp-announce/rarp-announce/pkg/plan"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// stillLearner stands in for an ipsource.Learner: it runs until closed.
type stillLearner struct{ done chan struct{} }

func (l *stillLearner) Run(ctx context.Context) error {
	select {
	case <-ctx.Done():
	case <-l.done:
	}
	return nil
}
func (l *stillLearner) Close() error { return nil }

// metaWrites records MetadataWriter calls; err, if set, is returned.
type metaWrites struct {
	mu    sync.Mutex
	elems []string
	err   error
}

func (w *metaWrites) write(_ context.Context, uuid string, elem []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	w.elems = append(w.elems, uuid+" "+string(elem))
	return nil
}

func (w *metaWrites) got() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.elems...)
}

// noSeen drops the seen attributes of written elements, for comparisons
// that are not about them.
func noSeen(elems []string) []string {
	out := make([]string, len(elems))
	for i, e := range elems {
		out[i] = seenAttr.ReplaceAllString(e, "")
	}
	return out
}

var seenAttr = regexp.MustCompile(` seen="[^"]*"`)

// waitWrites waits until w holds n writes, then a little more to catch
// an extra one.
func waitWrites(t *testing.T, w *metaWrites, n int, within time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(within)
	for len(w.got()) < n && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	return w.got()
}

const carryDomXML = `<domain type='kvm' id='3'><name>vm</name><uuid>72616c61-766d-4000-8000-000000000001</uuid>
<metadata><rarp:addresses xmlns:rarp='` + domxml.AddressesNamespace + `'>
<rarp:nic mac='52:54:00:aa:bb:cc'><rarp:ip address='10.66.0.99'/></rarp:nic>
<rarp:nic mac='52:54:00:aa:bb:dd'><rarp:ip address='10.66.1.5'/></rarp:nic>
</rarp:addresses></metadata>
<devices><interface type='bridge'><mac address='52:54:00:aa:bb:cc'/><source bridge='br0'/><target dev='vnet0'/><alias name='net0'/></interface></devices></domain>`

// TestCarryLearnedAddresses: what a learner learns on a running domain's
// NIC is written into the domain's live XML at once, merged with what the
// domain carried in (the learned address first; a NIC not learning here
// keeps its entry); a second change within carry_every is written once
// when it ends, with the latest state; a change to the same state is not
// written; a release cancels a write due; libvirt's refusal (read-only
// socket) stops carrying for good, counted once per attempt.
func TestCarryLearnedAddresses(t *testing.T) {
	dom, err := domxml.Parse([]byte(carryDomXML))
	if err != nil {
		t.Fatal(err)
	}
	mac := dom.Interfaces[0].MAC
	store := ipsource.NewLearned(4, 16, 0)
	var (
		mu   sync.Mutex
		seen func(ipsource.Event)
	)
	open := func(dev string, m rarp.MAC, s func(ipsource.Event)) (Learner, error) {
		if dev != "vnet0" || m != mac {
			return nil, fmt.Errorf("learner on %s for %s", dev, m)
		}
		mu.Lock()
		seen = s
		mu.Unlock()
		return &stillLearner{done: make(chan struct{})}, nil
	}
	learn := func(ip string) {
		t.Helper()
		a := netip.MustParseAddr(ip)
		r := store.Add(mac, a)
		var s func(ipsource.Event)
		netnstest.Eventually(t, 2*time.Second, func() error {
			mu.Lock()
			s = seen
			mu.Unlock()
			if s == nil {
				return errors.New("no learner opened")
			}
			return nil
		})
		s(ipsource.Event{MAC: mac, IP: a, Proto: 1, Result: r})
	}
	w := &metaWrites{}
	m := NewIPMetrics(nil)
	const every = 300 * time.Millisecond
	f := NewIPFollower(IPOptions{Resolver: &ipsource.Resolver{Learned: store}, Learn: open, Metrics: m,
		Logger: zaptest.NewLogger(t), Carry: CarryOptions{Write: w.write, Every: every, PerNIC: 8}})
	defer f.Release(dom.UUID)
	targets := []plan.Target{{NIC: dom.Interfaces[0], Strategy: plan.Host, Port: "vnet0", Master: "br0"}}
	f.RunningDomain(dom, targets, zaptest.NewLogger(t))

	learn("10.66.0.10")
	want1 := dom.UUID + ` <addresses><nic mac="52:54:00:aa:bb:cc"><ip address="10.66.0.10"/><ip address="10.66.0.99"/></nic>` +
		`<nic mac="52:54:00:aa:bb:dd"><ip address="10.66.1.5"/></nic></addresses>`
	if got := noSeen(waitWrites(t, w, 1, time.Second)); len(got) != 1 || got[0] != want1 {
		t.Fatalf("first write: %q\nwant %q", got, want1)
	}
	start := time.Now()
	learn("fd66::10")
	learn("10.66.0.11")
	got := noSeen(waitWrites(t, w, 2, 2*time.Second))
	if len(got) != 2 {
		t.Fatalf("writes after two changes within carry_every: %q, want 2 in all", got)
	}
	if el := time.Since(start); el < every-50*time.Millisecond {
		t.Fatalf("second write %v after the change, want >= carry_every %v", el, every)
	}
	want2 := dom.UUID + ` <addresses><nic mac="52:54:00:aa:bb:cc"><ip address="10.66.0.10"/><ip address="fd66::10"/><ip address="10.66.0.11"/><ip address="10.66.0.99"/></nic>` +
		`<nic mac="52:54:00:aa:bb:dd"><ip address="10.66.1.5"/></nic></addresses>`
	if got[1] != want2 {
		t.Fatalf("second write %q\nwant %q", got[1], want2)
	}
	// a change event that leaves the state as written: nothing written
	time.Sleep(every)
	f.carry.changed(dom.UUID)
	if got := waitWrites(t, w, 3, 200*time.Millisecond); len(got) != 2 {
		t.Fatalf("unchanged state written again: %q", got)
	}
	// a release cancels what is due
	learn("10.66.0.12")
	if got := waitWrites(t, w, 3, time.Second); len(got) != 3 {
		t.Fatalf("a change after carry_every: %d writes, want 3", len(got))
	}
	learn("10.66.0.13") // due carry_every after the last write
	f.Release(dom.UUID)
	if got := waitWrites(t, w, 4, every+200*time.Millisecond); len(got) != 3 {
		t.Fatalf("after the release: %d writes, want 3 (the one due was cancelled)", len(got))
	}
	if v := testutil.ToFloat64(m.carries.WithLabelValues("ok")); v != 3 {
		t.Fatalf("ip_metadata_writes_total{result=ok} = %v, want 3", v)
	}

	// read-only: denied once, then carrying is off
	w.mu.Lock()
	w.err = fmt.Errorf("%w: read only access prevents virDomainSetMetadata", ErrMetadataDenied)
	w.mu.Unlock()
	mu.Lock()
	seen = nil
	mu.Unlock()
	store.Forget(mac)
	f.RunningDomain(dom, targets, zaptest.NewLogger(t))
	learn("10.66.0.20")
	time.Sleep(100 * time.Millisecond)
	time.Sleep(every)
	learn("10.66.0.21")
	time.Sleep(every + 100*time.Millisecond)
	if v := testutil.ToFloat64(m.carries.WithLabelValues("denied")); v != 1 {
		t.Fatalf("ip_metadata_writes_total{result=denied} = %v, want 1 (then no more tries)", v)
	}
}

// TestCarryForgetsAgedAddresses: with a max age, the element handed to the
// next host drops, without any new event, an address the guest stopped
// showing (a VIP that failed over to another VM) and what the domain
// carried in, once each was last seen that long ago; an address the guest
// keeps showing stays until it too goes quiet. The element carries each
// address's last sighting, so reading it again (a pause and resume, a
// landing on the next host) does not make an address young again (it did:
// each re-read gave what was carried in a new max age).
func TestCarryForgetsAgedAddresses(t *testing.T) {
	dom, err := domxml.Parse([]byte(carryDomXML))
	if err != nil {
		t.Fatal(err)
	}
	mac := dom.Interfaces[0].MAC
	const age = time.Second
	store := ipsource.NewLearned(4, 16, age)
	seen := make(chan func(ipsource.Event), 2)
	open := func(dev string, m rarp.MAC, s func(ipsource.Event)) (Learner, error) {
		seen <- s
		return &stillLearner{done: make(chan struct{})}, nil
	}
	w := &metaWrites{}
	f := NewIPFollower(IPOptions{Resolver: &ipsource.Resolver{Learned: store}, Learn: open, Metrics: NewIPMetrics(nil),
		Logger: zaptest.NewLogger(t), Carry: CarryOptions{Write: w.write, Every: 50 * time.Millisecond, PerNIC: 8, MaxAge: age}})
	defer f.Release(dom.UUID)
	targets := []plan.Target{{NIC: dom.Interfaces[0], Strategy: plan.Host, Port: "vnet0", Master: "br0"}}
	landed := time.Now()
	f.RunningDomain(dom, targets, zaptest.NewLogger(t))
	event := <-seen
	learn := func(ip string) {
		a := netip.MustParseAddr(ip)
		event(ipsource.Event{MAC: mac, IP: a, Proto: 1, Result: store.Add(mac, a)})
	}
	last := func(at time.Duration) string {
		time.Sleep(time.Until(landed.Add(at)))
		got := w.got()
		if len(got) == 0 {
			return ""
		}
		return got[len(got)-1]
	}
	elem := func(nics string) string { return dom.UUID + " <addresses>" + nics + "</addresses>" }

	learn("10.66.0.100") // the VIP, shown once
	time.Sleep(time.Until(landed.Add(400 * time.Millisecond)))
	learn("10.66.0.10") // the guest's own address
	written := last(600 * time.Millisecond)
	if got, want := noSeen([]string{written})[0], elem(`<nic mac="52:54:00:aa:bb:cc"><ip address="10.66.0.100"/><ip address="10.66.0.10"/><ip address="10.66.0.99"/></nic>`+
		`<nic mac="52:54:00:aa:bb:dd"><ip address="10.66.1.5"/></nic>`); got != want {
		t.Fatalf("before anything aged out: %q\nwant %q", got, want)
	}
	// Paused and resumed: the domain is released and read again, with
	// the element as written.
	f.Release(dom.UUID)
	el := strings.TrimPrefix(written, dom.UUID+" ")
	el = strings.NewReplacer("<addresses>", `<rarp:addresses xmlns:rarp="`+domxml.AddressesNamespace+`">`, "</addresses>", "</rarp:addresses>",
		"<nic", "<rarp:nic", "</nic>", "</rarp:nic>", "<ip", "<rarp:ip").Replace(el)
	again, err := domxml.Parse([]byte(regexp.MustCompile(`(?s)<metadata>.*</metadata>`).ReplaceAllString(carryDomXML, "<metadata>"+el+"</metadata>")))
	if err != nil {
		t.Fatal(err)
	}
	f.RunningDomain(again, targets, zaptest.NewLogger(t))
	event = <-seen
	store.Add(mac, netip.MustParseAddr("10.66.0.10")) // shown again: no event, a later expiry
	if got, want := noSeen([]string{last(age + 300*time.Millisecond)})[0], elem(`<nic mac="52:54:00:aa:bb:cc"><ip address="10.66.0.10"/></nic>`); got != want {
		t.Fatalf("after the VIP and the carried addresses aged out: %q\nwant %q", got, want)
	}
	if got := last(600*time.Millisecond + age + 400*time.Millisecond); got != elem("") {
		t.Fatalf("after the own address went quiet too: %q, want an empty element", got)
	}
	if got := store.Get(mac); got != nil {
		t.Fatalf("store still returns %v", got)
	}
}

// A carried address seen "in the future" (a host whose clock ran ahead
// wrote it, or a hand edit) ages from the time it is read here: it is
// dropped from the element learned_max_age later. It used to never age
// out, and every later host carried it on.
func TestCarryAgesAFutureSighting(t *testing.T) {
	xml := strings.Replace(carryDomXML, `<rarp:ip address='10.66.0.99'/>`, `<rarp:ip address='10.66.0.99' seen='2099-01-01T00:00:00.000Z'/>`, 1)
	dom, err := domxml.Parse([]byte(xml))
	if err != nil {
		t.Fatal(err)
	}
	const age = 500 * time.Millisecond
	store := ipsource.NewLearned(4, 16, age)
	open := func(string, rarp.MAC, func(ipsource.Event)) (Learner, error) {
		return &stillLearner{done: make(chan struct{})}, nil
	}
	w := &metaWrites{}
	f := NewIPFollower(IPOptions{Resolver: &ipsource.Resolver{Learned: store}, Learn: open, Metrics: NewIPMetrics(nil),
		Logger: zaptest.NewLogger(t), Carry: CarryOptions{Write: w.write, Every: 50 * time.Millisecond, PerNIC: 8, MaxAge: age}})
	defer f.Release(dom.UUID)
	f.RunningDomain(dom, []plan.Target{{NIC: dom.Interfaces[0], Strategy: plan.Host, Port: "vnet0", Master: "br0"}}, zaptest.NewLogger(t))
	time.Sleep(age + 500*time.Millisecond)
	got := w.got()
	if len(got) == 0 || strings.Contains(got[len(got)-1], "10.66.0.99") {
		t.Fatalf("writes %q: want the future-dated 10.66.0.99 dropped %v after it was read", got, age)
	}
}
