package ipsource

import (
	"net/netip"
	"slices"
	"sync"

	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// Learned keeps the addresses the host saw each MAC use, in memory,
// bounded: at most perMAC addresses per MAC, first come first kept, and
// at most maxMACs MACs. A guest cannot grow it without bound, and a later
// address never evicts an earlier one of the same MAC (a guest that
// starts spoofing keeps the addresses it had). A MAC new to a full store
// evicts the MAC seen least recently: over months a host sees more NICs
// come and go than it runs at once, and a full store must not stop
// learning for the NICs running now (it did, until the agent restarted).
// Safe for concurrent use.
type Learned struct {
	mu      sync.Mutex
	perMAC  int
	maxMACs int
	m       map[rarp.MAC]*learnedMAC
	seen    uint64 // counts Add calls: the order of the MACs' last sightings
}

type learnedMAC struct {
	ips  []netip.Addr
	seen uint64 // the Add that last saw the MAC
}

// NewLearned returns an empty store with the given bounds (each at least 1).
func NewLearned(perMAC, maxMACs int) *Learned {
	return &Learned{perMAC: max(perMAC, 1), maxMACs: max(maxMACs, 1), m: map[rarp.MAC]*learnedMAC{}}
}

// LearnResult says what Add did; a stable metric label.
type LearnResult string

// Add results.
const (
	Learnt      LearnResult = "learned"
	AlreadyKnow LearnResult = "known"
	FullMAC     LearnResult = "per_mac_limit"
)

// Add records that mac used ip.
func (l *Learned) Add(mac rarp.MAC, ip netip.Addr) LearnResult {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seen++
	e := l.m[mac]
	if e == nil {
		if len(l.m) >= l.maxMACs {
			l.evictLocked()
		}
		e = &learnedMAC{}
		l.m[mac] = e
	}
	e.seen = l.seen
	switch {
	case slices.Contains(e.ips, ip):
		return AlreadyKnow
	case len(e.ips) >= l.perMAC:
		return FullMAC
	}
	e.ips = append(e.ips, ip)
	return Learnt
}

// evictLocked drops the MAC seen least recently. A scan: it runs only when
// a MAC new to a full store comes, at most once per NIC that starts.
func (l *Learned) evictLocked() {
	var oldest rarp.MAC
	var at uint64
	for mac, e := range l.m {
		if at == 0 || e.seen < at {
			oldest, at = mac, e.seen
		}
	}
	delete(l.m, oldest)
}

// Get returns a copy of what mac was seen using, in the order learned.
func (l *Learned) Get(mac rarp.MAC) []netip.Addr {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e := l.m[mac]; e != nil {
		return slices.Clone(e.ips)
	}
	return nil
}

// Forget drops what was learned for mac.
func (l *Learned) Forget(mac rarp.MAC) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.m, mac)
}
