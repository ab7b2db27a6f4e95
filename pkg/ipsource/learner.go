package ipsource

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/mdlayher/packet"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/rarp-announce/rarp-announce/pkg/ipannounce"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// Filter returns the classic BPF program a Learner's socket carries, so the
// kernel hands it only frames that can teach mac's addresses:
//   - ARP whose Ethernet source is mac;
//   - IPv6 ICMPv6 Neighbor Solicitations and Advertisements from mac (no
//     extension headers: NDP never carries them);
//   - IPv4 UDP 67 -> 68, unfragmented (DHCP server replies: they travel
//     *to* the guest, so their source is the server's).
//
// The kernel strips an 802.1Q tag before a packet socket filter runs on
// frames it received, so offsets are untagged ones; a frame that carried a
// tag is dropped: its address lives on a VLAN inside the guest, and the
// host announces the NIC on the port's own VLAN, so learning it would
// announce it in the wrong place. Everything else costs nothing beyond the
// filter.
//
// And each only in its direction on the guest's port: ARP and NDP as the
// guest sends them (into the host), a DHCP reply as the network sends it
// (out to the guest, PACKET_OUTGOING). Else a frame any host on the
// segment floods to the guest, with the guest's MAC as its source and
// another's address, would teach that address, and so would a DHCP "ACK"
// the guest forges.
func Filter(mac rarp.MAC) ([]bpf.RawInstruction, error) {
	return filter(mac, true)
}

// packetOutgoing is the packet type (skb->pkt_type, PACKET_OUTGOING) of a
// frame the host sends out of the port: on a guest's tap, one to the guest.
const packetOutgoing = 4

// filter builds the program; withExtensions false leaves out the ancillary
// loads (the VLAN tag and the direction checks), which x/net/bpf's VM in
// the tests cannot run.
func filter(mac rarp.MAC, withExtensions bool) ([]bpf.RawInstruction, error) {
	const (
		accept  = 1 << 16 // bytes kept: more than any frame on a 1500-MTU link
		lReject = iota
		lSrc
		lIPv6
		lIPv4
		lAccept
	)
	hi := binary.BigEndian.Uint32(mac[0:4])
	lo := uint32(binary.BigEndian.Uint16(mac[4:6]))
	var p prog
	if withExtensions {
		p.ins(bpf.LoadExtension{Num: bpf.ExtVLANTagPresent})
		p.jeq(0, -1, lReject)
		p.ins(bpf.LoadExtension{Num: bpf.ExtType})
		p.ins(bpf.StoreScratch{Src: bpf.RegA, N: 0}) // the direction, for below
	}
	p.ins(bpf.LoadAbsolute{Off: 12, Size: 2})
	p.jeq(0x0806, lSrc, -1)
	p.jeq(0x86dd, lIPv6, -1)
	p.jeq(0x0800, lIPv4, lReject)

	p.label(lIPv6)
	p.ins(bpf.LoadAbsolute{Off: 14 + 6, Size: 1}) // next header
	p.jeq(58, -1, lReject)
	p.ins(bpf.LoadAbsolute{Off: 14 + 40, Size: 1}) // ICMPv6 type
	p.jeq(135, lSrc, -1)
	p.jeq(136, lSrc, lReject)

	p.label(lIPv4)
	p.ins(bpf.LoadAbsolute{Off: 14 + 9, Size: 1}) // protocol
	p.jeq(17, -1, lReject)
	p.ins(bpf.LoadAbsolute{Off: 14 + 6, Size: 2}) // flags + fragment offset
	p.jset(0x3fff, lReject, -1)                   // MF or an offset: a fragment
	p.ins(bpf.LoadMemShift{Off: 14})              // X = IP header length
	p.ins(bpf.LoadIndirect{Off: 14, Size: 2})     // UDP source port
	p.jeq(67, -1, lReject)
	p.ins(bpf.LoadIndirect{Off: 16, Size: 2}) // UDP destination port
	if !withExtensions {
		p.jeq(68, lAccept, lReject)
	} else {
		p.jeq(68, -1, lReject)
		p.ins(bpf.LoadScratch{Dst: bpf.RegA, N: 0})
		p.jeq(packetOutgoing, lAccept, lReject) // a reply on its way to the guest
	}

	p.label(lSrc)
	if withExtensions {
		p.ins(bpf.LoadScratch{Dst: bpf.RegA, N: 0})
		p.jeq(packetOutgoing, lReject, -1) // the guest's own: coming in from it
	}
	p.ins(bpf.LoadAbsolute{Off: 6, Size: 4})
	p.jeq(hi, -1, lReject)
	p.ins(bpf.LoadAbsolute{Off: 10, Size: 2})
	p.jeq(lo, lAccept, lReject)

	p.label(lAccept)
	p.ins(bpf.RetConstant{Val: accept})
	p.label(lReject)
	p.ins(bpf.RetConstant{Val: 0})
	return p.assemble()
}

