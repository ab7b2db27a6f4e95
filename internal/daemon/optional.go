package daemon

import (
	"context"

	"go.uber.org/zap"

	"github.com/rarp-announce/rarp-announce/pkg/announce"
	"github.com/rarp-announce/rarp-announce/pkg/ovs"
	"github.com/rarp-announce/rarp-announce/pkg/rarptable"
	"github.com/rarp-announce/rarp-announce/pkg/responder"

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

// responderParts is the embedded RARP server of 'rarp-announce serve'.
type responderParts struct {
	r        *responder.Responder
	reloader *rarptable.Reloader
}

// ConfigError is a start-up failure caused by the configuration or a file
// it names (the responder's tables): exit 2, not 1.
type ConfigError struct{ Err error }

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// addResponder builds the RARP responder when enabled: the table is loaded
// now, so a broken ethers or map file refuses the start with file:line (a
// table that failed only to resolve or read is retried in the background).
func (d *Daemon) addResponder(ctx context.Context, cfg *config.Config) error {
	c := cfg.Responder
	if !c.Enabled {
		return nil
	}
	log := d.log.Named("responder")
	holder := rarptable.NewHolder(nil)
	tm := rarptable.NewMetrics(holder)
	rl := &rarptable.Reloader{
		Loader: &rarptable.Loader{Files: rarptable.Files{Ethers: c.Ethers, Map: c.Map}},
		Holder: holder, Logger: log, Metrics: tm,
	}
	if err := rl.Start(ctx); err != nil { // a DNS or I/O failure is retried, not an error
		return &ConfigError{err}
	}
	rm := responder.NewMetrics()
	d.reg.MustRegister(rm, tm)
	r, err := responder.New(responder.Config{
		Interfaces: c.Interfaces, Table: holder, OffLink: c.OffLink, BootDir: c.BootDir,
		ARPAdvise: c.ARPAdvise, Logger: log, Metrics: rm,
	})
	if err != nil {
		return err
	}
	d.resp = &responderParts{r: r, reloader: rl}
	d.closers = append(d.closers, func() { _ = r.Close() })
	return nil
}

// runResponder answers requests and follows the table files until ctx ends.
func (d *Daemon) runResponder(ctx context.Context) {
	if d.resp == nil {
		return
	}
	go func() {
		if err := d.resp.reloader.Watch(ctx); err != nil && ctx.Err() == nil {
			d.log.Warn("not watching the responder's table files; SIGHUP still reloads them", zap.Error(err))
		}
	}()
	if err := d.resp.r.Run(ctx); err != nil && ctx.Err() == nil {
		d.log.Error("RARP responder stopped", zap.Error(err))
	}
}

// reloadResponder re-reads the tables on SIGHUP (a broken file keeps the
// old table and logs why) and picks up new file paths.
func (d *Daemon) reloadResponder(cfg *config.Config) {
	if d.resp == nil || !cfg.Responder.Enabled {
		return
	}
	d.resp.reloader.Loader.Files = rarptable.Files{Ethers: cfg.Responder.Ethers, Map: cfg.Responder.Map}
	if err := d.resp.reloader.Reload(context.Background(), "SIGHUP"); err != nil {
		d.log.Error("responder table reload refused; keeping the old table", zap.Error(err))
	}
	if err := d.resp.r.RefreshBootDir(); err != nil {
		d.log.Warn("boot directory", zap.Error(err))
	}
}
