package domxml

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// AddressesNamespace is this project's own <metadata> namespace: the
// addresses a host learned for a domain's NICs travel with the domain on
// migration, so the destination can announce them at landing before the
// guest says a word. Set with virDomainSetMetadata (type ELEMENT, key
// AddressesKey, this URI, flags LIVE), which needs the read-write socket.
const AddressesNamespace = "https://github.com/rarp-announce/rarp-announce/xmlns/addresses/1"

// AddressesKey is the namespace prefix libvirt writes the element with.
const AddressesKey = "rarp"

// MaxMetadataAddresses bounds what ParseAddresses returns per NIC and
// MarshalAddresses writes: the XML is shared with whoever can edit the
// domain, it must not grow the agent's memory without bound.
const MaxMetadataAddresses = 64

type xmlAddresses struct {
	XMLName xml.Name `xml:"addresses"`
	NICs    []struct {
		MAC string `xml:"mac,attr"`
		IPs []struct {
			Address string `xml:"address,attr"`
		} `xml:"ip"`
	} `xml:"nic"`
}

// MarshalAddresses returns the element to hand to virDomainSetMetadata:
//
//	<addresses><nic mac="52:54:00:66:00:10"><ip address="10.66.0.10"/></nic></addresses>
//
// without a namespace (libvirt adds AddressesNamespace with prefix
// AddressesKey). NICs come in MAC order so the same state gives the same
// bytes; at most MaxMetadataAddresses per NIC are written.
func MarshalAddresses(m map[rarp.MAC][]netip.Addr) []byte {
	macs := make([]rarp.MAC, 0, len(m))
	for mac := range m {
		macs = append(macs, mac)
	}
	slices.SortFunc(macs, func(a, b rarp.MAC) int { return bytes.Compare(a[:], b[:]) })
	var b strings.Builder
	b.WriteString("<addresses>")
	for _, mac := range macs {
		fmt.Fprintf(&b, `<nic mac="%s">`, mac)
		for i, ip := range m[mac] {
			if i == MaxMetadataAddresses {
				break
			}
			fmt.Fprintf(&b, `<ip address="%s"/>`, ip)
		}
		b.WriteString("</nic>")
	}
	b.WriteString("</addresses>")
	return []byte(b.String())
}

// ErrAddresses reports an unusable entry of our <metadata>.
var ErrAddresses = errors.New("rarp-announce metadata")

// ParseAddresses reads our element, as virDomainGetMetadata returns it or
// as found in the domain XML. Bad entries (a MAC that is not a unicast
// 48-bit address, an address that does not parse, more than
// MaxMetadataAddresses) are reported and skipped; the rest is returned.
func ParseAddresses(data []byte) (map[rarp.MAC][]netip.Addr, error) {
	var x xmlAddresses
	if err := xml.Unmarshal(data, &x); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrAddresses, err)
	}
	return x.convert()
}

// CarriedAddresses returns the addresses our <metadata> element in the
// domain XML carries (nil, nil without it), as ParseAddresses does.
func (d *Domain) CarriedAddresses() (map[rarp.MAC][]netip.Addr, error) {
	if d.carried == nil {
		return nil, nil
	}
	return d.carried.convert()
}

func (x *xmlAddresses) convert() (map[rarp.MAC][]netip.Addr, error) {
	out := map[rarp.MAC][]netip.Addr{}
	var errs []error
	for _, n := range x.NICs {
		mac, err := rarp.ParseMAC(n.MAC)
		if err == nil {
			err = mac.ValidateUnicast()
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%w: nic: %w", ErrAddresses, err))
			continue
		}
		for _, ip := range n.IPs {
			a, err := netip.ParseAddr(strings.TrimSpace(ip.Address))
			switch {
			case err != nil || a.Zone() != "" || a.Is4In6():
				errs = append(errs, fmt.Errorf("%w: nic %s: %q is not a plain IPv4/IPv6 address", ErrAddresses, mac, ip.Address))
				continue
			case len(out[mac]) == MaxMetadataAddresses:
				errs = append(errs, fmt.Errorf("%w: nic %s: more than %d addresses, rest ignored", ErrAddresses, mac, MaxMetadataAddresses))
			case slices.Contains(out[mac], a):
				continue
			default:
				out[mac] = append(out[mac], a)
				continue
			}
			break
		}
	}
	return out, errors.Join(errs...)
}
