package ipsource

import (
	"net/netip"
	"sync"

	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// Source names where an address came from; it is also a metric label.
type Source string

// The sources, in the order Resolve tries them.
const (
	SourceNova    Source = "nova"
	SourceStatic  Source = "static"
	SourceLearned Source = "learned"
	// SourceCarried: learned on the host the domain came from, carried in
	// our own <metadata> (domxml.Domain.CarriedAddresses).
	SourceCarried Source = "carried"
	// SourceLeases: libvirt's DHCP leases on the NIC's libvirt network.
	SourceLeases Source = "leases"
)

// Candidate is an address for a NIC and where it came from.
type Candidate struct {
	IP     netip.Addr
	Source Source
}

// NIC identifies one running NIC on this host: the domain's UUID and the
// NIC's MAC (two NICs of one domain have different MACs; the same MAC in
// two domains is two NICs, and the registry tells them apart).
type NIC struct {
	Domain string
	MAC    rarp.MAC
}

// Reason says why an address was refused; a stable metric label.
type Reason string

// Refusal reasons.
const (
	// ReasonClaimed: another local running NIC holds the address.
	ReasonClaimed Reason = "claimed_by_other_nic"
	// ReasonLimit: the NIC already holds the maximum number of addresses.
	ReasonLimit Reason = "per_nic_limit"
)

// Refusal is one address Claims did not grant.
type Refusal struct {
	Candidate
	Reason Reason
	Holder NIC // ReasonClaimed: who holds it
}

// Claims is the registry of which local running NIC announces which
// address. The first NIC to claim an address keeps it until it releases it
// (its domain stops or migrates away): the host must never announce an IP
// for two MACs, and a VM that claims its neighbour's address gets nothing
// for it. Safe for concurrent use.
type Claims struct {
	mu     sync.Mutex
	max    int
	holder map[netip.Addr]NIC
	held   map[NIC][]Candidate
}

// NewClaims returns a registry that grants at most maxPerNIC addresses to
// one NIC (0 or less: no limit).
func NewClaims(maxPerNIC int) *Claims {
	return &Claims{max: maxPerNIC, holder: map[netip.Addr]NIC{}, held: map[NIC][]Candidate{}}
}

// Claim replaces what nic holds with as many of cands, in order, as it may
// have: an address another NIC holds is refused, and so is every address
// past the limit. Addresses nic held before and no longer asks for are
// released. Duplicates in cands count once (the first wins).
func (c *Claims) Claim(nic NIC, cands []Candidate) (granted []Candidate, refused []Refusal) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.releaseLocked(nic)
	seen := map[netip.Addr]bool{}
	for _, cand := range cands {
		if seen[cand.IP] {
			continue
		}
		seen[cand.IP] = true
		// A link-local address is unique on its link only: two routers'
		// fe80::1 on two networks are no conflict, and are not claimed
		// host-wide (they still count towards the limit).
		linkLocal := cand.IP.IsLinkLocalUnicast()
		if h, ok := c.holder[cand.IP]; ok && h != nic && !linkLocal {
			refused = append(refused, Refusal{Candidate: cand, Reason: ReasonClaimed, Holder: h})
			continue
		}
		if c.max > 0 && len(granted) >= c.max {
			refused = append(refused, Refusal{Candidate: cand, Reason: ReasonLimit})
			continue
		}
		if !linkLocal {
			c.holder[cand.IP] = nic
		}
		granted = append(granted, cand)
	}
	if len(granted) > 0 {
		c.held[nic] = granted
	}
	return granted, refused
}

// Release frees everything nic holds.
func (c *Claims) Release(nic NIC) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.releaseLocked(nic)
}

// ReleaseDomain frees everything the NICs of domain hold.
func (c *Claims) ReleaseDomain(domain string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for nic := range c.held {
		if nic.Domain == domain {
			c.releaseLocked(nic)
		}
	}
}

func (c *Claims) releaseLocked(nic NIC) {
	for _, cand := range c.held[nic] {
		if c.holder[cand.IP] == nic {
			delete(c.holder, cand.IP)
		}
	}
	delete(c.held, nic)
}

// Holder returns the NIC holding ip.
func (c *Claims) Holder(ip netip.Addr) (NIC, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, ok := c.holder[ip]
	return n, ok
}
