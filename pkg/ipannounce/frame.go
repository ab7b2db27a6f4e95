// Package ipannounce builds the frames that move a VM's IP addresses after
// its MAC has moved: gratuitous ARP (request and reply), a directed ARP
// request to a gateway, an unsolicited IPv6 Neighbor Advertisement and a
// Neighbor Solicitation to a gateway; it also decodes them (and a DHCP
// acknowledgement) for the learner, which teaches the host a VM's addresses
// from the VM's own traffic.
//
// Why each frame (DESIGN-NOTES section 7):
//   - a GARP request (sip = tip = IP, tha = 0, to broadcast) is what a Linux
//     guest sends itself; EVPN VTEPs with ARP suppression learn the MAC+IP
//     binding from it and a receiver with an existing entry updates it;
//   - a GARP reply counts as gratuitous for Linux only when tha == sha;
//   - a receiver with arp_accept=0 (Linux's default) never *creates* an
//     entry from either, but an ARP request addressed to its own IP does:
//     hence the directed request to a gateway, and for IPv6 a Neighbor
//     Solicitation with a source link-layer address option;
//   - the unsolicited NA (Override 1, Solicited 0, to ff02::1, target
//     link-layer address option, hop limit 255) is the IPv6 GARP.
//
// ARP bodies come from pkg/rarp (which pads and tags exactly as QEMU does);
// NDP messages and their checksums come from github.com/mdlayher/ndp and
// golang.org/x/net/icmp. Only the fixed 40-byte IPv6 header is written here:
// golang.org/x/net/ipv6 parses that header but does not marshal it.
package ipannounce

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/mdlayher/ndp"
	"golang.org/x/net/ipv6"

	"github.com/rarp-announce/rarp-announce/pkg/enumname"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// EtherTypeIPv6 is the EtherType of an IPv6 packet.
const EtherTypeIPv6 = 0x86dd

// ndpHopLimit is what RFC 4861 requires of every NDP message: a receiver
// drops an NA or NS whose hop limit is not 255 (it may have been routed).
const ndpHopLimit = 255

const protocolICMPv6 = 58

// Kind names one frame this package builds. It is also a stable metric label.
type Kind uint8

// The frames.
const (
	// GARPRequest: ARP request, sha = MAC, spa = tpa = IP, tha = 0, to broadcast.
	GARPRequest Kind = iota + 1
	// GARPReply: ARP reply, sha = tha = MAC, spa = tpa = IP, to broadcast.
	GARPReply
	// GatewayARP: ARP request from MAC/IP for the gateway's IP, to broadcast.
	GatewayARP
	// UnsolicitedNA: IPv6 NA (O=1, S=0, R=0) for IP, from IP to ff02::1.
	UnsolicitedNA
	// GatewayNS: IPv6 NS from IP for the gateway's address, to its
	// solicited-node group, with a source link-layer address option.
	GatewayNS
)

var kindNames = enumname.Table[Kind]{
	GARPRequest:   "garp_request",
	GARPReply:     "garp_reply",
	GatewayARP:    "gateway_arp",
	UnsolicitedNA: "unsolicited_na",
	GatewayNS:     "gateway_ns",
}

func (k Kind) String() string { return kindNames.Name(k, "kind(%d)") }

// IPv6 reports whether k is an NDP frame.
func (k Kind) IPv6() bool { return k == UnsolicitedNA || k == GatewayNS }

// Errors Build returns.
var (
	ErrKind    = errors.New("ipannounce: unknown frame kind")
	ErrFamily  = errors.New("ipannounce: address family does not fit the frame kind")
	ErrAddress = errors.New("ipannounce: address cannot be announced")
)

// Frame describes one frame to build.
type Frame struct {
	Kind Kind
	MAC  rarp.MAC   // the VM's MAC: Ethernet source and sender/target link-layer address
	IP   netip.Addr // the VM's address being announced
	// Gateway is the router address for GatewayARP and GatewayNS; unused
	// otherwise.
	Gateway netip.Addr
	// VLAN tags the frame (802.1Q) when VLAN.ID != 0, as the VM's RARPs are.
	VLAN rarp.VLAN
}

