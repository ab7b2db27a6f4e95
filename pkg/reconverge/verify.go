package reconverge

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/mdlayher/packet"
	"golang.org/x/net/bpf"

	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// Probe is an active check that the fabric delivers a VM's traffic to this
// host now: an ARP request from the VM's MAC and IPv4 address for a
// gateway, sent out of the uplink on the VM's VLAN; the gateway's reply is
// addressed to the VM's MAC, so it comes back through this host only if
// the fabric's tables point the VM here.
//
// The request itself moves the VM's MAC (and, on a router, its IP) to this
// host, like any frame from the VM: run it only for a domain running here.
type Probe struct {
	Interface *net.Interface // the uplink
	VLAN      rarp.VLAN      // the tag the uplink carries the VM's VLAN with, or untagged
	MAC       rarp.MAC       // the VM's
	IP        netip.Addr     // the VM's IPv4 address
	Gateway   netip.Addr     // an IPv4 address on the VM's subnet that answers ARP
}

// ProbeResult is what a Probe found.
type ProbeResult struct {
	Answered   bool
	RTT        time.Duration // request sent to reply read
	GatewayMAC rarp.MAC      // the replier's MAC, when answered
}

// Run sends the request and waits up to timeout for the reply on the same
// interface. No reply is a result (Answered false), not an error; errors
// are for sockets and bad input.
func (p Probe) Run(ctx context.Context, timeout time.Duration) (ProbeResult, error) {
	if !p.IP.Is4() || !p.Gateway.Is4() {
		return ProbeResult{}, fmt.Errorf("reconverge: probe: VM %v and gateway %v must be IPv4 addresses", p.IP, p.Gateway)
	}
	if err := p.MAC.ValidateUnicast(); err != nil {
		return ProbeResult{}, fmt.Errorf("reconverge: probe: %w", err)
	}
	req := rarp.Frame{
		Destination: rarp.Broadcast, Source: p.MAC, VLAN: p.VLAN, EtherType: rarp.EtherTypeARP,
		Operation: rarp.OpRequest, SenderHardware: p.MAC, SenderIP: p.IP, TargetIP: p.Gateway,
	}
	b, err := req.MarshalBinary()
	if err != nil {
		return ProbeResult{}, fmt.Errorf("reconverge: probe: %w", err)
	}
	filter, err := arpRepliesTo(p.MAC)
	if err != nil {
		return ProbeResult{}, err
	}
	// One socket sends and receives: opened (and filtered) before the
	// request leaves, so the reply cannot arrive before we listen.
	c, err := packet.Listen(p.Interface, packet.Raw, ethPAll, &packet.Config{Filter: filter})
	if err != nil {
		return ProbeResult{}, fmt.Errorf("reconverge: probe on %s: %w", p.Interface.Name, err)
	}
	defer c.Close()
	ignoreOutgoing(c)
	sent := time.Now()
	if _, err := c.WriteTo(b, &packet.Addr{HardwareAddr: rarp.Broadcast.HardwareAddr()}); err != nil {
		return ProbeResult{}, fmt.Errorf("reconverge: probe: send on %s: %w", p.Interface.Name, err)
	}
	if err := c.SetReadDeadline(sent.Add(timeout)); err != nil {
		return ProbeResult{}, err
	}
	// After the deadline is set: a cancel that came first would be
	// overwritten by it, and the probe would wait out its timeout.
	stop := context.AfterFunc(ctx, func() { _ = c.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	buf := make([]byte, 128)
	for {
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) || ctx.Err() != nil {
				return ProbeResult{}, nil
			}
			return ProbeResult{}, fmt.Errorf("reconverge: probe: read: %w", err)
		}
		var f rarp.Frame
		if f.UnmarshalBinary(buf[:n]) != nil {
			continue
		}
		if f.Operation == rarp.OpReply && f.SenderIP == p.Gateway && f.TargetIP == p.IP && f.TargetHardware == p.MAC {
			return ProbeResult{Answered: true, RTT: time.Since(sent), GatewayMAC: f.SenderHardware}, nil
		}
	}
}

// arpRepliesTo keeps incoming ARP frames whose Ethernet destination is mac.
func arpRepliesTo(mac rarp.MAC) ([]bpf.RawInstruction, error) {
	hi := uint32(mac[0])<<24 | uint32(mac[1])<<16 | uint32(mac[2])<<8 | uint32(mac[3])
	lo := uint32(mac[4])<<8 | uint32(mac[5])
	const packetOutgoing = 4
	raw, err := bpf.Assemble([]bpf.Instruction{
		bpf.LoadExtension{Num: bpf.ExtType},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: packetOutgoing, SkipTrue: 7},
		bpf.LoadAbsolute{Off: 12, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: rarp.EtherTypeARP, SkipTrue: 5},
		bpf.LoadAbsolute{Off: 0, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: hi, SkipTrue: 3},
		bpf.LoadAbsolute{Off: 4, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: lo, SkipTrue: 1},
		bpf.RetConstant{Val: 128},
		bpf.RetConstant{Val: 0},
	})
	if err != nil {
		return nil, fmt.Errorf("reconverge: assemble probe filter: %w", err)
	}
	return raw, nil
}
