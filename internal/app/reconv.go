package app

import (
	"context"
	"net"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netns"

	"github.com/rarp-announce/rarp-announce/internal/agent"
	"github.com/rarp-announce/rarp-announce/internal/config"
	"github.com/rarp-announce/rarp-announce/internal/record"
	"github.com/rarp-announce/rarp-announce/pkg/moves"
	"github.com/rarp-announce/rarp-announce/pkg/plan"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
	"github.com/rarp-announce/rarp-announce/pkg/reconverge"
	"github.com/rarp-announce/rarp-announce/pkg/uplink"
)

// webhookDepth is how many records wait for a slow webhook before new ones
// are dropped.
const webhookDepth = 256

// buildReconv wires the watches around migrations (agent.Reconv): the
// uplinks and the watch sockets in the agent's namespace, the move ledger,
// the webhook (run until ctx ends).
func (a *App) buildReconv(ctx context.Context, cfg *config.Config, o Options, reg prometheus.Registerer) error {
	rc := cfg.Reconvergence
	r := &agent.Reconv{
		Window: rc.Window.D(), StaleWindow: rc.StaleWindow.D(), PrematureMargin: rc.PrematureMargin.D(),
		Open:    watchIn(o.Netns, a.Topology, cfg.Host.FrameMark),
		Ledger:  moves.New(cfg.MoveLedger.Window.D(), cfg.MoveLedger.Limit),
		MoveCap: &agent.MoveCap{PerPeriod: cfg.MoveLedger.MaxMACsPerMinute},
		Metrics: agent.NewReconvMetrics(reg),
	}
	if a.Topology != nil {
		r.Uplinks = agent.UplinksOf(a.Topology)
	}
	r.Host, _ = os.Hostname()
	if rc.Webhook != "" {
		r.Webhook = record.NewWebhook(rc.Webhook, rc.WebhookTimeout.D(), webhookDepth)
		wctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); r.Webhook.Run(wctx) }()
		a.closers = append(a.closers, func() { cancel(); <-done })
	}
	a.Reconv = r
	return nil
}

// watchIn opens reconverge watches in ns (nil: the caller's): the socket
// stays in the namespace it was opened in. The watches on uplinks (one per
// landing, per departure and per incoming domain) share one socket per
// device and direction (reconverge.Shared; all of them are in ns), whose
// Out filters drop the frames marked ownMark, the agent's own. A tap's
// watch from its VM's MAC (a bridge with several uplinks) is the only one
// there: it keeps a socket of its own. The device's index comes from the
// topology's table when it knows the device (no syscall);
// net.InterfaceByName, which dumps every interface of the host, only for
// one it does not know yet (a tap created an instant ago).
func watchIn(ns *netns.NsHandle, topo *uplink.Resolver, ownMark uint32) func(string, reconverge.Direction, []rarp.MAC) (*reconverge.Watch, error) {
	shared := &reconverge.Shared{OwnMark: ownMark}
	return func(ifname string, dir reconverge.Direction, macs []rarp.MAC) (w *reconverge.Watch, err error) {
		err = inNetns(ns, func() error {
			ifi, err := interfaceOf(topo, ifname)
			if err != nil {
				return err
			}
			if dir == reconverge.From {
				w, err = reconverge.Open(ifi, dir, macs)
			} else {
				w, err = shared.Open(ifi, dir, macs)
			}
			return err
		})
		return w, err
	}
}

// interfaceOf names ifname's index from the topology when it is there,
// else asks the kernel (the caller's namespace).
func interfaceOf(topo *uplink.Resolver, ifname string) (*net.Interface, error) {
	if topo != nil {
		if l, ok := topo.Link(ifname); ok {
			return &net.Interface{Index: l.Index, Name: l.Name}, nil
		}
	}
	return net.InterfaceByName(ifname)
}

// Uplinks returns where the fabric delivers a NIC's traffic to this host
// (agent.UplinksOf over the caller's namespace's topology) and a function
// releasing the topology's sockets: 'verify' probes there.
func Uplinks() (func(plan.Target) []string, func(), error) {
	r, err := uplink.Open(uplink.Options{})
	if err != nil {
		return nil, nil, err
	}
	return agent.UplinksOf(r), func() { _ = r.Close() }, nil
}
