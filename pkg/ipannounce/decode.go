package ipannounce

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/mdlayher/ndp"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// Proto is what Decode found in a frame.
type Proto uint8

// Protocols Decode understands.
const (
	ProtoARP  Proto = iota + 1 // ARP (any opcode)
	ProtoNDP                   // ICMPv6 Neighbor Solicitation or Advertisement
	ProtoDHCP                  // DHCPv4 server reply (BOOTREPLY) on UDP 67 -> 68
)

// String names the protocol for logs: arp, ndp, dhcp.
func (p Proto) String() string {
	switch p {
	case ProtoARP:
		return "arp"
	case ProtoNDP:
		return "ndp"
	case ProtoDHCP:
		return "dhcp"
	}
	return "unknown"
}

// Decoded is one frame as Decode read it. Only the part its Proto names is
// set.
type Decoded struct {
	Destination, Source rarp.MAC
	VLAN                rarp.VLAN
	Proto               Proto

	ARP rarp.Frame // ProtoARP

	// ProtoNDP: the IPv6 header's fields and the message.
	IPv6Source, IPv6Destination netip.Addr
	HopLimit                    int
	NDP                         ndp.Message // *ndp.NeighborAdvertisement or *ndp.NeighborSolicitation

	DHCP DHCPReply // ProtoDHCP
}

// DHCPReply holds the fields of a BOOTREPLY the learner uses.
type DHCPReply struct {
	MessageType uint8 // option 53: 2 offer, 5 ack, 6 nak
	ClientMAC   rarp.MAC
	YourIP      netip.Addr // yiaddr
}

// DHCP message types (RFC 2132 option 53).
const (
	DHCPOffer = 2
	DHCPAck   = 5
)

// Errors Decode returns.
var (
	ErrShort     = errors.New("ipannounce: frame too short")
	ErrNotNeeded = errors.New("ipannounce: not ARP, NS/NA or a DHCP reply")
	ErrMalformed = errors.New("ipannounce: malformed")
	ErrChecksum  = errors.New("ipannounce: ICMPv6 checksum mismatch")
)

// Decode reads an Ethernet frame (optionally with one 802.1Q tag) holding
// ARP, an ICMPv6 NS or NA, or a DHCPv4 server reply. It checks what a
// receiver would check: the ICMPv6 checksum and the hop limit's presence
// (the caller decides whether 255 is required), DHCP's magic cookie.
func Decode(b []byte) (Decoded, error) {
	var d Decoded
	if len(b) < 14 {
		return d, ErrShort
	}
	copy(d.Destination[:], b[0:6])
	copy(d.Source[:], b[6:12])
	et := binary.BigEndian.Uint16(b[12:14])
	p := b[14:]
	if et == rarp.EtherTypeVLAN {
		if len(b) < 18 {
			return d, ErrShort
		}
		tci := binary.BigEndian.Uint16(b[14:16])
		d.VLAN = rarp.VLAN{ID: tci & 0x0fff, Priority: uint8(tci >> 13), DropEligible: tci&(1<<12) != 0}
		et = binary.BigEndian.Uint16(b[16:18])
		p = b[18:]
	}
	switch et {
	case rarp.EtherTypeARP:
		if err := d.ARP.UnmarshalBinary(b); err != nil {
			return d, fmt.Errorf("%w: arp: %w", ErrMalformed, err)
		}
		d.Proto = ProtoARP
		return d, nil
	case EtherTypeIPv6:
		return d, d.decodeIPv6(p)
	case 0x0800:
		return d, d.decodeDHCP(p)
	}
	return d, ErrNotNeeded
}

func (d *Decoded) decodeIPv6(p []byte) error {
	h, err := ipv6.ParseHeader(p)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrShort, err)
	}
	if h.Version != 6 {
		return fmt.Errorf("%w: IP version %d", ErrMalformed, h.Version)
	}
	if h.NextHeader != protocolICMPv6 {
		return ErrNotNeeded
	}
	if len(p) < ipv6.HeaderLen+h.PayloadLen || h.PayloadLen < 4 {
		return ErrShort
	}
	body := p[ipv6.HeaderLen : ipv6.HeaderLen+h.PayloadLen]
	t := ipv6.ICMPType(body[0])
	if t != ipv6.ICMPTypeNeighborAdvertisement && t != ipv6.ICMPTypeNeighborSolicitation {
		return ErrNotNeeded
	}
	src, _ := netip.AddrFromSlice(h.Src)
	dst, _ := netip.AddrFromSlice(h.Dst)
	// Recompute the checksum with x/net/icmp over the same pseudo-header
	// and body (checksum field zeroed) and compare.
	want := binary.BigEndian.Uint16(body[2:4])
	m := icmp.Message{Type: t, Code: int(body[1]), Body: &icmp.RawBody{Data: body[4:]}}
	re, err := m.Marshal(icmp.IPv6PseudoHeader(h.Src, h.Dst))
	if err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if got := binary.BigEndian.Uint16(re[2:4]); got != want {
		return fmt.Errorf("%w: 0x%04x, want 0x%04x", ErrChecksum, want, got)
	}
	msg, err := ndp.ParseMessage(body)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	d.Proto = ProtoNDP
	d.IPv6Source, d.IPv6Destination = src, dst
	d.HopLimit = h.HopLimit
	d.NDP = msg
	return nil
}

const (
	bootpFixedLen = 236
	bootReply     = 2
)

