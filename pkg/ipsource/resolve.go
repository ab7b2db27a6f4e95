package ipsource

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/rarp-announce/rarp-announce/pkg/domxml"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// LeaseSource returns the addresses libvirt's DHCP server of the libvirt
// network named network leased to mac (libvirtwatch's DHCPLeases).
type LeaseSource func(ctx context.Context, network string, mac rarp.MAC) ([]netip.Addr, error)

// LeaseTimeout bounds one lease lookup at landing.
const LeaseTimeout = 2 * time.Second

// Resolver gathers a NIC's addresses from the enabled sources, in order
// (Nova's metadata, the static map, what was learned here, what was learned
// on the previous host and carried in the domain's metadata, libvirt's DHCP
// leases for NICs on a libvirt network), and has
// Claims grant them. A nil or false source is switched off.
type Resolver struct {
	// Nova reads Nova's metadata from the domain XML.
	Nova bool
	// Static is the operator's per-MAC map.
	Static Static
	// Learned holds what Learners saw the guests use.
	Learned *Learned
	// Carried reads our own <metadata> element from the domain XML.
	Carried bool
	// MaxAge drops a carried address last seen longer ago than this
	// (ip_announce.learned_max_age; 0: none is dropped), so an address
	// the guest stopped using (a VIP that failed over to another VM) is
	// not announced from it at the next landing. An address without a
	// seen time (an element an older agent wrote) is kept.
	MaxAge time.Duration
	// Leases, if set, asks libvirt for the DHCP leases of NICs of
	// type='network' (their <source network>), one call per such NIC.
	Leases LeaseSource
	// Claims, if set, grants addresses (see Claims.Claim); without it
	// every candidate is returned as granted.
	Claims *Claims
}

// Remote reports whether Resolve asks libvirt for ifc (its leases: a NIC
// on a libvirt network with the leases source on), a call of up to
// LeaseTimeout; the other sources answer from memory and the XML.
func (r *Resolver) Remote(ifc domxml.Interface) bool {
	return r.Leases != nil && ifc.SourceNetwork != ""
}

// Resolve returns the addresses to announce for ifc of d, those refused and
// why, and errors about bad source entries (the good ones are still used).
// An address found in several sources is listed once, under the first.
// It is Candidates then Grant.
func (r *Resolver) Resolve(d *domxml.Domain, ifc domxml.Interface) (granted []Candidate, refused []Refusal, err error) {
	cands, err := r.Candidates(d, ifc)
	granted, refused = r.Grant(d, ifc, cands)
	return granted, refused, err
}

// Candidates gathers ifc's addresses from the sources without claiming
// them, and errors about bad source entries. It may ask libvirt (Remote):
// a caller that must not claim for a NIC that left meanwhile checks that
// between Candidates and Grant.
func (r *Resolver) Candidates(d *domxml.Domain, ifc domxml.Interface) ([]Candidate, error) {
	var (
		cands []Candidate
		errs  []error
	)
	if r.Nova {
		ips, _, nerr := d.NovaFixedIPs(ifc)
		if nerr != nil {
			errs = append(errs, nerr)
		}
		for _, ip := range ips {
			cands = append(cands, Candidate{IP: ip, Source: SourceNova})
		}
	}
	for _, ip := range r.Static[ifc.MAC] {
		cands = append(cands, Candidate{IP: ip, Source: SourceStatic})
	}
	if r.Learned != nil {
		for _, ip := range r.Learned.Get(ifc.MAC) {
			cands = append(cands, Candidate{IP: ip, Source: SourceLearned})
		}
	}
	if r.Carried {
		m, cerr := d.CarriedAddresses()
		if cerr != nil {
			errs = append(errs, fmt.Errorf("domain %s: %w", d.Name, cerr))
		}
		now := time.Now()
		for _, a := range m[ifc.MAC] {
			if a.Expired(now, r.MaxAge) {
				continue
			}
			cands = append(cands, Candidate{IP: a.IP, Source: SourceCarried})
		}
	}
	if r.Leases != nil && ifc.SourceNetwork != "" {
		ctx, cancel := context.WithTimeout(context.Background(), LeaseTimeout)
		ips, lerr := r.Leases(ctx, ifc.SourceNetwork, ifc.MAC)
		cancel()
		if lerr != nil {
			errs = append(errs, fmt.Errorf("leases of network %s: %w", ifc.SourceNetwork, lerr))
		}
		for _, ip := range ips {
			cands = append(cands, Candidate{IP: ip, Source: SourceLeases})
		}
	}
	return cands, errors.Join(errs...)
}

// Grant has Claims grant cands to ifc of d; without Claims every distinct
// address is granted.
func (r *Resolver) Grant(d *domxml.Domain, ifc domxml.Interface, cands []Candidate) (granted []Candidate, refused []Refusal) {
	if r.Claims != nil {
		return r.Claims.Claim(NIC{Domain: d.UUID, MAC: ifc.MAC}, cands)
	}
	seen := map[netip.Addr]bool{}
	for _, c := range cands {
		if !seen[c.IP] {
			seen[c.IP] = true
			granted = append(granted, c)
		}
	}
	return granted, nil
}
