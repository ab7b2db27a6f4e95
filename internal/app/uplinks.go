package app

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/rarp-announce/rarp-announce/internal/config"
	"github.com/rarp-announce/rarp-announce/pkg/metricset"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
	"github.com/rarp-announce/rarp-announce/pkg/uplink"
)

// openTopology opens the one uplink resolver of the agent's namespace when
// something needs it: the host strategy sending on uplinks (host.send_on:
// uplinks), the failover re-announces (Options.WatchUplinks) and the
// reconvergence watches (where a landing's traffic arrives) share it, so
// the bridges are dumped once and followed from memory: no dump per
// landing.
//
// If it cannot be opened, bridge NICs still go out on their bridge device:
// the agent logs and counts each such fallback (reason unreadable), so the
// failure never silences an announce. The failover and reconvergence
// watches have no such fallback: asked for and impossible, they fail the
// start.
func (a *App) openTopology(cfg *config.Config, o Options, log *zap.Logger) error {
	send := cfg.Host.SendOn == config.SendOnUplinks
	// The daemon follows the uplinks even with every uplink trigger off,
	// so a reload can turn one on (the agent fills its registry only
	// while one is on); only then is a failure to follow them fatal.
	watch := o.WatchUplinks
	needed := watch && cfg.Triggers.Uplinks()
	rc := cfg.Reconvergence
	converge := rc.Window > 0 || rc.StaleWindow > 0 || rc.PrematureMargin > 0
	if !send && !watch && !converge {
		return nil
	}
	ulog := log.Named("uplink")
	var r *uplink.Resolver
	err := inNetns(o.Netns, func() (err error) {
		r, err = uplink.Open(uplink.Options{
			OnError:     func(err error) { ulog.Warn("following the bridges' uplinks", zap.Error(err)) },
			OnRecovered: func() { ulog.Info("following the bridges' uplinks again") },
		})
		return err
	})
	if err != nil {
		if needed {
			return fmt.Errorf("watching uplinks (netlink): %w", err)
		}
		if converge {
			return fmt.Errorf("watching the network around migrations (netlink): %w", err)
		}
		ulog.Error("cannot read the bridges' uplinks: bridge NICs are announced on the bridge device", zap.Error(err))
		a.Uplinks = unreadable{err}
		return nil
	}
	a.closers = append(a.closers, func() { _ = r.Close() })
	a.Topology = r
	if send {
		a.Uplinks = r
	}
	if watch {
		a.UplinkWatch = r.Watch(uplink.WatchConfig{HoldDown: cfg.Failover.HoldDown.D()})
		a.closers = append(a.closers, a.UplinkWatch.Close)
		metricset.Register(o.Registerer, watchStats{a.UplinkWatch})
	}
	return nil
}

// watchStats exports what the uplink watcher did not pass on, read from
// its counters at each scrape: an operator who sees no re-announce after a
// failover can tell "held down", "a LAG leg" and "the uplink was down" from
// "nothing seen".
type watchStats struct{ w *uplink.Watcher }

var suppressedDesc = prometheus.NewDesc(prometheus.BuildFQName(metricset.Namespace, "", "uplink_events_suppressed_total"),
	"Uplink changes that did not become a re-announce of their own, by reason: held_down (folded into the uplink's next event within failover.hold_down), lag_leg (a bond in a LAG mode, 802.3ad or a static EtherChannel, reported a failover: the switch sees one link; Linux's bonding driver reports none in these modes, so it stays 0 with it), uplink_down (the uplink was down when the change came or when its hold-down ended: nothing could leave by it, and its carrier coming back is an event of its own).",
	[]string{"reason"}, nil)

func (s watchStats) Describe(ch chan<- *prometheus.Desc) { ch <- suppressedDesc }

func (s watchStats) Collect(ch chan<- prometheus.Metric) {
	st := s.w.Stats()
	for reason, n := range map[string]uint64{"held_down": st.HeldDown, "lag_leg": st.LAGQuiet, "uplink_down": st.DownAtEnd} {
		ch <- prometheus.MustNewConstMetric(suppressedDesc, prometheus.CounterValue, float64(n), reason)
	}
}

// unreadable answers every bridge with a fallback to the bridge device.
type unreadable struct{ err error }

func (u unreadable) Targets(bridge, vmPort string, _ []rarp.VLAN) ([]uplink.Target, error) {
	return nil, &uplink.FallbackError{Bridge: bridge, Port: vmPort, Reason: uplink.Unreadable, Err: u.err}
}
