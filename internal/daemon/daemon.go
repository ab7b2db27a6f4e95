// Package daemon assembles the agent of 'rarp-announce run' from its
// configuration: libvirt watcher -> agent (planner, readiness, FDB repair)
// -> announcer, the optional QMP and Open vSwitch strategies, the optional
// RARP responder, and the HTTP endpoint; and it handles the signals
// (SIGHUP reload, SIGUSR1/SIGUSR2 log level, SIGTERM stop).
package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/rarp-announce/rarp-announce/internal/agent"
	"github.com/rarp-announce/rarp-announce/internal/app"
	"github.com/rarp-announce/rarp-announce/internal/caps"
	"github.com/rarp-announce/rarp-announce/internal/config"
	"github.com/rarp-announce/rarp-announce/internal/procs"
	"github.com/rarp-announce/rarp-announce/internal/sdnotify"
	"github.com/rarp-announce/rarp-announce/internal/version"
	"github.com/rarp-announce/rarp-announce/pkg/domxml"
	"github.com/rarp-announce/rarp-announce/pkg/libvirtconn"
	"github.com/rarp-announce/rarp-announce/pkg/libvirtwatch"
	"github.com/rarp-announce/rarp-announce/pkg/plan"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
	"github.com/rarp-announce/rarp-announce/pkg/wait"
)

// Overrides are command-line flags that win over the file.
type Overrides struct {
	LibvirtSocket  string
	MetricsAddress string
	LogLevel       string
	LogFormat      string
}

// Apply sets the overrides on c.
func (o Overrides) Apply(c *config.Config) {
	if o.LibvirtSocket != "" {
		c.Libvirt.Socket = o.LibvirtSocket
	}
	if o.MetricsAddress != "" {
		c.Metrics.Address = o.MetricsAddress
	}
	if o.LogLevel != "" {
		c.Log.Level = o.LogLevel
	}
	if o.LogFormat != "" {
		c.Log.Format = o.LogFormat
	}
}

// Load reads the config (defaults when path is empty) and applies the
// overrides; errors are configuration errors (exit 2).
func Load(path string, o Overrides) (*config.Config, error) {
	c := config.Default()
	if path != "" {
		var err error
		if c, err = config.Load(path); err != nil {
			return nil, err
		}
	}
	o.Apply(c)
	// What the flags changed must be as valid as the file.
	if err := c.Validate("command line"); err != nil {
		return nil, err
	}
	return c, nil
}

// Settings derives the agent's reloadable settings from a config.
func Settings(c *config.Config) agent.Settings {
	st := c.Strategies
	return agent.Settings{
		Plan: plan.Options{
			Strategies: plan.Strategies{
				plan.KindBridge: st.Bridge, plan.KindNetwork: st.Network,
				plan.KindDirect: st.Direct, plan.KindOpenVSwitch: st.OpenVSwitch,
				plan.KindVhostUser: st.VhostUser, plan.KindEthernet: st.Ethernet,
			},
			RepairFDB: c.FDBRepair,
		},
		Schedule:     c.Schedule.Announce(),
		ReadyTimeout: c.Readiness.Timeout.D(),
		WatchWindow:  c.Readiness.WatchWindow.D(),
		Disabled:     c.Triggers.Disabled(),
	}
}

// ConnConfig derives how the agent reaches libvirt: events, states and
// live XML need only the read-only socket. QMP gets a connection of its own
// (QMPConfig).
func ConnConfig(c *config.Config, log *zap.Logger, m *libvirtconn.Metrics) libvirtconn.Config {
	return libvirtconn.Config{
		Socket:     c.Libvirt.Socket,
		ReadOnly:   true,
		URI:        c.Libvirt.URI,
		RPCTimeout: c.Libvirt.RPCTimeout.D(),
		Logger:     log,
		Metrics:    m,
	}
}

// LibvirtConfig derives the watcher's configuration: its connection is
// ConnConfig's, counted in m.RPC.
func LibvirtConfig(c *config.Config, log *zap.Logger, m *libvirtwatch.Metrics) libvirtwatch.Config {
	return libvirtwatch.Config{
		Conn:             ConnConfig(c, log, m.RPC),
		BackoffMin:       c.Libvirt.BackoffMin.D(),
		BackoffMax:       c.Libvirt.BackoffMax.D(),
		AnnounceOnResync: c.Libvirt.AnnounceOnResync,
		ReportConnection: true, // the agent suspends refreshes while disconnected
		Logger:           log,
		Metrics:          m,
	}
}

// QMPConfig derives the configuration of the QMP connection: the same
// libvirt, on the read-write socket (when libvirt.socket is empty), dialed
// only when a NIC on the qemu strategy lands (libvirtconn.Redialer says
// why it is not the watcher's).
func QMPConfig(c *config.Config, log *zap.Logger, m *libvirtconn.Metrics) libvirtconn.Config {
	lc := ConnConfig(c, log, m)
	lc.ReadOnly = false
	return lc
}

