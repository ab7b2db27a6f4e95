// Package agent is the daemon's core: it takes "landed" and "cancel" events
// from libvirt, plans each landed domain's NICs, waits for each port to be
// ready, repairs the local bridge's stale MAC entry, and hands the announce
// to the announcer; it re-announces when a port changes soon after landing.
//
// The path of one announce: Libvirt event -> Agent.Handle -> land (XML,
// plan.Plan) -> the Strategy of each NIC (host: hostTarget, Ports.WaitReady,
// FDB.Repair, announce.Announcer.Announce; ovs and qemu: internal/strategy).
// docs/ARCHITECTURE.md walks it file by file.
package agent

import (
	"context"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/rarp-announce/rarp-announce/pkg/announce"
	"github.com/rarp-announce/rarp-announce/pkg/fdb"
	"github.com/rarp-announce/rarp-announce/pkg/libvirtwatch"
	"github.com/rarp-announce/rarp-announce/pkg/plan"
	"github.com/rarp-announce/rarp-announce/pkg/portwatch"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// Libvirt is what the agent asks libvirt (libvirtwatch.Watcher in
// production, the fake server's connection in tests).
type Libvirt interface {
	DomainXML(ctx context.Context, d libvirtwatch.DomainRef) ([]byte, error)
	DomainRunning(ctx context.Context, d libvirtwatch.DomainRef) (bool, error)
}

// Ports reports a VM port's readiness (portwatch.Watcher).
type Ports interface {
	// WaitReady returns once port exists, is attached to master (if not
	// empty) and is up, or an error naming what is missing.
	WaitReady(ctx context.Context, port, master string, timeout time.Duration) (portwatch.State, error)
	// WatchFunc calls fn for each re-attachment or down/up of port
	// within window, one at a time, and onEnd after the last.
	WatchFunc(ctx context.Context, port, master string, window time.Duration, fn func(portwatch.Change), onEnd func())
}

// FDB removes a bridge's stale entries for a MAC (fdb.Repairer).
type FDB interface {
	Repair(bridge string, mac rarp.MAC, ownPort string) ([]fdb.Entry, error)
}

// Settings can change on reload (SIGHUP).
type Settings struct {
	Plan         plan.Options
	Schedule     announce.Schedule
	ReadyTimeout time.Duration
	WatchWindow  time.Duration
	// Disabled names the triggers that announce nothing (the config's
	// triggers: set to false): migration, restore, snapshot, and the
	// uplink reasons bond_failover, carrier_up, port_added. Empty: all
	// announce.
	Disabled map[string]bool
}

// Deps are the agent's parts. FDB may be nil (no repair). The host
// strategy is built in (Ports, FDB, Announcer); Strategies adds the others
// (ovs, qemu: see internal/strategy) and may replace it. NICs whose
// strategy is missing are reported as not handled.
type Deps struct {
	Libvirt    Libvirt
	Ports      Ports
	FDB        FDB
	Strategies map[plan.Strategy]Strategy
	Announcer  *announce.Announcer
	Logger     *zap.Logger
	Metrics    *Metrics
	// IP, if set, sends the NICs' IP-layer frames after their RARPs
	// (ipfollow.go); nil: off.
	IP *IPFollower
	// Reconv watches the network around migrations (converge.go); nil:
	// no watch, no migration record.
	Reconv *Reconv

	// Uplinks, if set, sends bridge NICs' frames out of the bridge's
	// uplinks (host.send_on: uplinks); nil: on the bridge device.
	Uplinks Uplinks
	// Flood, if set, is called before a NIC's frames are written to a
	// bridge device, which floods each to every port of the bridge
	// inside sendto (procs.Policy.Flood: more Go Ps for those sends).
	Flood func()
	// UplinkEvents reports uplink failovers, carrier returns and re-added
	// uplink ports (uplink.Watcher), Topology says which bridge or lower
	// device they belong to (uplink.Resolver); nil: no re-announces on
	// uplink events (failover.go).
	UplinkEvents UplinkEvents
	Topology     Topology
	// OVSUplinks, if set with UplinkEvents, finds the uplinks of the OVS
	// bridges the running domains' ovs-strategy NICs are on, so they are
	// re-announced after those uplinks' events too.
	OVSUplinks OVSUplinks
}

// Agent acts on events. Run it with Run; it is safe for concurrent use.
type Agent struct {
	d          Deps
	log        *zap.Logger
	m          *Metrics
	strategies map[plan.Strategy]Strategy

	mu       sync.Mutex
	settings Settings
	landings map[string]*landing // by domain UUID
	wg       sync.WaitGroup
	fdbOff   bool // set once the kernel refused a repair for lack of privilege
	pre      prefetcher
	reg      *registry // running local domains' NICs, for uplink events
	outages  int       // libvirt disconnects and resyncs seen (resumeRefresh)
	// uplinkSeq numbers each uplink's events (runUplinks): a newer one
	// takes over from an older one still waiting for libvirt.
	uplinkSeq map[int]uint64
}

// landing is one domain's announce in progress.
type landing struct {
	ev      libvirtwatch.Event
	trigger announce.Trigger
	cancel  context.CancelCauseFunc // ErrSuperseded, ErrDomainLeft or nil (agent stops)
	mu      sync.Mutex
	targets []plan.Target // its plan, set by register
	ended   bool          // by end: the landing registers nothing more
}

// end stops the landing (the domain left, or a newer landing of it took
// its place) and returns the MACs it planned. From then on the landing
// registers nothing (register): a landing that was still reading the
// domain's XML would otherwise put the domain back into the failover
// registry and start its address learners after the cleanup of its
// departure, and a later uplink event would announce a MAC that no longer
// runs here.
func (l *landing) end(cause error) []rarp.MAC {
	l.mu.Lock()
	l.ended = true
	macs := make([]rarp.MAC, 0, len(l.targets))
	for _, t := range l.targets {
		macs = append(macs, t.NIC.MAC)
	}
	l.mu.Unlock()
	l.cancel(cause)
	return macs
}

// register runs fn (the landing's entries in the failover registry and
// the IP follower) under l.mu unless the landing ended. Whoever ends a
// landing cleans up after end returns, so what fn registers is either
// cleaned up or never registered.
func (l *landing) register(fn func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.ended {
		fn()
	}
}

// New returns an agent.
func New(d Deps, s Settings) *Agent {
	if d.Logger == nil {
		d.Logger = zap.NewNop()
	}
	if d.Metrics == nil {
		d.Metrics = NewMetrics(nil)
	}
	a := &Agent{d: d, log: d.Logger, m: d.Metrics, settings: s, landings: map[string]*landing{}, reg: newRegistry(), uplinkSeq: map[int]uint64{}}
	a.strategies = map[plan.Strategy]Strategy{plan.Host: hostStrategy{a}}
	for name, st := range d.Strategies {
		a.strategies[name] = st
	}
	return a
}

// Update replaces the settings; landings already in progress keep theirs.
func (a *Agent) Update(s Settings) {
	a.mu.Lock()
	was := a.settings.uplinksOn()
	a.settings = s
	a.mu.Unlock()
	if !was && s.uplinksOn() {
		a.reg.refreshSoon() // an uplink trigger came on: fill the registry
	}
}

func (a *Agent) current() Settings {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.settings
}

// Run handles events until ctx is done or events closes, then waits for the
// landings in progress to stop and stops the address learners.
func (a *Agent) Run(ctx context.Context, events <-chan libvirtwatch.Event) {
	defer func() {
		a.wg.Wait() // no landing or refresh starts a learner after this
		a.d.IP.stopLearners()
	}()
	a.wg.Add(4)
	go func() { defer a.wg.Done(); a.refreshLoop(ctx) }()
	go func() { defer a.wg.Done(); a.warmLoop(ctx) }()
	go func() { defer a.wg.Done(); a.ovsLoop(ctx) }()
	go func() { defer a.wg.Done(); a.runUplinks(ctx) }()
	for {
		select {
		case <-ctx.Done():
			a.cancelAll()
			return
		case ev, ok := <-events:
			if !ok {
				a.cancelAll()
				return
			}
			a.Handle(ctx, ev)
		}
	}
}

// Handle acts on one event: a landing starts (superseding one in progress
// for the same domain), a cancel stops the domain's landing and announces.
func (a *Agent) Handle(ctx context.Context, ev libvirtwatch.Event) {
	var left *landing
	if ev.Kind == libvirtwatch.Cancel {
		// First the domain's landing in progress ends, so that nothing
		// it registers afterwards undoes the cleanups below (the
		// registry's, the IP follower's).
		a.mu.Lock()
		left = a.landings[ev.Domain.UUID]
		delete(a.landings, ev.Domain.UUID)
		a.mu.Unlock()
	}
	var macs []rarp.MAC
	if left != nil {
		macs = left.end(ErrDomainLeft)
	}
	if gone := a.reg.observe(ev); gone != nil {
		// Re-announces after an uplink event are no landing's: stop them
		// here (a no-op when none runs).
		for _, t := range gone.targets {
			if st := a.strategies[t.Strategy]; t.Strategy != plan.Host && st != nil {
				st.CancelMAC(t.NIC.MAC)
				continue
			}
			a.d.Announcer.CancelMAC(t.NIC.MAC)
		}
	}
	switch ev.Kind {
	case libvirtwatch.Other:
		if ev.MigrationStarts() {
			a.prefetch(ctx, ev)
		}
	case libvirtwatch.DeviceChanged:
		if !ev.DeviceAdded {
			a.unplugged(ev)
		}
	case libvirtwatch.Landed:
		trigger, name := landingTrigger(ev)
		if !a.current().enabled(name) {
			a.log.Info("landed; trigger disabled, not announced", zap.String("domain", ev.Domain.Name), zap.String("event", ev.Name()), zap.String("trigger", name))
			// It runs here all the same: the failover registry reads it,
			// so that an uplink event re-announces it. Its premature
			// watch (opened at STARTED/MIGRATED) has nothing left to
			// see: no landing reaches converge to close it.
			a.landed(ev, nil, a.current())
			a.d.Reconv.endPremature(ev.Domain.UUID, time.Time{}, a.log)
			return
		}
		lctx, cancel := context.WithCancelCause(ctx)
		l := &landing{ev: ev, trigger: trigger, cancel: cancel}
		a.mu.Lock()
		old := a.landings[ev.Domain.UUID]
		a.landings[ev.Domain.UUID] = l
		a.wg.Add(1)
		a.mu.Unlock()
		if old != nil {
			old.end(ErrSuperseded)
		}
		go func() {
			defer a.wg.Done()
			a.land(lctx, l, a.current(), "")
		}()
	case libvirtwatch.Disconnected:
		// Whether a landed VM still runs here is unknown until the
		// resync: no refresh frame meanwhile (MAC flapping against the
		// host an HA controller rebuilt it on).
		a.mu.Lock()
		a.outages++
		if a.d.Announcer != nil {
			a.d.Announcer.PauseRefresh(true)
		}
		a.mu.Unlock()
		a.log.Warn("libvirt unreachable: refresh announces suspended until the resync")
	case libvirtwatch.Resynced:
		a.resumeRefresh(ctx)
	case libvirtwatch.Cancel:
		// SUSPENDED/MIGRATED on the source is a Cancel too (the VM is
		// leaving), and the start of a migration that may be cancelled.
		switch {
		case ev.MigrationStarts():
			a.prefetch(ctx, ev)
		case ev.PostCopyStarts():
			// The same migration goes on: its departure needs the XML
			// read at its start.
		default:
			a.depart(ctx, ev) // before the prefetched XML is dropped
			a.dropPrefetch(ev.Domain.UUID)
		}
		a.d.IP.Release(ev.Domain.UUID)
		a.d.Reconv.endPremature(ev.Domain.UUID, time.Time{}, a.log)
		if left == nil {
			return
		}
		n := 0
		for _, m := range macs {
			for _, st := range a.strategies {
				n += st.CancelMAC(m)
			}
		}
		a.log.Info("announces cancelled", zap.String("domain", ev.Domain.Name), zap.String("event", ev.Name()), zap.Int("announces", n))
	}
}

// unplugged stops every announce of the NIC a device event says was
// unplugged from a running domain (ev.Device is its alias): its MAC is no
// longer a running local domain's, and its port may be given to a VM on
// another host next, so neither the landing's remaining bursts and
// refreshes nor an uplink re-announce may send it again. The NIC is found
// in the domain's landing and in the failover registry (whose re-read of
// the XML, kicked by observe, has not replaced it yet); a MAC another NIC
// of the domain still has is left alone.
func (a *Agent) unplugged(ev libvirtwatch.Event) {
	var gone, kept []rarp.MAC
	split := func(ts []plan.Target) {
		for _, t := range ts {
			if t.NIC.Alias == ev.Device {
				gone = append(gone, t.NIC.MAC)
			} else {
				kept = append(kept, t.NIC.MAC)
			}
		}
	}
	a.mu.Lock()
	if l := a.landings[ev.Domain.UUID]; l != nil {
		l.mu.Lock()
		split(l.targets)
		l.mu.Unlock()
	}
	a.mu.Unlock()
	a.reg.mu.Lock()
	if k := a.reg.doms[ev.Domain.UUID]; k != nil {
		split(k.targets)
	}
	a.reg.mu.Unlock()
	for i, m := range gone {
		if slices.Contains(kept, m) || slices.Contains(gone[:i], m) {
			continue
		}
		n := 0
		for _, st := range a.strategies {
			n += st.CancelMAC(m)
		}
		a.d.IP.Unplugged(m)
		a.log.Info("NIC unplugged: its announces stopped", zap.String("domain", ev.Domain.Name), zap.String("alias", ev.Device), zap.Stringer("mac", m), zap.Int("announces", n))
	}
}

// resumeRefresh lets refresh frames go out again after a resync. The
// resync's cancels came first (the watcher's output is in order), so the
// landings' refreshes left belong to domains running here. The uplink
// re-announces of domains that never landed here are the registry's: its
// listing ends those of the domains gone meanwhile (refresh drops them),
// and only then do refreshes resume. A disconnect since (another outage)
// keeps them paused.
func (a *Agent) resumeRefresh(ctx context.Context) {
	a.mu.Lock()
	a.outages++
	outage := a.outages
	a.mu.Unlock()
	resume := func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.outages != outage || a.d.Announcer == nil {
			return
		}
		a.d.Announcer.PauseRefresh(false)
		a.log.Info("libvirt resynced: refresh announces resumed for the domains still running here")
	}
	lister, ok := a.d.Libvirt.(RunningLister)
	if !ok || a.d.UplinkEvents == nil || !a.current().uplinksOn() {
		resume()
		return
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		if _, err := a.refresh(ctx, lister); err != nil && ctx.Err() == nil {
			// Not listed: a domain gone meanwhile keeps its re-announces
			// until the next listing (an uplink event, a start).
			a.log.Warn("libvirt resynced, but the running domains could not be listed", zap.Error(err))
		}
		resume()
	}()
}

func (a *Agent) cancelAll() {
	a.mu.Lock()
	for k, l := range a.landings {
		l.end(nil)
		delete(a.landings, k)
	}
	a.mu.Unlock()
}

// forget drops a finished landing unless a newer one replaced it.
func (a *Agent) forget(l *landing) {
	a.mu.Lock()
	if a.landings[l.ev.Domain.UUID] == l {
		delete(a.landings, l.ev.Domain.UUID)
	}
	a.mu.Unlock()
}
