package domxml

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

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
			Seen    string `xml:"seen,attr"`
		} `xml:"ip"`
	} `xml:"nic"`
}

// Address is one address of our element and when a host last saw the
// guest use it. The time travels with the address, so that every host
// ages it from the same sighting: re-reading the element (at each
// landing, after each pause) must not make it young again. A zero Seen
// is an element written without it (an older agent).
type Address struct {
	IP   netip.Addr
	Seen time.Time
}

// Expired reports whether a was last seen maxAge or more before now. An
// address without a seen time, or a maxAge of 0, never expires.
func (a Address) Expired(now time.Time, maxAge time.Duration) bool {
	return maxAge > 0 && !a.Seen.IsZero() && now.Sub(a.Seen) >= maxAge
}

// seenLayout writes seen: RFC 3339 in UTC, to the millisecond (any RFC 3339
// time is read).
const seenLayout = "2006-01-02T15:04:05.000Z07:00"

// MarshalAddresses returns the element to hand to virDomainSetMetadata:
//
//	<addresses><nic mac="52:54:00:66:00:10"><ip address="10.66.0.10" seen="2026-12-07T17:00:00.000Z"/></nic></addresses>
//
// without a namespace (libvirt adds AddressesNamespace with prefix
// AddressesKey); seen is UTC, to the millisecond, left out when zero. NICs
// come in MAC order so the same state gives the same bytes; at most
// MaxMetadataAddresses per NIC are written.
func MarshalAddresses(m map[rarp.MAC][]Address) []byte {
	macs := make([]rarp.MAC, 0, len(m))
	for mac := range m {
		macs = append(macs, mac)
	}
	slices.SortFunc(macs, func(a, b rarp.MAC) int { return bytes.Compare(a[:], b[:]) })
	var b strings.Builder
	b.WriteString("<addresses>")
	for _, mac := range macs {
		fmt.Fprintf(&b, `<nic mac="%s">`, mac)
		for i, a := range m[mac] {
			if i == MaxMetadataAddresses {
				break
			}
			fmt.Fprintf(&b, `<ip address="%s"`, a.IP)
			if !a.Seen.IsZero() {
				fmt.Fprintf(&b, ` seen="%s"`, a.Seen.UTC().Format(seenLayout))
			}
			b.WriteString("/>")
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
// 48-bit address, an address that does not parse, a seen that is not an
// RFC 3339 time, more than MaxMetadataAddresses) are reported and skipped;
// the rest is returned. An address listed twice keeps its latest Seen.
func ParseAddresses(data []byte) (map[rarp.MAC][]Address, error) {
	var x xmlAddresses
	if err := xml.Unmarshal(data, &x); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrAddresses, err)
	}
	return x.convert()
}

// CarriedAddresses returns the addresses our <metadata> element in the
// domain XML carries (nil, nil without it), as ParseAddresses does.
func (d *Domain) CarriedAddresses() (map[rarp.MAC][]Address, error) {
	if d.carried == nil {
		return nil, nil
	}
	return d.carried.convert()
}

func (x *xmlAddresses) convert() (map[rarp.MAC][]Address, error) {
	out := map[rarp.MAC][]Address{}
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
			var seen time.Time
			if s := strings.TrimSpace(ip.Seen); err == nil && s != "" {
				var perr error
				if seen, perr = time.Parse(time.RFC3339, s); perr != nil || seen.UTC().Year() < 2000 || seen.UTC().Year() > 9999 {
					errs = append(errs, fmt.Errorf("%w: nic %s: address %s: seen %q is not an RFC 3339 time from 2000 to 9999", ErrAddresses, mac, a, ip.Seen))
					continue
				}
			}
			i := slices.IndexFunc(out[mac], func(o Address) bool { return o.IP == a })
			switch {
			case err != nil || a.Zone() != "" || a.Is4In6():
				errs = append(errs, fmt.Errorf("%w: nic %s: %q is not a plain IPv4/IPv6 address", ErrAddresses, mac, ip.Address))
				continue
			case i >= 0:
				if seen.After(out[mac][i].Seen) {
					out[mac][i].Seen = seen
				}
				continue
			case len(out[mac]) == MaxMetadataAddresses:
				errs = append(errs, fmt.Errorf("%w: nic %s: more than %d addresses, rest ignored", ErrAddresses, mac, MaxMetadataAddresses))
			default:
				out[mac] = append(out[mac], Address{IP: a, Seen: seen})
				continue
			}
			break
		}
	}
	return out, errors.Join(errs...)
}
