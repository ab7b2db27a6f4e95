// Package app is the one place that wires the agent's parts: the
// announcer (host frames, paced per segment), the port watcher, the FDB
// repair pool, the strategies (host built into the agent; ovs and qemu
// adapters from internal/strategy) and their metrics. 'rarp-announce run'
// (internal/daemon), 'rarp-announce announce' and the agent's test harness
// build their parts here, so the tests exercise the wiring that ships.
package app

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netns"
	"go.uber.org/zap"

	"github.com/rarp-announce/rarp-announce/internal/agent"
	"github.com/rarp-announce/rarp-announce/internal/config"
	"github.com/rarp-announce/rarp-announce/internal/strategy"
	"github.com/rarp-announce/rarp-announce/pkg/announce"
	"github.com/rarp-announce/rarp-announce/pkg/fdb"
	"github.com/rarp-announce/rarp-announce/pkg/ipsource"
	"github.com/rarp-announce/rarp-announce/pkg/ovs"
	"github.com/rarp-announce/rarp-announce/pkg/plan"
	"github.com/rarp-announce/rarp-announce/pkg/portwatch"
	"github.com/rarp-announce/rarp-announce/pkg/qmp"
	"github.com/rarp-announce/rarp-announce/pkg/uplink"
)

// Options are what differs between the commands and the tests; the rest
// comes from the configuration.
type Options struct {
	// Netns is the network namespace the port watcher and the FDB repair
	// work in; nil: the caller's.
	Netns *netns.NsHandle
	// Open opens the host strategy's sockets; nil: announce.OpenPacket.
	Open announce.Opener
	// Registerer receives every part's metrics; nil: counted, not exported.
	Registerer prometheus.Registerer
	Logger     *zap.Logger
	// OnFrame, if set, sees every frame of the host and ovs strategies.
	OnFrame func(announce.Sent)
	// Monitor runs QMP commands (the qemu strategy); nil: qemu is off.
	Monitor qmp.Monitor
	// Force builds the strategy it names even if no NIC kind of the
	// config uses it (announce --strategy).
	Force plan.Strategy
	// OVS, if set, replaces the OVS announcer the config would build
	// (tests hold or fake it).
	OVS strategy.OVSAnnouncer
	// FDBOptional goes on without FDB repair when its netlink sockets
	// cannot be opened (one-shot commands) instead of failing.
	FDBOptional bool
	// Metadata writes learned addresses into a domain's live XML
	// (ip_announce.carry_learned) on a read-write libvirt connection; nil:
	// they stay on this host.
	Metadata agent.MetadataWriter
	// Leases looks up libvirt's DHCP leases (ip_announce.sources.leases);
	// nil: that source is off.
	Leases ipsource.LeaseSource
	// Flood is called before a NIC's frames are written to a bridge
	// device (procs.Policy.Flood, the daemon); nil: nothing.
	Flood func()
	// WatchUplinks follows the uplinks that carry the running domains'
	// NICs (bond failover, carrier back, port re-added) for the agent's
	// re-announces, when a trigger of cfg wants them (the daemon; not
	// one-shot commands).
	WatchUplinks bool
}

// App holds the built parts; Close releases them.
type App struct {
	Announcer *announce.Announcer
	Ports     *portwatch.Watcher
	FDB       agent.FDB // nil: fdb_repair off or not permitted
	OVS       strategy.OVSAnnouncer
	Metrics   *agent.Metrics
	IP        *agent.IPFollower // nil: ip_announce off
	Reconv    *agent.Reconv     // reconv.go
	QMP       *qmp.Announcer    // the qemu strategy's; nil: qemu off

	// Uplinks follows the bridges' uplinks (host.send_on: uplinks); nil:
	// bridge NICs are announced on the bridge device.
	Uplinks agent.Uplinks
	// Topology and UplinkWatch follow the namespace's uplinks for the
	// failover re-announces (Options.WatchUplinks); nil otherwise.
	Topology    *uplink.Resolver
	UplinkWatch *uplink.Watcher

	strategies map[plan.Strategy]agent.Strategy
	flood      func()
	closers    []func()
}