// Daemon is a running agent.
type Daemon struct {
	cfgPath string
	over    Overrides
	log     *zap.Logger
	logs    *app.Log

	// started is the configuration the daemon started with: a reload
	// compares what only a restart changes with it, not with the last
	// reload's (which would warn when a setting is put back, and stay
	// silent at a second SIGHUP while it is still not in effect).
	started *config.Config

	reg     *prometheus.Registry
	http    *app.HTTP
	watcher *libvirtwatch.Watcher
	qmpConn *libvirtconn.Redialer
	parts   *app.App
	agent   *agent.Agent
	resp    *app.Responder
	closers []func()
	cfgm    *config.ReloadMetrics
	procs   *procs.Policy // the Go Ps: one, and one more each for bridge floods and the responder
}

// New builds the daemon: nothing watches or sends until Run. The error
// is a start-up failure (exit 1): metrics port taken, netlink refused.
func New(ctx context.Context, cfgPath string, cfg *config.Config, over Overrides) (*Daemon, error) {
	if err := caps.CheckAgent(cfg); err != nil { // exit 1 naming it, not EPERM retried
		return nil, err
	}
	logs, err := app.NewLog(cfg.Log, true)
	if err != nil {
		return nil, err
	}
	logs.CatchSignals() // a SIGHUP while the parts start must not kill the agent
	log := logs.Logger
	d := &Daemon{cfgPath: cfgPath, over: over, started: cfg, log: log, logs: logs, reg: app.NewRegistry()}
	d.procs = procs.Start(log) // sets GOMAXPROCS: one P until a part needs more
	ok := false
	defer func() {
		if !ok {
			d.close()
		}
	}()

	lvm := libvirtwatch.NewMetrics(d.reg)
	d.cfgm = config.NewReloadMetrics()
	d.reg.MustRegister(d.cfgm)
	// Always there: the connection is dialed only when a NIC on the qemu
	// strategy lands, so a reload can switch a NIC kind to qemu.
	d.qmpConn = libvirtconn.NewRedialer(QMPConfig(cfg, log.Named("libvirt-qmp"), lvm.RPC))
	d.closers = append(d.closers, func() { _ = d.qmpConn.Close() })
	d.parts, err = app.Build(ctx, cfg, app.Options{Registerer: d.reg, Logger: log, Monitor: d.monitor,
		Metadata: d.setMetadata, Leases: d.leases, WatchUplinks: true, Flood: d.procs.Flood})
	if err != nil {
		return nil, tableConfigError(err)
	}
	d.closers = append(d.closers, d.parts.Close)
	d.watcher = libvirtwatch.New(LibvirtConfig(cfg, log.Named("libvirt"), lvm))
	deps := d.parts.Deps(d.watcher, log.Named("agent"))
	if err := d.addResponder(ctx, cfg); err != nil {
		return nil, err
	}
	d.agent = agent.New(deps, Settings(cfg))

	d.http, err = app.ListenHTTP(cfg.Metrics.Address, d.reg, d.ready, log)
	if err != nil {
		return nil, fmt.Errorf("metrics address %s: %w", cfg.Metrics.Address, err)
	}
	ok = true
	return d, nil
}

// monitor runs a QMP command on the QMP connection.
func (d *Daemon) monitor(ctx context.Context, uuid, cmd string) (string, error) {
	return d.qmpConn.QEMUMonitorCommand(ctx, libvirtwatch.DomainRef{UUID: uuid}, cmd)
}

// setMetadata writes our <metadata> element into a domain's live XML on
// the QMP connection (read-write; dialed at the first write).
func (d *Daemon) setMetadata(ctx context.Context, uuid string, elem []byte) error {
	err := d.qmpConn.SetMetadata(ctx, libvirtwatch.DomainRef{UUID: uuid}, string(elem), domxml.AddressesKey, domxml.AddressesNamespace)
	if errors.Is(err, libvirtconn.ErrDenied) {
		return fmt.Errorf("%w: %w", agent.ErrMetadataDenied, err)
	}
	return err
}

// leases asks the watcher's (read-only) connection for a libvirt
// network's DHCP leases of mac.
func (d *Daemon) leases(ctx context.Context, network string, mac rarp.MAC) ([]netip.Addr, error) {
	return d.watcher.DHCPLeases(ctx, network, mac.String())
}

func (d *Daemon) ready() (bool, string) {
	if !d.watcher.Ready() {
		return false, "not subscribed to libvirt events"
	}
	return true, "ready"
}

// Addr is the HTTP endpoint's address.
func (d *Daemon) Addr() string { return d.http.Addr() }