// ValidateIP reports why ip cannot be announced for a VM: it must be a
// unicast address a host can own (no unspecified, loopback, multicast or
// IPv4 broadcast, no IPv4-mapped IPv6). Link-local IPv6 addresses are
// allowed: a guest announces them too.
func ValidateIP(ip netip.Addr) error {
	switch {
	case !ip.IsValid():
		return fmt.Errorf("%w: no address", ErrAddress)
	case ip.Zone() != "":
		return fmt.Errorf("%w: %s has a zone", ErrAddress, ip)
	case ip.Is4In6():
		return fmt.Errorf("%w: %s is IPv4-mapped; write it as IPv4", ErrAddress, ip)
	case ip.IsUnspecified(), ip.IsLoopback(), ip.IsMulticast():
		return fmt.Errorf("%w: %s is not a unicast host address", ErrAddress, ip)
	case ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return fmt.Errorf("%w: %s is the broadcast address", ErrAddress, ip)
	}
	return nil
}

// Build encodes f as a complete Ethernet frame (no FCS).
func (f *Frame) Build() ([]byte, error) {
	if err := f.MAC.ValidateUnicast(); err != nil {
		return nil, fmt.Errorf("ipannounce: %w", err)
	}
	if err := ValidateIP(f.IP); err != nil {
		return nil, err
	}
	if f.Kind < GARPRequest || f.Kind > GatewayNS {
		return nil, fmt.Errorf("%w: %d", ErrKind, f.Kind)
	}
	if f.Kind.IPv6() != f.IP.Is6() {
		return nil, fmt.Errorf("%w: %s for %s", ErrFamily, f.Kind, f.IP)
	}
	if f.Kind == GatewayARP || f.Kind == GatewayNS {
		if err := ValidateIP(f.Gateway); err != nil {
			return nil, fmt.Errorf("gateway: %w", err)
		}
		if f.Gateway.Is6() != f.IP.Is6() {
			return nil, fmt.Errorf("%w: gateway %s for %s", ErrFamily, f.Gateway, f.IP)
		}
		if f.Gateway == f.IP {
			return nil, fmt.Errorf("%w: gateway %s is the VM's own address", ErrAddress, f.Gateway)
		}
	}
	if f.Kind.IPv6() {
		return f.buildNDP()
	}
	return f.buildARP()
}

func (f *Frame) buildARP() ([]byte, error) {
	a := rarp.Frame{
		Destination:    rarp.Broadcast,
		Source:         f.MAC,
		VLAN:           f.VLAN,
		EtherType:      rarp.EtherTypeARP,
		SenderHardware: f.MAC,
		SenderIP:       f.IP,
	}
	switch f.Kind {
	case GARPRequest:
		a.Operation, a.TargetIP = rarp.OpRequest, f.IP
	case GARPReply:
		// Linux's arp_process treats a reply as gratuitous only if
		// tha == sha (and sip == tip).
		a.Operation, a.TargetHardware, a.TargetIP = rarp.OpReply, f.MAC, f.IP
	case GatewayARP:
		a.Operation, a.TargetIP = rarp.OpRequest, f.Gateway
	}
	return a.MarshalBinary()
}