// Build wires the parts for cfg. Nothing is sent until the agent runs.
func Build(ctx context.Context, cfg *config.Config, o Options) (_ *App, err error) {
	log := o.Logger
	if log == nil {
		log = zap.NewNop()
	}
	a := &App{strategies: map[plan.Strategy]agent.Strategy{}, flood: o.Flood}
	defer func() {
		if err != nil {
			a.Close()
		}
	}()
	pacing := announce.Pacing{PerSecond: cfg.Pacing.FramesPerSecond, Burst: cfg.Pacing.Burst}
	anm, agm := announce.NewMetrics(o.Registerer), agent.NewMetrics(o.Registerer)
	pwm := portwatch.NewMetrics(o.Registerer)
	a.Metrics = agm
	var qm *qmp.Metrics
	if o.Monitor != nil {
		qm = qmp.NewMetrics(o.Registerer)
	}
	if a.IP, err = ipFollower(cfg, &o, qm, log); err != nil {
		return nil, err
	}

	if err := a.openTopology(cfg, o, log); err != nil {
		return nil, err
	}
	if err := a.buildReconv(ctx, cfg, o, o.Registerer); err != nil {
		return nil, fmt.Errorf("watching the network around migrations (netlink): %w", err)
	}
	if err := a.buildAnnouncer(cfg, o, pacing, anm, log); err != nil {
		return nil, err
	}
	if a.IP != nil {
		a.IP.SetSender(announce.KindHost, a.Announcer.Announce)
	}

	a.Ports, err = portwatch.New(ctx, portwatch.Options{Namespace: o.Netns, Logger: log.Named("portwatch"), Metrics: pwm})
	if err != nil {
		return nil, fmt.Errorf("watching links (netlink): %w", err)
	}
	a.closers = append(a.closers, func() { _ = a.Ports.Close() })

	if cfg.FDBRepair {
		fm := fdb.NewMetrics(o.Registerer)
		// A pool: the repairs of VMs landing together overlap instead
		// of queueing on one netlink socket (BenchmarkStorm).
		p, err := fdb.NewPool(o.Netns, fm, fdb.DefaultPoolSize)
		switch {
		case err == nil:
			a.closers = append(a.closers, p.Close)
			if a.Topology != nil {
				// The bridge, the VM's port and the entries' ports
				// from the topology's view: no RTM_GETLINK per repair.
				p.SetLinks(a.Topology)
			}
			a.FDB = p
		case o.FDBOptional:
			log.Warn("FDB repair off: cannot open netlink", zap.Error(err))
		default:
			return nil, err
		}
	}

	if fa, ok := a.OVS.(interface {
		AnnounceFrame(announce.Request) (*announce.Handle, error)
	}); ok && a.IP != nil {
		a.IP.SetSender(announce.KindOVS, fa.AnnounceFrame)
	}
	if a.OVS != nil {
		st := strategy.OVS{Announcer: a.OVS, Ready: agent.PortReady(a.Ports)}
		if o.OVS == nil {
			// OVN-managed ports (external_ids:iface-id) are announced once
			// ovn-controller has installed them here, from the same local
			// OVSDB; other ports pass at once.
			st.OVN = &ovs.OVNReadiness{Socket: ovnDB(cfg.OVS.DB, cfg.OVS.RunDir), Metrics: ovs.NewOVNMetrics(o.Registerer)}
		}
		a.strategies[plan.OVS] = st
	}
	if o.Monitor != nil {
		a.QMP = &qmp.Announcer{Monitor: o.Monitor, Metrics: qm}
		a.strategies[plan.QEMU] = strategy.QEMU{Announcer: a.QMP}
	}
	return a, nil
}

