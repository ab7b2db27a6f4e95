package app

import (
	"context"
	"net"
	"os"
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/rarp-announce/rarp-announce/internal/agent"
	"github.com/rarp-announce/rarp-announce/internal/config"
	"github.com/rarp-announce/rarp-announce/internal/record"
	"github.com/rarp-announce/rarp-announce/pkg/moves"
	"github.com/rarp-announce/rarp-announce/pkg/plan"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
	"github.com/rarp-announce/rarp-announce/pkg/reconverge"
)

// webhookDepth is how many records wait for a slow webhook before new ones
// are dropped.
const webhookDepth = 256

// buildReconv wires the watches around migrations (agent.Reconv): the
// uplinks and the watch sockets in the agent's namespace, the move ledger,
// the webhook (run until ctx ends).
func (a *App) buildReconv(ctx context.Context, cfg *config.Config, o Options, reg prometheus.Registerer) error {
	h, err := netlinkIn(o.Netns)
	if err != nil {
		return err
	}
	a.closers = append(a.closers, h.Close)
	rc := cfg.Reconvergence
	r := &agent.Reconv{
		Window: rc.Window.D(), StaleWindow: rc.StaleWindow.D(), PrematureMargin: rc.PrematureMargin.D(),
		Uplinks: agent.UplinksIn(func() ([]agent.LinkInfo, error) { return links(h) }),
		Open:    watchIn(o.Netns),
		Ledger:  moves.New(cfg.MoveLedger.Window.D(), cfg.MoveLedger.Limit),
		MoveCap: &agent.MoveCap{PerPeriod: cfg.MoveLedger.MaxMACsPerMinute},
		Metrics: agent.NewReconvMetrics(reg),
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

func netlinkIn(ns *netns.NsHandle) (*netlink.Handle, error) {
	if ns == nil {
		return netlink.NewHandle()
	}
	return netlink.NewHandleAt(*ns)
}

// links lists the namespace's links with their kind and master's name.
func links(h *netlink.Handle) ([]agent.LinkInfo, error) {
	ls, err := h.LinkList()
	if err != nil {
		return nil, err
	}
	names := make(map[int]string, len(ls))
	for _, l := range ls {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	out := make([]agent.LinkInfo, 0, len(ls))
	for _, l := range ls {
		out = append(out, agent.LinkInfo{Name: l.Attrs().Name, Kind: l.Type(), Master: names[l.Attrs().MasterIndex]})
	}
	return out, nil
}

// watchIn opens reconverge watches in ns (nil: the caller's): the socket
// stays in the namespace it was opened in.
func watchIn(ns *netns.NsHandle) func(string, reconverge.Direction, []rarp.MAC) (*reconverge.Watch, error) {
	return func(ifname string, dir reconverge.Direction, macs []rarp.MAC) (*reconverge.Watch, error) {
		var w *reconverge.Watch
		err := inNetns(ns, func() error {
			ifi, err := net.InterfaceByName(ifname)
			if err != nil {
				return err
			}
			w, err = reconverge.Open(ifi, dir, macs)
			return err
		})
		return w, err
	}
}

// inNetns runs fn on a thread switched into ns; the thread is discarded
// afterwards (never unlocked), so no goroutine runs in the wrong namespace.
func inNetns(ns *netns.NsHandle, fn func() error) error {
	if ns == nil {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := netns.Set(*ns); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// Uplinks returns where the fabric delivers a NIC's traffic to this host
// (agent.UplinksIn over the caller's namespace) and a function releasing
// its netlink socket: 'verify' probes there.
func Uplinks() (func(plan.Target) []string, func(), error) {
	h, err := netlink.NewHandle()
	if err != nil {
		return nil, nil, err
	}
	return agent.UplinksIn(func() ([]agent.LinkInfo, error) { return links(h) }), h.Close, nil
}
