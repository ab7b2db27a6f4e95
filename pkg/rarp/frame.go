// Package rarp encodes and decodes RARP (RFC 903) and ARP-format frames:
// an Ethernet header, an optional 802.1Q tag and the 28-byte ARP body.
//
// Decoding never allocates and checks every field, so a caller can count a
// malformed frame by the exact reason (see Reason). Encoding pads to the
// Ethernet minimum exactly as QEMU's announce_self_create does, so an
// untagged announce (see Announce) is byte-identical to QEMU's.
package rarp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// EtherTypes this package reads and writes.
const (
	EtherTypeRARP = 0x8035
	EtherTypeARP  = 0x0806
	EtherTypeVLAN = 0x8100 // 802.1Q tag protocol identifier
)

// Sizes on the wire.
const (
	ethHeaderLen = 14
	vlanTagLen   = 4
	bodyLen      = 28
	// MinFrameLen is the Ethernet minimum without FCS; an untagged frame is
	// padded to it (QEMU pads its announce to 60 bytes), a tagged one to 64.
	MinFrameLen = 60
	// MaxFrameLen is the longest frame Marshal writes: tagged and padded.
	MaxFrameLen = MinFrameLen + vlanTagLen
)

const (
	hardwareTypeEthernet = 1
	protocolTypeIPv4     = 0x0800
)

// Operation is the ARP/RARP opcode.
type Operation uint16

// Opcodes from RFC 826 (ARP request and reply) and RFC 903 (RARP's
// reverse request, also QEMU's announce, and reverse reply). The line
// comments are the names String gives (operation_string.go, written by
// stringer as mdlayher/arp's is).
//
//go:generate go run golang.org/x/tools/cmd/stringer@v0.52.0 -type=Operation -linecomment -output=operation_string.go
const (
	OpRequest        Operation = 1 // request
	OpReply          Operation = 2 // reply
	OpReverseRequest Operation = 3 // reverse-request
	OpReverseReply   Operation = 4 // reverse-reply
)

// Errors UnmarshalBinary returns. Each names one field, so a receiver can
// count malformed frames by reason without parsing error strings.
var (
	ErrShortFrame     = errors.New("rarp: frame too short")
	ErrEtherType      = errors.New("rarp: EtherType is neither RARP (0x8035) nor ARP (0x0806)")
	ErrHardwareType   = errors.New("rarp: hardware type is not Ethernet (1)")
	ErrProtocolType   = errors.New("rarp: protocol type is not IPv4 (0x0800)")
	ErrHardwareLength = errors.New("rarp: hardware address length is not 6")
	ErrProtocolLength = errors.New("rarp: protocol address length is not 4")
	ErrOperation      = errors.New("rarp: opcode is not 1-4")
	ErrVLANID         = errors.New("rarp: VLAN ID is not 1-4094")
	ErrVLANPriority   = errors.New("rarp: VLAN priority is not 0-7")
	ErrProtocolAddr   = errors.New("rarp: protocol address is not IPv4")
)

// reasons label the errors UnmarshalBinary returns, in the order Reason
// tries them. ErrVLANPriority and ErrProtocolAddr are Marshal's, "other".
var reasons = [...]struct {
	err   error
	label string
}{
	{ErrShortFrame, "short_frame"}, {ErrEtherType, "ethertype"}, {ErrHardwareType, "htype"}, {ErrProtocolType, "ptype"},
	{ErrHardwareLength, "hlen"}, {ErrProtocolLength, "plen"}, {ErrOperation, "opcode"}, {ErrVLANID, "vlan_id"},
}

// Reason is a short stable label for a decoding error, for metrics: "ok"
// for nil, "other" for an error none of the decode errors explains.
func Reason(err error) string {
	if err == nil {
		return "ok"
	}
	for _, r := range reasons {
		if errors.Is(err, r.err) {
			return r.label
		}
	}
	return "other"
}

