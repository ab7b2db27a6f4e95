package ipsource

import (
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/rarp-announce/rarp-announce/pkg/domxml"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// Learned keeps the addresses the host saw each MAC use, in memory,
// bounded: at most perMAC addresses per MAC, first come first kept, and
// at most maxMACs MACs. A guest cannot grow it without bound, and a later
// address never evicts an earlier one of the same MAC while the earlier
// one is still in use (a guest that starts spoofing keeps the addresses it
// had). A MAC new to a full store evicts the MAC seen least recently: over
// months a host sees more NICs come and go than it runs at once, and a
// full store must not stop learning for the NICs running now (it did,
// until the agent restarted).
//
// An address the MAC has not shown for maxAge is forgotten: announcing it
// at the next landing would pull it to this MAC after it moved elsewhere
// (a keepalived VIP that failed over to another VM, a renumbered guest).
// A guest in use shows its addresses in every ARP request it sends, so an
// address that goes quiet that long is one the fabric will learn from
// the guest's own traffic anyway. Safe for concurrent use.
type Learned struct {
	mu      sync.Mutex
	perMAC  int
	maxMACs int
	maxAge  time.Duration // 0: never forgotten
	now     func() time.Time
	m       map[rarp.MAC]*learnedMAC
	seen    uint64 // counts Add calls: the order of the MACs' last sightings
	// users indexes m by address (Users): the MACs that hold each one,
	// fresh or not. An entry goes when its MAC drops the address.
	users map[netip.Addr][]rarp.MAC
}

type learnedMAC struct {
	ips  []domxml.Address // Seen: last shown
	seen uint64           // the Add that last saw the MAC
}

// NewLearned returns an empty store with the given bounds (each at least
// 1); an address not shown for maxAge is forgotten (0: never).
func NewLearned(perMAC, maxMACs int, maxAge time.Duration) *Learned {
	return &Learned{perMAC: max(perMAC, 1), maxMACs: max(maxMACs, 1), maxAge: max(maxAge, 0),
		now: time.Now, m: map[rarp.MAC]*learnedMAC{}, users: map[netip.Addr][]rarp.MAC{}}
}

// LearnResult says what Add did; a stable metric label.
type LearnResult string

// Add results.
const (
	Learnt      LearnResult = "learned"
	AlreadyKnow LearnResult = "known"
	FullMAC     LearnResult = "per_mac_limit"
)

// Add records that mac used ip now.
func (l *Learned) Add(mac rarp.MAC, ip netip.Addr) LearnResult {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
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
	i := slices.IndexFunc(e.ips, func(a domxml.Address) bool { return a.IP == ip })
	if i >= 0 && !e.ips[i].Expired(now, l.maxAge) {
		e.ips[i].Seen = now // the usual case: a guest showing what it has
		return AlreadyKnow
	}
	// Forgotten addresses make room: a guest renumbered by DHCP learns
	// its new address once the old one has gone quiet.
	e.ips = slices.DeleteFunc(e.ips, func(a domxml.Address) bool {
		if a.Expired(now, l.maxAge) {
			l.unindexLocked(mac, a.IP)
			return true
		}
		return false
	})
	if len(e.ips) >= l.perMAC {
		return FullMAC
	}
	e.ips = append(e.ips, domxml.Address{IP: ip, Seen: now})
	l.users[ip] = append(l.users[ip], mac)
	return Learnt
}

// unindexLocked removes mac from ip's users.
func (l *Learned) unindexLocked(mac rarp.MAC, ip netip.Addr) {
	us := slices.DeleteFunc(l.users[ip], func(m rarp.MAC) bool { return m == mac })
	if len(us) == 0 {
		delete(l.users, ip)
	} else {
		l.users[ip] = us
	}
}

// dropLocked forgets mac and its addresses.
func (l *Learned) dropLocked(mac rarp.MAC) {
	if e := l.m[mac]; e != nil {
		for _, a := range e.ips {
			l.unindexLocked(mac, a.IP)
		}
	}
	delete(l.m, mac)
}

// Users returns the MACs seen using ip within maxAge: a look-up by
// address, costing the address's users rather than the whole store.
func (l *Learned) Users(ip netip.Addr) []rarp.MAC {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	var out []rarp.MAC
	for _, mac := range l.users[ip] {
		e := l.m[mac]
		if e == nil {
			continue
		}
		if i := slices.IndexFunc(e.ips, func(a domxml.Address) bool { return a.IP == ip }); i >= 0 && !e.ips[i].Expired(now, l.maxAge) {
			out = append(out, mac)
		}
	}
	return out
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
	l.dropLocked(oldest)
}

// Get returns a copy of the addresses mac was seen using within maxAge,
// in the order learned.
func (l *Learned) Get(mac rarp.MAC) []netip.Addr {
	var ips []netip.Addr
	for _, a := range l.Fresh(mac) {
		ips = append(ips, a.IP)
	}
	return ips
}

// Fresh is Get with the time each address was last shown, for the
// domain's carried addresses (domxml.MarshalAddresses), which age from it
// on every host.
func (l *Learned) Fresh(mac rarp.MAC) []domxml.Address {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.m[mac]
	if e == nil {
		return nil
	}
	now := l.now()
	var out []domxml.Address
	for _, a := range e.ips {
		if !a.Expired(now, l.maxAge) {
			out = append(out, a)
		}
	}
	return out
}

// Forget drops what was learned for mac.
func (l *Learned) Forget(mac rarp.MAC) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.dropLocked(mac)
}
