package rarp

import (
	"errors"
	"fmt"
	"net"
)

// MAC is a 48-bit Ethernet address. It is an array rather than a
// net.HardwareAddr so that frames decode without allocating and MACs can key
// maps directly (the responder's table, the announcer's running set).
type MAC [6]byte

// Broadcast is ff:ff:ff:ff:ff:ff.
var Broadcast = MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// ErrBadMAC reports a string that is not a 48-bit MAC address.
var ErrBadMAC = errors.New("not a 48-bit MAC address")

// ParseMAC parses the forms net.ParseMAC accepts, but only 48-bit ones.
func ParseMAC(s string) (MAC, error) {
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		return MAC{}, fmt.Errorf("%q: %w", s, ErrBadMAC)
	}
	var m MAC
	copy(m[:], hw)
	return m, nil
}

// MustParseMAC is ParseMAC for constants and tests: it panics if s is not
// a 48-bit MAC address, as netip.MustParseAddr does for IP addresses.
func MustParseMAC(s string) MAC {
	m, err := ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

// MACFrom copies a 6-byte hardware address; ok is false for any other length.
func MACFrom(hw net.HardwareAddr) (m MAC, ok bool) {
	if len(hw) != 6 {
		return m, false
	}
	copy(m[:], hw)
	return m, true
}

// HardwareAddr returns a net.HardwareAddr copy of m.
func (m MAC) HardwareAddr() net.HardwareAddr { return net.HardwareAddr(m[:]) }

// String formats m as lower-case colon-separated hex, as ip(8) and libvirt do.
func (m MAC) String() string {
	const hex = "0123456789abcdef"
	var b [17]byte
	for i, v := range m {
		if i > 0 {
			b[i*3-1] = ':'
		}
		b[i*3] = hex[v>>4]
		b[i*3+1] = hex[v&0xf]
	}
	return string(b[:])
}

// IsZero reports 00:00:00:00:00:00.
func (m MAC) IsZero() bool { return m == MAC{} }

// IsMulticast reports a group address (broadcast included): the I/G bit.
func (m MAC) IsMulticast() bool { return m[0]&1 == 1 }

// IsBroadcast reports ff:ff:ff:ff:ff:ff.
func (m MAC) IsBroadcast() bool { return m == Broadcast }

// ValidateUnicast returns an error unless m can be a station's source
// address: switches never learn a group or all-zero source.
func (m MAC) ValidateUnicast() error {
	switch {
	case m.IsZero():
		return fmt.Errorf("%s is the all-zero address, not a station", m)
	case m.IsBroadcast():
		return fmt.Errorf("%s is the broadcast address, not a station", m)
	case m.IsMulticast():
		return fmt.Errorf("%s is a multicast address, not a station", m)
	}
	return nil
}
