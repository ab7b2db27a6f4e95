package responder

import (
	"encoding/binary"

	"github.com/rarp-announce/rarp-announce/pkg/rarp"
	"github.com/rarp-announce/rarp-announce/pkg/rarptable"
)

// ReplyLen is the length of a reply: Ethernet header and RARP body, no
// padding, byte for byte what Debian's rarpd sends (the NIC pads to the
// Ethernet minimum on the wire).
const ReplyLen = 14 + 28

// outcome is what became of one received frame.
type outcome uint8

const (
	outReply       outcome = iota // answered
	outUnknown                    // valid request, MAC not in the table
	outOffLink                    // mapped IP not on the interface's subnet
	outNotBootable                // no boot file for the mapped IP
	outMalformed                  // not a valid RARP request (see malformedReason)
	outIgnored                    // not a request for us: a reply, or op 1/2
)

// Reasons a frame is counted as malformed, as metric labels. The first
// ones are rarp.Reason's.
var malformedReasons = [numMalformed]string{"short_frame", "htype", "ptype", "hlen", "plen", "other", "sender_mismatch", "bad_source"}

const (
	reasonSenderMismatch = 6
	// reasonBadSource: the Ethernet source is broadcast, multicast or
	// zero. No station sends from such an address, and the reply, which
	// goes "unicast" to the request's source, would be flooded to every
	// port (a forged request would make the responder a broadcaster).
	reasonBadSource = 7
	numMalformed    = 8
)

func malformedIndex(err error) int {
	switch rarp.Reason(err) {
	case "short_frame":
		return 0
	case "htype":
		return 1
	case "ptype":
		return 2
	case "hlen":
		return 3
	case "plen":
		return 4
	}
	return 5
}

// ifAddr is one IPv4 address of an interface, as rarpd keeps it.
type ifAddr struct {
	local, prefix, mask uint32
}

// ifState is what a reply needs to know about the receiving interface.
// It is replaced as a whole when the interface changes.
type ifState struct {
	mac   rarp.MAC
	addrs []ifAddr
}

// onLink returns the interface's address on ip's subnet.
func (s *ifState) onLink(ip uint32) (local uint32, ok bool) {
	for _, a := range s.addrs {
		if (a.prefix^ip)&a.mask == 0 {
			return a.local, true
		}
	}
	return 0, false
}

// rules are rarpd's answering rules that the operator chooses.
type rules struct {
	offLink bool     // rarpd -o
	boot    *bootDir // nil: no boot-file check (rarpd -e)
}

// decision is the result of decide, for counting and debug logs.
type decision struct {
	out    outcome
	reason int // malformedReasons index when out == outMalformed
	req    rarp.Frame
	ip     [4]byte // the address answered (or refused)
}

// decide applies rarpd's rules to one received frame and, when it is to
// be answered, writes the reply into out (at least ReplyLen bytes). It
// never allocates.
//
// Like rarpd: only op 3 with Ethernet hardware, IPv4 protocol, lengths 6
// and 4 and an Ethernet source equal to sha is a request; unlike rarpd, a
// request from a group or zero Ethernet source is dropped (bad_source); the reply goes
// unicast to the request's Ethernet source with op 4, sha/spa = the
// interface's MAC and its address on the mapped IP's subnet, tha = the
// requested MAC and tpa = the mapped IP. A MAC that maps to several
// addresses is answered with the first one on the interface's subnet; an
// off-link address only with offLink and when it is the only one, and
// then spa is 0.0.0.0.
func decide(frame []byte, st *ifState, v *rarptable.View, r *rules, out []byte) (d decision) {
	if err := d.req.UnmarshalBinary(frame); err != nil {
		d.out, d.reason = outMalformed, malformedIndex(err)
		return d
	}
	if d.req.Operation != rarp.OpReverseRequest || d.req.EtherType != rarp.EtherTypeRARP || d.req.VLAN.Tagged() {
		d.out = outIgnored
		return d
	}
	if src := d.req.Source; src.IsZero() || src.IsMulticast() { // broadcast is a multicast address
		d.out, d.reason = outMalformed, reasonBadSource
		return d
	}
	if d.req.Source != d.req.SenderHardware {
		// rarpd: "this guy set different his lladdrs in arp and header".
		d.out, d.reason = outMalformed, reasonSenderMismatch
		return d
	}
	ips := v.Lookup(d.req.TargetHardware)
	if ips == nil {
		d.out = outUnknown
		return d
	}
	var spa uint32
	found := false
	for _, c := range ips {
		if local, ok := st.onLink(binary.BigEndian.Uint32(c[:])); ok {
			d.ip, spa, found = c, local, true
			break
		}
	}
	if !found {
		d.ip = ips[0]
		if !r.offLink || len(ips) != 1 {
			d.out = outOffLink
			return d
		}
		// rarpd -o: answered, but the server has no address on the
		// client's subnet to give, so spa stays 0.0.0.0.
	}
	if r.boot != nil && !r.boot.has(binary.BigEndian.Uint32(d.ip[:])) {
		d.out = outNotBootable
		return d
	}
	writeReply(out, &d.req, st.mac, spa, d.ip)
	d.out = outReply
	return d
}

// writeReply fills out[:ReplyLen] with the answer to req.
func writeReply(out []byte, req *rarp.Frame, mac rarp.MAC, spa uint32, tpa [4]byte) {
	_ = out[ReplyLen-1]
	copy(out[0:6], req.Source[:])
	copy(out[6:12], mac[:])
	binary.BigEndian.PutUint16(out[12:14], rarp.EtherTypeRARP)
	binary.BigEndian.PutUint16(out[14:16], 1)      // Ethernet
	binary.BigEndian.PutUint16(out[16:18], 0x0800) // IPv4
	out[18], out[19] = 6, 4
	binary.BigEndian.PutUint16(out[20:22], uint16(rarp.OpReverseReply))
	copy(out[22:28], mac[:])
	binary.BigEndian.PutUint32(out[28:32], spa)
	copy(out[32:38], req.TargetHardware[:])
	copy(out[38:42], tpa[:])
}
