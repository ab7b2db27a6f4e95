package app

import (
	"fmt"
	"net"

	"go.uber.org/zap"

	"github.com/rarp-announce/rarp-announce/internal/agent"
	"github.com/rarp-announce/rarp-announce/internal/config"
	"github.com/rarp-announce/rarp-announce/pkg/announce"
	"github.com/rarp-announce/rarp-announce/pkg/ipannounce"
	"github.com/rarp-announce/rarp-announce/pkg/ipsource"
	"github.com/rarp-announce/rarp-announce/pkg/qmp"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// ipFollower builds the ip_announce section's follower, or nil when it is
// off. Its Observe joins o.OnFrame, so every announcer built after it
// reports its first RARPs to it.
func ipFollower(cfg *config.Config, o *Options, qm *qmp.Metrics, log *zap.Logger) (*agent.IPFollower, error) {
	c := cfg.IPAnnounce
	if !c.Enabled {
		return nil, nil
	}
	r := &ipsource.Resolver{Nova: c.Sources.Nova, Carried: c.Sources.Carried, MaxAge: c.LearnedMaxAge.D(), Claims: ipsource.NewClaims(c.MaxPerNIC)}
	st, err := c.LoadStatic()
	if err != nil {
		// A table the configuration names: refused like the
		// responder's (a configuration error, exit 2).
		return nil, &TableError{err}
	}
	r.Static = st
	var learn agent.LearnerOpener
	if c.Sources.Learned {
		// Bounded: max_ips_per_nic per MAC, learnedMACs MACs.
		r.Learned = ipsource.NewLearned(c.MaxPerNIC, learnedMACs, c.LearnedMaxAge.D())
		learn = func(dev string, mac rarp.MAC, seen func(ipsource.Event)) (agent.Learner, error) {
			var l *ipsource.Learner
			err := inNetns(o.Netns, func() error {
				ifi, err := net.InterfaceByName(dev)
				if err != nil {
					return err
				}
				l, err = ipsource.Listen(ifi, mac, r.Learned)
				return err
			})
			if l != nil {
				l.OnEvent = seen
			}
			return l, err
		}
	}
	if c.Sources.Leases {
		if o.Leases == nil {
			log.Warn("ip_announce.sources.leases is on but this command has no libvirt connection for leases: not used")
		}
		r.Leases = o.Leases
	}
	var carry agent.CarryOptions
	switch {
	case !c.Sources.Learned:
	case !c.CarryLearned:
		log.Info("learned addresses stay on this host (ip_announce.carry_learned is off): a migration's destination will not know them")
	case o.Metadata == nil:
		log.Warn("ip_announce.carry_learned is on but this command has no read-write libvirt connection: learned addresses stay on this host")
	default:
		carry = agent.CarryOptions{Write: o.Metadata, Every: c.CarryEvery.D(), PerNIC: c.MaxPerNIC, MaxAge: c.LearnedMaxAge.D()}
	}
	capper, err := ipannounce.NewUplinkCap(c.FramesPerSecondPerUplink)
	if err != nil {
		return nil, fmt.Errorf("ip_announce.frames_per_second_per_uplink: %w", err)
	}
	io := agent.IPOptions{
		Resolver: r, Gateways: c.GatewayAddrs(), GARPReply: c.GARPReply, Schedule: c.Schedule(), Cap: capper,
		Metrics: agent.NewIPMetrics(o.Registerer), Logger: log.Named("ip"), Learn: learn,
		Carry: carry,
	}
	if c.GuestAnnounce {
		if o.Monitor == nil {
			log.Warn("ip_announce.guest_announce is on but this command has no QMP connection: the guests are not asked")
		} else {
			io.Guest = &qmp.Announcer{Monitor: o.Monitor, Metrics: qm, Name: "rarp-announce-guest"}
		}
	}
	f := agent.NewIPFollower(io)
	if prev := o.OnFrame; prev != nil {
		o.OnFrame = func(s announce.Sent) { prev(s); f.Observe(s) }
	} else {
		o.OnFrame = f.Observe
	}
	return f, nil
}

// learnedMACs bounds the learned store: more MACs than a hypervisor runs.
const learnedMACs = 4096