// Run runs until ctx is done (SIGTERM, SIGINT): it then stops watching,
// cancels what is in flight and returns nil.
func (d *Daemon) Run(ctx context.Context) error {
	defer d.close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	v, rev := version.Get()
	d.log.Info("rarp-announce agent starting", zap.String("version", v), zap.String("revision", rev),
		zap.String("metrics", d.http.Addr()), zap.String("config", d.cfgPath))

	reloads := make(chan struct{}, 1)
	d.logs.HandleSignals(ctx, func() {
		wait.Wake(reloads)
	})

	events := make(chan libvirtwatch.Event, 4096)
	var wg sync.WaitGroup
	wg.Add(4)
	go func() {
		defer wg.Done()
		if err := d.http.Serve(ctx); err != nil {
			d.log.Error("HTTP endpoint stopped", zap.Error(err))
		}
	}()
	go func() {
		defer wg.Done()
		if err := d.watcher.Run(ctx, events); err != nil {
			d.log.Error("libvirt watcher stopped", zap.Error(err))
		}
	}()
	go func() {
		defer wg.Done()
		d.agent.Run(ctx, events)
	}()
	go func() {
		defer wg.Done()
		d.runResponder(ctx)
	}()
	go sdnotify.Run(ctx, d.log.Named("systemd"), d.ready) // READY=1 once libvirt is subscribed

	for {
		select {
		case <-ctx.Done():
			d.log.Info("stopping")
			cancel()
			wg.Wait()
			d.log.Info("stopped")
			return nil
		case <-reloads:
			d.reload(ctx)
		}
	}
}

// reload re-reads the config on SIGHUP. What can change live: schedule,
// readiness, strategies (qemu included), FDB repair switch (if it was on at start), log
// level, the responder's tables, the triggers (uplink ones included) and
// failover.hold_down. The rest needs a restart and is logged.
//
// ctx is the daemon's: a SIGTERM cuts short a table reload that waits on
// DNS, instead of waiting up to the lookup timeout.
func (d *Daemon) reload(ctx context.Context) {
	cfg, err := Load(d.cfgPath, d.over)
	d.cfgm.Observe(err)
	if err != nil {
		d.log.Error("reload refused; keeping the running configuration", zap.Error(err))
		return
	}
	for _, c := range restartOnly(d.started, cfg) {
		d.log.Warn("changed setting needs a restart to take effect", zap.String("key", c))
	}
	if lvl, err := zapcore.ParseLevel(cfg.Log.Level); err == nil {
		d.logs.Level.SetLevel(lvl)
	}
	d.agent.Update(Settings(cfg))
	if d.parts.UplinkWatch != nil {
		d.parts.UplinkWatch.SetHoldDown(cfg.Failover.HoldDown.D())
	}
	d.reloadResponder(ctx, cfg)
	if ctx.Err() != nil {
		return // stopping: the reload did not finish
	}
	d.log.Info("configuration reloaded", zap.String("config", d.cfgPath))
}

// restartOnly lists the keys that differ and cannot change live.
func restartOnly(a, b *config.Config) []string {
	var out []string
	if a.Libvirt != b.Libvirt {
		out = append(out, "libvirt")
	}
	if a.Pacing != b.Pacing {
		out = append(out, "pacing")
	}
	if a.Metrics != b.Metrics {
		out = append(out, "metrics")
	}
	if a.Log.Format != b.Log.Format {
		out = append(out, "log.format")
	}
	if a.OVS != b.OVS {
		out = append(out, "ovs")
	}
	if a.Host != b.Host {
		out = append(out, "host")
	}
	if a.FDBRepair != b.FDBRepair && !a.FDBRepair {
		out = append(out, "fdb_repair")
	}
	if !reflect.DeepEqual(a.IPAnnounce, b.IPAnnounce) {
		out = append(out, "ip_announce")
	}
	ra, rb := a.Responder, b.Responder
	if ra.Enabled != rb.Enabled || !slices.Equal(ra.Interfaces, rb.Interfaces) {
		out = append(out, "responder.enabled/interfaces")
	}
	// The answering rules are the server's, built at start; the files'
	// directories are watched from start (a new path would be read once
	// and never followed). SIGHUP re-reads the same files.
	if ra.OffLink != rb.OffLink || ra.BootDir != rb.BootDir || ra.ARPAdvise != rb.ARPAdvise {
		out = append(out, "responder.off_link/boot_dir/arp_advise")
	}
	if ra.Ethers != rb.Ethers || ra.Map != rb.Map {
		out = append(out, "responder.ethers/map")
	}
	return out
}

func (d *Daemon) close() {
	for i := len(d.closers) - 1; i >= 0; i-- {
		d.closers[i]()
	}
	d.closers = nil
	d.logs.Close()
}
