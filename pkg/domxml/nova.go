package domxml

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// NovaNamespace is the XML namespace of the metadata Nova writes into every
// domain it defines (nova/virt/libvirt/config.py, LibvirtConfigGuestMetaNova*).
const NovaNamespace = "http://openstack.org/xmlns/libvirt/nova/1.1"

// NovaPort is one <nova:port uuid=...> of <nova:instance><nova:ports>: the
// Neutron port behind one of the domain's NICs, with its addresses as Nova
// wrote them. Nothing is validated at parse time: a bad entry must not make
// the domain unreadable; NovaFixedIPs validates and reports.
type NovaPort struct {
	UUID string
	IPs  []NovaIP
}

// NovaIP is one <nova:ip type=... address=... ipVersion=...>.
type NovaIP struct {
	Type    string // "fixed" or "floating"
	Address string
	Version string // "4" or "6"
}

type xmlNovaInstance struct {
	Ports []struct {
		UUID string `xml:"uuid,attr"`
		IPs  []struct {
			Type    string `xml:"type,attr"`
			Address string `xml:"address,attr"`
			Version string `xml:"ipVersion,attr"`
		} `xml:"http://openstack.org/xmlns/libvirt/nova/1.1 ip"`
	} `xml:"http://openstack.org/xmlns/libvirt/nova/1.1 ports>port"`
}

func (x *xmlNovaInstance) ports() []NovaPort {
	out := make([]NovaPort, 0, len(x.Ports))
	for _, p := range x.Ports {
		np := NovaPort{UUID: strings.TrimSpace(p.UUID)}
		for _, ip := range p.IPs {
			np.IPs = append(np.IPs, NovaIP{Type: ip.Type, Address: strings.TrimSpace(ip.Address), Version: ip.Version})
		}
		out = append(out, np)
	}
	return out
}

// novaTapPrefixLen is how much of the port id Nova (os-vif) puts in a tap's
// name: "tap" + 11 characters = 14, within IFNAMSIZ.
const novaTapPrefixLen = 11

// MatchesNIC reports whether port p is the Neutron port behind ifc, the way
// Nova names it: Open vSwitch ports carry the port id as
// <virtualport><parameters interfaceid>; other plugs (Linux bridge, OVS
// hybrid, tap) name the tap "tap" + the port id's first 11 characters.
func (p NovaPort) MatchesNIC(ifc Interface) bool {
	id := strings.ToLower(p.UUID)
	if id == "" {
		return false
	}
	if ifc.InterfaceID != "" && strings.EqualFold(ifc.InterfaceID, id) {
		return true
	}
	if len(id) < novaTapPrefixLen || ifc.Target == "" {
		return false
	}
	return ifc.Target == "tap"+id[:novaTapPrefixLen]
}

// ErrNovaIP reports a <nova:ip> that cannot be used.
var ErrNovaIP = errors.New("nova metadata")

// NovaFixedIPs returns the fixed IPs Nova's metadata lists for the port
// behind ifc, in document order, and whether such a port exists. Floating
// IPs are never returned: they live on the router (NAT), not on the VM's
// MAC. An entry with a bad address or an ipVersion that contradicts it is
// skipped and reported in err (wrapping ErrNovaIP), the others still come
// back.
func (d *Domain) NovaFixedIPs(ifc Interface) (ips []netip.Addr, found bool, err error) {
	var errs []error
	for _, p := range d.NovaPorts {
		if !p.MatchesNIC(ifc) {
			continue
		}
		found = true
		for _, x := range p.IPs {
			if x.Type != "fixed" {
				continue
			}
			a, perr := netip.ParseAddr(x.Address)
			switch {
			case perr != nil:
				errs = append(errs, fmt.Errorf("%w: port %s: address %q is not an IP", ErrNovaIP, p.UUID, x.Address))
				continue
			case a.Zone() != "" || a.Is4In6():
				errs = append(errs, fmt.Errorf("%w: port %s: address %q is not a plain IPv4/IPv6 address", ErrNovaIP, p.UUID, x.Address))
				continue
			case x.Version == "4" && !a.Is4(), x.Version == "6" && !a.Is6():
				errs = append(errs, fmt.Errorf("%w: port %s: address %s contradicts ipVersion %q", ErrNovaIP, p.UUID, a, x.Version))
				continue
			}
			dup := false
			for _, have := range ips {
				dup = dup || have == a
			}
			if !dup {
				ips = append(ips, a)
			}
		}
	}
	if len(errs) > 0 {
		err = fmt.Errorf("domain %s: interface %s: %w", d.Name, ifc, errors.Join(errs...))
	}
	return ips, found, err
}
