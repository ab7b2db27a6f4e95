// Package ipannouncetest builds frames the tests of the IP-layer packages
// feed to decoders and learners; nothing in it is for production.
package ipannouncetest

import (
	"encoding/binary"
	"net/netip"

	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// DHCPReply builds an untagged Ethernet/IPv4/UDP 67 -> 68 frame from
// 02:00:00:00:00:01 (10.66.0.1) to chaddr carrying a BOOTREPLY for chaddr
// with yiaddr, the DHCP magic cookie and opts after it (e.g. 53, 1, 5,
// 255 for an ACK). ipFlags is the IPv4 header's flags/fragment-offset word.
func DHCPReply(chaddr rarp.MAC, yiaddr netip.Addr, ipFlags uint16, opts ...byte) []byte {
	bootp := make([]byte, 236, 240+len(opts))
	bootp[0], bootp[1], bootp[2] = 2, 1, 6 // BOOTREPLY, Ethernet, 6-byte addresses
	y := yiaddr.As4()
	copy(bootp[16:20], y[:])
	copy(bootp[28:34], chaddr[:])
	bootp = append(bootp, 99, 130, 83, 99)
	bootp = append(bootp, opts...)
	udp := make([]byte, 8, 8+len(bootp))
	binary.BigEndian.PutUint16(udp[0:], 67)
	binary.BigEndian.PutUint16(udp[2:], 68)
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(bootp)))
	udp = append(udp, bootp...)
	ip := []byte{0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 10, 66, 0, 1, 255, 255, 255, 255}
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(udp)))
	binary.BigEndian.PutUint16(ip[6:], ipFlags)
	// A valid header checksum: a bridge with br_netfilter drops a frame
	// without one before it forwards it.
	var sum uint32
	for i := 0; i < len(ip); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	b := append([]byte{}, chaddr[:]...)
	b = append(b, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00)
	b = append(b, ip...)
	return append(b, udp...)
}