var dhcpMagic = [4]byte{99, 130, 83, 99}

func (d *Decoded) decodeDHCP(p []byte) error {
	h, err := ipv4.ParseHeader(p)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrShort, err)
	}
	if h.Protocol != 17 || h.FragOff != 0 || h.Flags&ipv4.MoreFragments != 0 {
		return ErrNotNeeded
	}
	if h.Len < ipv4.HeaderLen || len(p) < h.Len+8 {
		return ErrShort
	}
	udp := p[h.Len:]
	if binary.BigEndian.Uint16(udp[0:2]) != 67 || binary.BigEndian.Uint16(udp[2:4]) != 68 {
		return ErrNotNeeded
	}
	ulen := int(binary.BigEndian.Uint16(udp[4:6]))
	if ulen < 8 || ulen > len(udp) {
		return fmt.Errorf("%w: UDP length %d", ErrMalformed, ulen)
	}
	r, err := ParseDHCPReply(udp[8:ulen])
	if err != nil {
		return err
	}
	d.Proto = ProtoDHCP
	d.DHCP = r
	return nil
}

// ParseDHCPReply reads a BOOTP/DHCP message (the UDP payload) that must be
// a BOOTREPLY for Ethernet with the DHCP magic cookie and a message type.
func ParseDHCPReply(b []byte) (DHCPReply, error) {
	var r DHCPReply
	if len(b) < bootpFixedLen+4 {
		return r, ErrShort
	}
	if b[0] != bootReply {
		return r, ErrNotNeeded
	}
	if b[1] != 1 || b[2] != 6 {
		return r, fmt.Errorf("%w: DHCP htype %d hlen %d, want Ethernet", ErrMalformed, b[1], b[2])
	}
	if [4]byte(b[bootpFixedLen:bootpFixedLen+4]) != dhcpMagic {
		return r, fmt.Errorf("%w: no DHCP magic cookie", ErrMalformed)
	}
	r.YourIP = netip.AddrFrom4([4]byte(b[16:20]))
	copy(r.ClientMAC[:], b[28:34])
	for o := b[bootpFixedLen+4:]; len(o) > 0; {
		code := o[0]
		if code == 0 { // pad
			o = o[1:]
			continue
		}
		if code == 255 { // end
			break
		}
		if len(o) < 2 || len(o) < 2+int(o[1]) {
			return r, fmt.Errorf("%w: DHCP option %d overruns the message", ErrMalformed, code)
		}
		if code == 53 && o[1] == 1 {
			r.MessageType = o[2]
		}
		o = o[2+int(o[1]):]
	}
	if r.MessageType == 0 {
		return r, fmt.Errorf("%w: DHCP reply without message type", ErrMalformed)
	}
	return r, nil
}

// Binding returns the MAC -> IP binding a frame *from or for the guest*
// shows, and whether it shows one a learner may trust:
//   - ARP (request or reply) whose Ethernet source is sha: sha uses spa;
//     an ARP probe (spa 0.0.0.0, RFC 5227) shows nothing yet;
//   - an NA with hop limit 255: the target address belongs to the target
//     link-layer address option, or to the Ethernet source without one;
//   - an NS with hop limit 255 and a source address (not DAD's ::): the
//     source address belongs to the source link-layer option or the
//     Ethernet source;
//   - a DHCP ACK: yiaddr belongs to chaddr.
//
// The caller still checks the MAC is the NIC's own.
func (d *Decoded) Binding() (rarp.MAC, netip.Addr, bool) {
	switch d.Proto {
	case ProtoARP:
		a := &d.ARP
		if a.Operation != rarp.OpRequest && a.Operation != rarp.OpReply {
			return rarp.MAC{}, netip.Addr{}, false
		}
		if a.SenderHardware != d.Source || ValidateIP(a.SenderIP) != nil {
			return rarp.MAC{}, netip.Addr{}, false
		}
		return a.SenderHardware, a.SenderIP, true
	case ProtoNDP:
		if d.HopLimit != ndpHopLimit {
			return rarp.MAC{}, netip.Addr{}, false
		}
		switch m := d.NDP.(type) {
		case *ndp.NeighborAdvertisement:
			mac := linkLayer(m.Options, ndp.Target, d.Source)
			if ValidateIP(m.TargetAddress) != nil {
				return rarp.MAC{}, netip.Addr{}, false
			}
			return mac, m.TargetAddress, true
		case *ndp.NeighborSolicitation:
			if ValidateIP(d.IPv6Source) != nil {
				return rarp.MAC{}, netip.Addr{}, false
			}
			return linkLayer(m.Options, ndp.Source, d.Source), d.IPv6Source, true
		}
	case ProtoDHCP:
		if d.DHCP.MessageType != DHCPAck || ValidateIP(d.DHCP.YourIP) != nil {
			return rarp.MAC{}, netip.Addr{}, false
		}
		return d.DHCP.ClientMAC, d.DHCP.YourIP, true
	}
	return rarp.MAC{}, netip.Addr{}, false
}

func linkLayer(opts []ndp.Option, dir ndp.Direction, fallback rarp.MAC) rarp.MAC {
	for _, o := range opts {
		if l, ok := o.(*ndp.LinkLayerAddress); ok && l.Direction == dir {
			if m, ok := rarp.MACFrom(l.Addr); ok {
				return m
			}
		}
	}
	return fallback
}
