package ipsource

import (
	"net/netip"
	"slices"
	"sync"

	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// Learned keeps the addresses the host saw each MAC use, first come first
// kept, in memory, bounded: at most perMAC addresses per MAC and maxMACs
// MACs. A guest cannot grow it without bound, and a later address never
// evicts an earlier one (a guest that starts spoofing keeps the addresses
// it had; an operator who renumbers restarts the NIC, which calls Forget).
// Safe for concurrent use.
type Learned struct {
	mu      sync.Mutex
	perMAC  int
	maxMACs int
	m       map[rarp.MAC][]netip.Addr
}

// NewLearned returns an empty store with the given bounds (each at least 1).
func NewLearned(perMAC, maxMACs int) *Learned {
	return &Learned{perMAC: max(perMAC, 1), maxMACs: max(maxMACs, 1), m: map[rarp.MAC][]netip.Addr{}}
}

// LearnResult says what Add did; a stable metric label.
type LearnResult string

// Add results.
const (
	Learnt      LearnResult = "learned"
	AlreadyKnow LearnResult = "known"
	FullMAC     LearnResult = "per_mac_limit"
	FullStore   LearnResult = "store_full"
)

// Add records that mac used ip.
func (l *Learned) Add(mac rarp.MAC, ip netip.Addr) LearnResult {
	l.mu.Lock()
	defer l.mu.Unlock()
	have, ok := l.m[mac]
	switch {
	case slices.Contains(have, ip):
		return AlreadyKnow
	case !ok && len(l.m) >= l.maxMACs:
		return FullStore
	case len(have) >= l.perMAC:
		return FullMAC
	}
	l.m[mac] = append(have, ip)
	return Learnt
}

// Get returns a copy of what mac was seen using, in the order learned.
func (l *Learned) Get(mac rarp.MAC) []netip.Addr {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.m[mac])
}

// Forget drops what was learned for mac.
func (l *Learned) Forget(mac rarp.MAC) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.m, mac)
}