// prog is a tiny assembler with labels for forward jumps; -1 means "the
// next instruction".
type prog struct {
	code   []bpf.Instruction
	jumps  []jump
	labels map[int]int
}

type jump struct {
	at     int
	jt, jf int
	jset   bool
	val    uint32
}

func (p *prog) ins(i bpf.Instruction) { p.code = append(p.code, i) }

func (p *prog) jeq(v uint32, jt, jf int) {
	p.jumps = append(p.jumps, jump{at: len(p.code), jt: jt, jf: jf, val: v})
	p.code = append(p.code, nil)
}

func (p *prog) jset(v uint32, jt, jf int) {
	p.jumps = append(p.jumps, jump{at: len(p.code), jt: jt, jf: jf, val: v, jset: true})
	p.code = append(p.code, nil)
}

func (p *prog) label(l int) {
	if p.labels == nil {
		p.labels = map[int]int{}
	}
	p.labels[l] = len(p.code)
}

func (p *prog) assemble() ([]bpf.RawInstruction, error) {
	skip := func(from, l int) (uint8, error) {
		if l == -1 {
			return 0, nil
		}
		to, ok := p.labels[l]
		if !ok || to <= from || to-from-1 > 255 {
			return 0, fmt.Errorf("bpf: bad jump from %d to label %d", from, l)
		}
		return uint8(to - from - 1), nil
	}
	for _, j := range p.jumps {
		t, err := skip(j.at, j.jt)
		if err != nil {
			return nil, err
		}
		f, err := skip(j.at, j.jf)
		if err != nil {
			return nil, err
		}
		cond := bpf.JumpEqual
		if j.jset {
			cond = bpf.JumpBitsSet
		}
		p.code[j.at] = bpf.JumpIf{Cond: cond, Val: j.val, SkipTrue: t, SkipFalse: f}
	}
	return bpf.Assemble(p.code)
}

// Event is one thing a Learner saw; for logs and metrics.
type Event struct {
	MAC    rarp.MAC
	IP     netip.Addr
	Proto  ipannounce.Proto
	Result LearnResult
}

// Learner reads one NIC's frames on the host side of its tap and records
// the addresses the guest shows it owns in a Learned store.
type Learner struct {
	conn  *packet.Conn
	mac   rarp.MAC
	store *Learned
	// OnEvent, if set before Run, is called for every address seen.
	OnEvent func(Event)
}

// Listen opens a packet socket on ifi (the VM's tap, as the host sees it)
// for mac's frames, filtered in the kernel. It needs CAP_NET_RAW.
func Listen(ifi *net.Interface, mac rarp.MAC, store *Learned) (*Learner, error) {
	filter, err := Filter(mac)
	if err != nil {
		return nil, err
	}
	// ETH_P_ALL: DHCP replies are frames the host sends *to* the tap
	// (PACKET_OUTGOING), which a socket bound to one EtherType would not see.
	conn, err := packet.Listen(ifi, packet.Raw, unix.ETH_P_ALL, &packet.Config{Filter: filter})
	if err != nil {
		return nil, fmt.Errorf("ipsource: learn on %s: %w", ifi.Name, err)
	}
	return &Learner{conn: conn, mac: mac, store: store}, nil
}

// Close stops Run.
func (l *Learner) Close() error { return l.conn.Close() }

// Run reads frames until ctx ends or the Learner is closed; it returns nil
// then, or the read error that stopped it.
func (l *Learner) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { _ = l.conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	buf := make([]byte, 1<<16)
	for {
		n, _, err := l.conn.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		l.handle(buf[:n])
	}
}

func (l *Learner) handle(frame []byte) {
	d, err := ipannounce.Decode(frame)
	if err != nil {
		return
	}
	mac, ip, ok := d.Binding()
	if !ok || mac != l.mac {
		return
	}
	// Only what the guest says of itself teaches: an ARP or NDP frame
	// must come from the guest's MAC (the filter checks that too); a DHCP
	// ACK must be for it (chaddr, checked by mac == l.mac above).
	if d.Proto != ipannounce.ProtoDHCP && d.Source != l.mac {
		return
	}
	r := l.store.Add(mac, ip)
	if l.OnEvent != nil {
		l.OnEvent(Event{MAC: mac, IP: ip, Proto: d.Proto, Result: r})
	}
}