// VLAN is an 802.1Q tag. The zero value means "untagged" wherever a VLAN is
// optional; a tag on the wire always has an ID of 1-4094.
type VLAN struct {
	ID           uint16 // 1-4094
	Priority     uint8  // PCP, 0-7
	DropEligible bool   // DEI
}

// Tagged reports whether v describes a tag (ID != 0).
func (v VLAN) Tagged() bool { return v.ID != 0 }

// Validate checks the ranges 802.1Q allows for a tag.
func (v VLAN) Validate() error {
	if v.ID < 1 || v.ID > 4094 {
		return fmt.Errorf("%w: %d", ErrVLANID, v.ID)
	}
	if v.Priority > 7 {
		return fmt.Errorf("%w: %d", ErrVLANPriority, v.Priority)
	}
	return nil
}

func (v VLAN) tci() uint16 {
	t := uint16(v.Priority)<<13 | v.ID&0x0fff
	if v.DropEligible {
		t |= 1 << 12
	}
	return t
}

// Frame is one Ethernet frame carrying an ARP-format body.
type Frame struct {
	Destination MAC
	Source      MAC
	// VLAN is the 802.1Q tag; VLAN.ID == 0 means untagged.
	VLAN VLAN
	// EtherType is EtherTypeRARP or EtherTypeARP.
	EtherType uint16

	Operation Operation
	// Sender and target hardware (sha, tha) and protocol (spa, tpa)
	// addresses. Protocol addresses are IPv4; the zero netip.Addr encodes
	// as 0.0.0.0.
	SenderHardware MAC
	SenderIP       netip.Addr
	TargetHardware MAC
	TargetIP       netip.Addr
}

// Announce returns the frame QEMU's announce_self_create sends for mac:
// broadcast from mac, RARP reverse request, sha = tha = mac, spa = tpa =
// 0.0.0.0. A non-zero vlan adds an 802.1Q tag (QEMU never tags).
func Announce(mac MAC, vlan VLAN) Frame {
	return Frame{
		Destination:    Broadcast,
		Source:         mac,
		VLAN:           vlan,
		EtherType:      EtherTypeRARP,
		Operation:      OpReverseRequest,
		SenderHardware: mac,
		SenderIP:       netip.IPv4Unspecified(),
		TargetHardware: mac,
		TargetIP:       netip.IPv4Unspecified(),
	}
}

// Len is the encoded length of f: 60 bytes, 64 when tagged.
func (f *Frame) Len() int {
	if f.VLAN.Tagged() {
		return MaxFrameLen
	}
	return MinFrameLen
}

// MarshalBinary implements encoding.BinaryMarshaler.
func (f *Frame) MarshalBinary() ([]byte, error) {
	return f.AppendBinary(make([]byte, 0, f.Len()))
}

// AppendBinary implements encoding.BinaryAppender; it does not allocate when
// b has room for Len() more bytes.
func (f *Frame) AppendBinary(b []byte) ([]byte, error) {
	if f.VLAN.Tagged() {
		if err := f.VLAN.Validate(); err != nil {
			return b, err
		}
	}
	if f.EtherType != EtherTypeRARP && f.EtherType != EtherTypeARP {
		return b, fmt.Errorf("%w: 0x%04x", ErrEtherType, f.EtherType)
	}
	if f.Operation < OpRequest || f.Operation > OpReverseReply {
		return b, fmt.Errorf("%w: %d", ErrOperation, f.Operation)
	}
	spa, err := ip4(f.SenderIP)
	if err != nil {
		return b, fmt.Errorf("sender: %w", err)
	}
	tpa, err := ip4(f.TargetIP)
	if err != nil {
		return b, fmt.Errorf("target: %w", err)
	}
	start := len(b)
	b = append(b, f.Destination[:]...)
	b = append(b, f.Source[:]...)
	if f.VLAN.Tagged() {
		b = binary.BigEndian.AppendUint16(b, EtherTypeVLAN)
		b = binary.BigEndian.AppendUint16(b, f.VLAN.tci())
	}
	b = binary.BigEndian.AppendUint16(b, f.EtherType)
	b = binary.BigEndian.AppendUint16(b, hardwareTypeEthernet)
	b = binary.BigEndian.AppendUint16(b, protocolTypeIPv4)
	b = append(b, 6, 4)
	b = binary.BigEndian.AppendUint16(b, uint16(f.Operation))
	b = append(b, f.SenderHardware[:]...)
	b = append(b, spa[:]...)
	b = append(b, f.TargetHardware[:]...)
	b = append(b, tpa[:]...)
	for len(b)-start < f.Len() {
		b = append(b, 0)
	}
	return b, nil
}