// buildAnnouncer builds the one announcer every strategy that sends
// frames shares (a.Announcer): host ports through o.Open with
// host.frame_mark, and, when a NIC kind uses the ovs strategy, OVS ports
// injected through the switch it opens (a.OVS, strategy.OVSPorts), each
// segment (an uplink, an OVS bridge) with its own pacer and one timing
// loop for all. o.OVS, if set, replaces the OVS announcer.
func (a *App) buildAnnouncer(cfg *config.Config, o Options, pacing announce.Pacing, m *announce.Metrics, log *zap.Logger) error {
	var sw *ovs.Switch
	a.OVS = o.OVS
	if a.OVS == nil && (cfg.UsesOVS() || o.Force == plan.OVS) {
		c := cfg.OVS
		var err error
		sw, err = ovs.Open(ovs.Config{
			Vsctl: c.Vsctl, Ofctl: c.Ofctl, DB: c.DB, RunDir: c.RunDir,
			Injection: c.Injection, Lookup: c.Lookup,
			LookupTimeout: c.LookupTimeout.D(), FrameTimeout: c.FrameTimeout.D(),
		})
		if err != nil {
			return err
		}
	}
	var ovsPorts *strategy.OVSPorts // set below, before any frame
	onFrame := o.OnFrame
	if sw != nil {
		onFrame = func(s announce.Sent) {
			if s.Port.Kind == announce.KindOVS {
				ovsPorts.Sent(s)
			}
			if o.OnFrame != nil {
				o.OnFrame(s)
			}
		}
	}
	var openOVS announce.PortOpener
	if sw != nil {
		openOVS = sw.Opener()
	}
	a.Announcer = newAnnouncer(pacing, m, log, markedOpen(o.Open, cfg.Host.FrameMark, log), openOVS, onFrame)
	if sw != nil {
		ovsPorts = strategy.NewOVSPorts(strategy.OVSPortsConfig{
			Switch: sw, Announcer: a.Announcer, Metrics: ovs.NewMetrics(o.Registerer), Logger: log.Named("ovs"),
		})
		a.OVS = ovsPorts
		// Closed after the announcer (closers run last first), so no
		// frame is injected into a closed switch.
		a.closers = append(a.closers, func() { _ = ovsPorts.Close() })
	}
	a.closers = append(a.closers, func() { _ = a.Announcer.Close() })
	return nil
}

// NewAnnouncer is the host announcer alone, for 'send' (no ports, no
// libvirt): pacing from its flags, frames through o.Open, o.OnFrame.
func NewAnnouncer(pacing announce.Pacing, o Options) *announce.Announcer {
	log := o.Logger
	if log == nil {
		log = zap.NewNop()
	}
	return newAnnouncer(pacing, announce.NewMetrics(o.Registerer), log, o.Open, nil, o.OnFrame)
}

// newAnnouncer: host ports open through open (nil: announce.OpenPacket),
// others through openOther (nil: none).
func newAnnouncer(pacing announce.Pacing, m *announce.Metrics, log *zap.Logger, open announce.Opener, openOther announce.PortOpener, onFrame func(announce.Sent)) *announce.Announcer {
	return announce.New(announce.Options{
		Open: open, OpenPort: openOther, Pacing: pacing, Metrics: m, Logger: log.Named("announce"), OnFrame: onFrame,
	})
}

// markedOpen is open (nil: announce.OpenPacket) with its sockets marking
// their frames with mark (host.frame_mark), which the premature-move
// watches drop (reconv.go); a refusal is logged once.
func markedOpen(open announce.Opener, mark uint32, log *zap.Logger) announce.Opener {
	if open == nil {
		open = announce.OpenPacket
	}
	var once sync.Once
	return announce.Marked(open, mark, func(err error) {
		once.Do(func() {
			log.Warn("frames sent unmarked (host.frame_mark): the premature-move watches wake for the agent's own frames; SO_MARK needs Linux 5.17+ or CAP_NET_ADMIN", zap.Error(err))
		})
	})
}

// Deps are the agent's parts, with lv as its libvirt.
func (a *App) Deps(lv agent.Libvirt, log *zap.Logger) agent.Deps {
	d := agent.Deps{
		Libvirt: lv, Ports: a.Ports, FDB: a.FDB, Uplinks: a.Uplinks, Strategies: a.strategies,
		Announcer: a.Announcer, Logger: log, Metrics: a.Metrics, IP: a.IP, Reconv: a.Reconv, Flood: a.flood,
	}
	// Typed nils would look set to the agent.
	if a.UplinkWatch != nil {
		d.UplinkEvents, d.Topology = a.UplinkWatch, a.Topology
		if u, ok := a.OVS.(agent.OVSUplinks); ok {
			d.OVSUplinks = u
		}
	}
	return d
}

// Close stops the announces and releases the parts, last built first.
func (a *App) Close() {
	for i := len(a.closers) - 1; i >= 0; i-- {
		a.closers[i]()
	}
	a.closers = nil
}

// ovnDB is the OVSDB socket the OVN readiness check reads, the one the ovs
// lookup uses: the configured db, else <rundir>/db.sock, else OVS's
// default.
func ovnDB(db, runDir string) string {
	if db == "" && runDir != "" {
		return "unix:" + filepath.Join(runDir, "db.sock")
	}
	return db
}