func (f *Frame) buildNDP() ([]byte, error) {
	lla := f.MAC.HardwareAddr()
	var (
		msg ndp.Message
		dst netip.Addr
	)
	switch f.Kind {
	case UnsolicitedNA:
		// RFC 4861 7.2.6: Override set, Solicited clear, target
		// link-layer address option, to all-nodes. The source is the
		// address itself, as Linux's ndisc_send_unsol_na does.
		msg = &ndp.NeighborAdvertisement{
			Override:      true,
			TargetAddress: f.IP,
			Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: lla}},
		}
		dst = netip.IPv6LinkLocalAllNodes()
	case GatewayNS:
		// RFC 4861 7.2.3: a router receiving an NS with a source address
		// and a source link-layer option creates (or updates) a STALE
		// entry for the sender, whatever it thinks of unsolicited NAs.
		msg = &ndp.NeighborSolicitation{
			TargetAddress: f.Gateway,
			Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: lla}},
		}
		var err error
		if dst, err = ndp.SolicitedNodeMulticast(f.Gateway); err != nil {
			return nil, fmt.Errorf("ipannounce: %w", err)
		}
	}
	body, err := ndp.MarshalMessageChecksum(msg, f.IP, dst)
	if err != nil {
		return nil, fmt.Errorf("ipannounce: %w", err)
	}
	b := make([]byte, 0, ethLen(f.VLAN)+ipv6.HeaderLen+len(body))
	b = appendEthernet(b, multicastMAC(dst), f.MAC, f.VLAN, EtherTypeIPv6)
	b = appendIPv6Header(b, f.IP, dst, len(body))
	return append(b, body...), nil
}

func ethLen(v rarp.VLAN) int {
	if v.Tagged() {
		return 18
	}
	return 14
}

func appendEthernet(b []byte, dst, src rarp.MAC, v rarp.VLAN, etherType uint16) []byte {
	b = append(b, dst[:]...)
	b = append(b, src[:]...)
	if v.Tagged() {
		tci := uint16(v.Priority)<<13 | v.ID&0x0fff
		if v.DropEligible {
			tci |= 1 << 12
		}
		b = binary.BigEndian.AppendUint16(b, rarp.EtherTypeVLAN)
		b = binary.BigEndian.AppendUint16(b, tci)
	}
	return binary.BigEndian.AppendUint16(b, etherType)
}

// appendIPv6Header writes version 6, traffic class 0, flow label 0, the
// payload length, next header ICMPv6 and hop limit 255.
func appendIPv6Header(b []byte, src, dst netip.Addr, payloadLen int) []byte {
	b = append(b, 0x60, 0, 0, 0)
	b = binary.BigEndian.AppendUint16(b, uint16(payloadLen))
	b = append(b, protocolICMPv6, ndpHopLimit)
	s, d := src.As16(), dst.As16()
	b = append(b, s[:]...)
	return append(b, d[:]...)
}

// multicastMAC maps an IPv6 multicast group to its Ethernet address
// (RFC 2464 section 7): 33:33 and the group's low 32 bits.
func multicastMAC(group netip.Addr) rarp.MAC {
	a := group.As16()
	return rarp.MAC{0x33, 0x33, a[12], a[13], a[14], a[15]}
}

// Plan lists the frames to send for one NIC: for each address a GARP
// request (IPv4) or an unsolicited NA (IPv6); a GARP reply too when
// withReply; and for each gateway of the same family a GatewayARP or
// GatewayNS from each address. Invalid addresses are skipped and reported.
func Plan(mac rarp.MAC, vlan rarp.VLAN, ips, gateways []netip.Addr, withReply bool) ([]Frame, error) {
	var (
		out  []Frame
		errs []error
	)
	for _, ip := range ips {
		if err := ValidateIP(ip); err != nil {
			errs = append(errs, err)
			continue
		}
		if ip.Is4() {
			out = append(out, Frame{Kind: GARPRequest, MAC: mac, IP: ip, VLAN: vlan})
			if withReply {
				out = append(out, Frame{Kind: GARPReply, MAC: mac, IP: ip, VLAN: vlan})
			}
		} else {
			out = append(out, Frame{Kind: UnsolicitedNA, MAC: mac, IP: ip, VLAN: vlan})
		}
		for _, gw := range gateways {
			if gw.Is4() != ip.Is4() || gw == ip {
				continue
			}
			k := GatewayARP
			if ip.Is6() {
				k = GatewayNS
			}
			out = append(out, Frame{Kind: k, MAC: mac, IP: ip, Gateway: gw, VLAN: vlan})
		}
	}
	return out, errors.Join(errs...)
}