func ip4(a netip.Addr) ([4]byte, error) {
	if !a.IsValid() {
		return [4]byte{}, nil
	}
	if !a.Is4() {
		return [4]byte{}, fmt.Errorf("%w: %s", ErrProtocolAddr, a)
	}
	return a.As4(), nil
}

// UnmarshalBinary implements encoding.BinaryUnmarshaler. It accepts a frame
// with or without one 802.1Q tag and with any trailing padding, and checks
// every header field; the error wraps one of the Err* values above. It does
// not allocate.
func (f *Frame) UnmarshalBinary(b []byte) error {
	if len(b) < ethHeaderLen {
		return ErrShortFrame
	}
	var fr Frame
	copy(fr.Destination[:], b[0:6])
	copy(fr.Source[:], b[6:12])
	et := binary.BigEndian.Uint16(b[12:14])
	p := b[ethHeaderLen:]
	if et == EtherTypeVLAN {
		if len(b) < ethHeaderLen+vlanTagLen {
			return ErrShortFrame
		}
		tci := binary.BigEndian.Uint16(b[14:16])
		fr.VLAN = VLAN{ID: tci & 0x0fff, Priority: uint8(tci >> 13), DropEligible: tci&(1<<12) != 0}
		if fr.VLAN.ID == 0 || fr.VLAN.ID == 0x0fff {
			return ErrVLANID
		}
		et = binary.BigEndian.Uint16(b[16:18])
		p = b[ethHeaderLen+vlanTagLen:]
	}
	if et != EtherTypeRARP && et != EtherTypeARP {
		return ErrEtherType
	}
	fr.EtherType = et
	if len(p) < 8 {
		return ErrShortFrame
	}
	switch {
	case binary.BigEndian.Uint16(p[0:2]) != hardwareTypeEthernet:
		return ErrHardwareType
	case binary.BigEndian.Uint16(p[2:4]) != protocolTypeIPv4:
		return ErrProtocolType
	case p[4] != 6:
		return ErrHardwareLength
	case p[5] != 4:
		return ErrProtocolLength
	}
	fr.Operation = Operation(binary.BigEndian.Uint16(p[6:8]))
	if fr.Operation < OpRequest || fr.Operation > OpReverseReply {
		return ErrOperation
	}
	if len(p) < bodyLen {
		return ErrShortFrame
	}
	copy(fr.SenderHardware[:], p[8:14])
	fr.SenderIP = netip.AddrFrom4([4]byte(p[14:18]))
	copy(fr.TargetHardware[:], p[18:24])
	fr.TargetIP = netip.AddrFrom4([4]byte(p[24:28]))
	*f = fr
	return nil
}

// String renders f the way tcpdump describes it, for logs and the CLI.
func (f *Frame) String() string {
	tag := ""
	if f.VLAN.Tagged() {
		tag = fmt.Sprintf(" vlan %d p %d", f.VLAN.ID, f.VLAN.Priority)
	}
	return fmt.Sprintf("%s > %s%s %s sha %s spa %s tha %s tpa %s",
		f.Source, f.Destination, tag, f.Operation,
		f.SenderHardware, addrOrZero(f.SenderIP), f.TargetHardware, addrOrZero(f.TargetIP))
}

func addrOrZero(a netip.Addr) string {
	if !a.IsValid() {
		return "0.0.0.0"
	}
	return a.String()
}
