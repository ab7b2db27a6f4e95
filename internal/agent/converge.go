package agent

// Did the network follow? Around each migration the agent watches what the
// fabric delivers (issue 16):
//
//   - on the destination, from the landing on: the first unicast frame
//     addressed to each VM MAC that arrives on the bridge's uplink; the
//     time from RESUMED to it is the network's reconvergence
//     (rarp_announce_reconvergence_seconds), a NIC nobody talks to within
//     the window is silent, not failed;
//   - before the landing, from STARTED/MIGRATED on: a frame from the VM's
//     MAC leaving this host's uplink well before RESUMED moved the MAC
//     before the VM ran here (a premature move: the fabric sees the MAC
//     flap);
//   - each landing is a move of its MACs: the move ledger warns before a
//     fabric's duplicate-MAC detection freezes one;
//   - on the source (departure.go): frames still delivered after the
//     domain left.
//
// Each migration ends in one record (internal/record): a JSON log line and,
// if configured, a webhook post. The watches are passive (pkg/reconverge:
// an AF_PACKET socket behind a BPF filter on the VM's MACs): they send
// nothing and never delay an announce.

import (
	"context"
	"maps"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/rarp-announce/rarp-announce/internal/record"
	"github.com/rarp-announce/rarp-announce/pkg/announce"
	"github.com/rarp-announce/rarp-announce/pkg/libvirtwatch"
	"github.com/rarp-announce/rarp-announce/pkg/metricset"
	"github.com/rarp-announce/rarp-announce/pkg/moves"
	"github.com/rarp-announce/rarp-announce/pkg/plan"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
	"github.com/rarp-announce/rarp-announce/pkg/reconverge"
	"github.com/rarp-announce/rarp-announce/pkg/uplink"
)

// Reconv configures the watches around migrations; a nil *Reconv (the
// Deps field unset) watches nothing and writes no record.
type Reconv struct {
	// Window is how long after a landing the uplinks are watched for the
	// first unicast frame to each VM MAC; 0: no watch (the record is
	// still written).
	Window time.Duration
	// StaleWindow is how long after a departure (STOPPED/MIGRATED) the
	// source's uplinks are watched for frames still addressed to the
	// VM's MACs; 0: no watch.
	StaleWindow time.Duration
	// PrematureMargin: a frame from the VM's MAC out of this host's
	// uplink earlier than this before RESUMED is a premature move
	// (QEMU's own announce, sent while the VM is still paused, comes
	// within about a second before RESUMED); 0: no premature watch.
	PrematureMargin time.Duration
	// Uplinks names the devices where the fabric delivers a NIC's
	// traffic to this host (UplinksOf); nil: nothing is watched.
	Uplinks func(t plan.Target) []string
	// Open opens a watch on a device (reconverge.Open by name in the
	// agent's namespace when nil).
	Open func(ifname string, dir reconverge.Direction, macs []rarp.MAC) (*reconverge.Watch, error)
	// Ledger counts the landings per MAC; nil: no ledger.
	Ledger *moves.Ledger
	// MoveCap spreads an evacuation's first frames per bridge
	// (movecap.go); nil: no cap.
	MoveCap *MoveCap
	// Webhook, if set, receives every record.
	Webhook *record.Webhook
	// Host names this hypervisor in the records.
	Host    string
	Metrics *ReconvMetrics

	mu        sync.Mutex
	premature map[string]*prematureWatch // by domain UUID
}

// ReconvMetrics are the network-following metrics; nil counts nothing.
type ReconvMetrics struct {
	reconv                      *prometheus.HistogramVec
	silent, records             *prometheus.CounterVec
	stale, overLimit, premature prometheus.Counter
	metricset.Set
}

// NewReconvMetrics creates the metrics, registered with reg (nil: not
// registered).
func NewReconvMetrics(reg prometheus.Registerer) *ReconvMetrics {
	m := &ReconvMetrics{
		reconv: metricset.HistogramVec("reconvergence_seconds",
			"Time from a landing's RESUMED event to the first unicast frame for the VM's MAC arriving on this host's uplink, per NIC, by strategy.",
			[]float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}, "strategy"),
		silent: metricset.CounterVec("reconvergence_silent_total",
			"Landed NICs for which no unicast frame arrived on the uplink within reconvergence.window (a VM nobody talks to, or a fabric that did not follow), by strategy.", "strategy"),
		stale: metricset.Counter("stale_deliveries_total",
			"Unicast frames for a departed VM's MAC still arriving on this host's uplink within reconvergence.stale_window after the domain left: the fabric did not follow the VM."),
		overLimit: metricset.Counter("mac_moves_over_limit_total",
			"Landings of a MAC that reached move_ledger.limit moves within move_ledger.window: a fabric's duplicate-MAC detection (RFC 7432: 5 moves in 180 s) may freeze it."),
		premature: metricset.Counter("premature_moves_total",
			"NICs whose MAC left this host's uplink in a frame more than reconvergence.premature_margin before the domain resumed here."),
		records: metricset.CounterVec("migration_records_total",
			"Migration records written (landing, departure).", "kind"),
	}
	for _, s := range metricStrategies {
		m.reconv.WithLabelValues(s)
		m.silent.WithLabelValues(s)
	}
	for _, k := range []record.Kind{record.Landing, record.Departure} {
		m.records.WithLabelValues(string(k))
	}
	m.Set = metricset.Set{m.reconv, m.silent, m.stale, m.overLimit, m.premature, m.records}
	return metricset.Register(reg, m)
}

func (r *Reconv) metrics() *ReconvMetrics {
	if r == nil {
		return nil
	}
	return r.Metrics
}

func (r *Reconv) moveCap() *MoveCap {
	if r == nil {
		return nil
	}
	return r.MoveCap
}

func (r *Reconv) open(ifname string, dir reconverge.Direction, macs []rarp.MAC) (*reconverge.Watch, error) {
	if r.Open != nil {
		return r.Open(ifname, dir, macs)
	}
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, err
	}
	return reconverge.Open(ifi, dir, macs)
}

// UplinkPorts is what UplinksOf needs of the topology: a bridge's uplink
// ports, the ports that are not VM ports (uplink.Resolver, from memory).
type UplinkPorts interface {
	Uplinks(bridge string) ([]uplink.Port, error)
}

// UplinksOf returns the Uplinks function over topo: for a NIC on a Linux
// bridge, the bridge's uplink ports (the NIC's own port left out); for a
// macvtap, its lower device. The resolver answers from its table, so a
// landing costs no netlink dump.
func UplinksOf(topo UplinkPorts) func(t plan.Target) []string {
	return func(t plan.Target) []string {
		switch {
		case t.Kind == plan.KindDirect:
			if t.NIC.SourceDev != "" {
				return []string{t.NIC.SourceDev}
			}
			return nil
		case t.Master == "":
			return nil
		}
		ps, err := topo.Uplinks(t.Master)
		if err != nil {
			return nil
		}
		var out []string
		for _, p := range ps {
			if p.Name != t.Port {
				out = append(out, p.Name)
			}
		}
		return out
	}
}

// watchGroup is the watches of one question (one per device). No
// goroutine waits for it: the last watch to end runs what was asked to
// follow (then), and wait is for those that can block.
type watchGroup struct {
	mu      sync.Mutex
	seen    map[rarp.MAC]reconverge.Sighting // merged over devices: earliest first, frames summed
	pending int                              // watches running, and watch's own hold while it starts them
	done    chan struct{}                    // closed when pending reached 0
	next    []func(map[rarp.MAC]reconverge.Sighting)
}

// watch opens one Watch per device over the MACs each needs and runs them
// until deadline (or, with untilAllSeen, until each MAC was seen on that
// device). A device that cannot be watched is logged and skipped.
func (r *Reconv) watch(ctx context.Context, byDev map[string][]rarp.MAC, dir reconverge.Direction, deadline time.Time, untilAllSeen bool, log *zap.Logger) *watchGroup {
	g := &watchGroup{seen: map[rarp.MAC]reconverge.Sighting{}, pending: 1, done: make(chan struct{})}
	for dev, macs := range byDev {
		w, err := r.open(dev, dir, macs)
		if err != nil {
			log.Warn("cannot watch the network around the migration", zap.String("device", dev), zap.Stringer("direction", dir), zap.Error(err))
			continue
		}
		g.mu.Lock()
		g.pending++
		g.mu.Unlock()
		w.Start(ctx, deadline, untilAllSeen, func(ss []reconverge.Sighting, err error) {
			w.Close()
			if err != nil {
				log.Warn("watch ended early", zap.String("device", dev), zap.Error(err))
			}
			g.ended(ss)
		})
	}
	g.ended(nil) // watch's own hold
	return g
}

// ended merges a watch's sightings; after the last, the group is done and
// runs what follows it.
func (g *watchGroup) ended(ss []reconverge.Sighting) {
	g.merge(ss)
	g.mu.Lock()
	g.pending--
	if g.pending > 0 {
		g.mu.Unlock()
		return
	}
	close(g.done)
	next := g.next
	g.next = nil
	seen := g.seen
	g.mu.Unlock()
	for _, fn := range next {
		fn(seen)
	}
}

// then runs fn with the sightings once every watch ended: in a goroutine
// of its own if they did, else in the goroutine that ends the last (one
// of the watch's, which ends with fn).
func (g *watchGroup) then(fn func(map[rarp.MAC]reconverge.Sighting)) {
	g.mu.Lock()
	select {
	case <-g.done:
		seen := g.seen
		g.mu.Unlock()
		go fn(seen)
	default:
		g.next = append(g.next, fn)
		g.mu.Unlock()
	}
}

func (g *watchGroup) merge(ss []reconverge.Sighting) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, s := range ss {
		old, ok := g.seen[s.MAC]
		if !ok {
			g.seen[s.MAC] = s
			continue
		}
		if s.Seen() && (!old.Seen() || s.First.Before(old.First)) {
			old.First = s.First
		}
		old.Frames += s.Frames
		g.seen[s.MAC] = old
	}
}

// wait returns the sightings once every watch ended.
func (g *watchGroup) wait() map[rarp.MAC]reconverge.Sighting {
	<-g.done
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.seen
}

// byUplink groups the announced targets' MACs by the devices that carry
// their traffic to this host.
func (r *Reconv) byUplink(targets []plan.Target) map[string][]rarp.MAC {
	out := map[string][]rarp.MAC{}
	if r.Uplinks == nil {
		return out
	}
	for _, t := range targets {
		if t.Strategy == plan.Skip {
			continue
		}
		for _, dev := range r.Uplinks(t) {
			addWatched(out, dev, t.NIC.MAC)
		}
	}
	return out
}

// addWatched adds mac to dev's MACs, once, up to what one watch holds.
func addWatched(byDev map[string][]rarp.MAC, dev string, mac rarp.MAC) {
	if !slices.Contains(byDev[dev], mac) && len(byDev[dev]) < reconverge.MaxMACs {
		byDev[dev] = append(byDev[dev], mac)
	}
}

// convergence is one landing's watch, from planning to its record.
type convergence struct {
	ctx     context.Context // the landing's
	r       *Reconv
	ev      libvirtwatch.Event
	trigger announce.Trigger
	log     *zap.Logger
	watch   *watchGroup
	moves   int
}

// converge starts a landing's watch: it closes the domain's premature
// watch (counting frames sent from its MAC before it resumed), records
// the move of each MAC in the ledger, and opens the uplink watch before
// any announce leaves, so no frame of the fabric's answer is missed. nil
// when there is nothing to do (no Reconv, a manual announce).
func (a *Agent) converge(ctx context.Context, l *landing, targets []plan.Target, force plan.Strategy, log *zap.Logger) *convergence {
	r := a.d.Reconv
	if r == nil || force != "" {
		return nil
	}
	ev := l.ev
	r.endPremature(ev.Domain.UUID, ev.Received, log)
	if ev.Resync {
		// The agent (re)connected and found the domain landed: no
		// migration to measure (the event time is the resync's), no
		// new move for the ledger.
		return nil
	}
	c := &convergence{ctx: ctx, r: r, ev: ev, trigger: l.trigger, log: log}
	if r.Ledger != nil {
		seen := map[rarp.MAC]bool{}
		for _, t := range targets {
			if t.Strategy == plan.Skip || seen[t.NIC.MAC] {
				continue
			}
			seen[t.NIC.MAC] = true
			v := r.Ledger.Record(t.NIC.MAC, ev.Received)
			c.moves = max(c.moves, v.Moves)
			if v.OverLimit {
				if m := r.metrics(); m != nil {
					m.overLimit.Inc()
				}
				// Still announced: the VM is here now, and the fabric
				// must point at it; the operator must stop the bouncing.
				log.Warn("MAC moved too often: the fabric may freeze it (duplicate-MAC detection)",
					zap.Stringer("mac", t.NIC.MAC), zap.Int("moves", v.Moves), zap.Duration("window", r.Ledger.Window()))
			}
		}
	}
	if r.Window > 0 {
		if byDev := r.byUplink(targets); len(byDev) > 0 {
			// Bounded by the window, not by the landing: a domain that
			// leaves meanwhile ends it through ctx.
			c.watch = r.watch(ctx, byDev, reconverge.To, ev.Received.Add(r.Window), true, log)
		}
	}
	return c
}

// finish writes the landing's record once the watch ended, in the
// background: the landing returns at once.
func (c *convergence) finish(a *Agent, results []NICResult) {
	if c == nil {
		return
	}
	a.wg.Add(1)
	if c.watch == nil {
		go func() { defer a.wg.Done(); c.record(results, nil) }()
		return
	}
	// The watch's window (30 s by default) passes without a goroutine
	// waiting for it; the last watch's end writes the record.
	c.watch.then(func(seen map[rarp.MAC]reconverge.Sighting) { defer a.wg.Done(); c.record(results, seen) })
}

// record writes the landing's record: when each NIC's first frame left
// (host strategy: its handles) and how many it sent (the schedule's end
// is awaited, within a bound: a refresh schedule never ends), and what the
// watch saw.
func (c *convergence) record(results []NICResult, seen map[rarp.MAC]reconverge.Sighting) {
	first := make([]time.Time, len(results))
	bctx, cancel := context.WithDeadline(c.ctx, c.ev.Received.Add(max(c.r.Window, 3*time.Second)))
	defer cancel()
	for i, res := range results {
		for _, h := range res.Handles {
			select {
			case <-h.First():
			case <-bctx.Done():
			}
			// Both may be ready (a watch that ran its whole window ends
			// at bctx's deadline, and select picks at random): a first
			// frame that went counts either way.
			select {
			case <-h.First():
				if h.FirstErr() == nil && first[i].IsZero() {
					first[i] = h.FirstSent()
				}
			default:
			}
		}
	}
done:
	for _, res := range results {
		for _, h := range res.Handles {
			select {
			case <-h.Done():
			case <-bctx.Done():
				break done
			}
		}
	}
	rec := record.Record{
		Kind: record.Landing, Domain: c.ev.Domain.Name, UUID: c.ev.Domain.UUID, Host: c.r.Host,
		Event: c.ev.Name(), Trigger: c.trigger.String(), Received: c.ev.Received.UTC(), Moves: c.moves,
	}
	m := c.r.metrics()
	// A landing that ended (the domain left, a newer landing took over,
	// the agent stops) cut its watch short: a MAC not seen by then was
	// not measured, and is no sign that the fabric did not follow.
	cut := c.ctx.Err() != nil
	for i, res := range results {
		t := res.Target
		n := record.NIC{MAC: t.NIC.MAC.String(), Strategy: string(t.Strategy), Result: res.Result,
			PortReady: record.Since(c.ev.Received, res.Ready), FDBRepaired: record.Since(c.ev.Received, res.Repaired),
			FirstFrame: record.Since(c.ev.Received, first[i])}
		for _, h := range res.Handles {
			n.Frames += h.Sent()
		}
		if s, ok := seen[t.NIC.MAC]; ok && t.Strategy != plan.Skip {
			if s.Seen() {
				n.Reconverged = record.Since(c.ev.Received, s.First)
				if m != nil {
					m.reconv.WithLabelValues(string(t.Strategy)).Observe(max(0, s.First.Sub(c.ev.Received).Seconds()))
				}
			} else if !cut {
				n.Silent = true
				if m != nil {
					m.silent.WithLabelValues(string(t.Strategy)).Inc()
				}
			}
		}
		rec.NICs = append(rec.NICs, n)
	}
	c.r.write(rec, c.log)
}

// write logs a record as one JSON line and posts it to the webhook.
func (r *Reconv) write(rec record.Record, log *zap.Logger) {
	if m := r.metrics(); m != nil {
		m.records.WithLabelValues(string(rec.Kind)).Inc()
	}
	log.Info("migration record", zap.Any("record", rec))
	if r.Webhook != nil && !r.Webhook.Post(rec) {
		log.Warn("migration record not posted: the webhook's queue is full", zap.Uint64("dropped", r.Webhook.Dropped()))
	}
}

// prematureWatch watches a migrating domain's uplinks (or taps) on the
// destination from STARTED/MIGRATED to its landing.
type prematureWatch struct {
	cancel context.CancelFunc
	groups []*watchGroup
	name   string
}

// startPremature watches for frames from an incoming domain's MACs (its
// XML was prefetched at STARTED/MIGRATED, by p) where they would move the
// fabric before the VM runs here (prematureWhere).
func (a *Agent) startPremature(ctx context.Context, ev libvirtwatch.Event, p *prefetch) {
	r, dom := a.d.Reconv, p.dom
	if r == nil || r.PrematureMargin <= 0 || dom == nil {
		return
	}
	out, taps := r.prematureWhere(plan.Plan(dom, a.current().Plan))
	if len(out) == 0 && len(taps) == 0 {
		return
	}
	wctx, cancel := context.WithTimeout(ctx, prefetchTTL)
	log := a.log.With(zap.String("domain", ev.Domain.Name), zap.String("uuid", ev.Domain.UUID))
	w := &prematureWatch{cancel: cancel, name: ev.Domain.Name}
	until := time.Now().Add(prefetchTTL)
	if len(out) > 0 {
		w.groups = append(w.groups, r.watch(wctx, out, reconverge.Out, until, false, log))
	}
	if len(taps) > 0 {
		w.groups = append(w.groups, r.watch(wctx, taps, reconverge.From, until, false, log))
	}
	// The XML was read in the background: the domain may have landed or
	// left meanwhile, and its endPremature found nothing to close. The
	// landing and the cancel drop the prefetch (under pre.mu) before they
	// end the watch, so registering only while p is still the domain's
	// prefetch, under the same lock, leaves no watch behind them.
	a.pre.mu.Lock()
	current := a.pre.m[ev.Domain.UUID] == p
	var old *prematureWatch
	if current {
		r.mu.Lock()
		if r.premature == nil {
			r.premature = map[string]*prematureWatch{}
		}
		old = r.premature[ev.Domain.UUID]
		r.premature[ev.Domain.UUID] = w
		r.mu.Unlock()
	}
	a.pre.mu.Unlock()
	if !current {
		cancel()
		return
	}
	if old != nil {
		old.cancel()
	}
	log.Debug("watching for premature moves",
		zap.Strings("out_of", slices.Sorted(maps.Keys(out))), zap.Strings("taps", slices.Sorted(maps.Keys(taps))))
}

// prematureWhere says where a frame from each NIC's MAC would move the
// fabric. Out of its uplink (reconverge.Out, on the uplink's shared
// socket) when there is one: a bridge's only uplink port, or a macvtap's
// lower device; only this host sends from the MAC there. A bridge with
// two or more uplinks forwards between them, so frames of the VM still
// running on the source come in on one and leave on another: there, and
// where the uplinks are unknown, the tap is watched for what QEMU writes
// into it (reconverge.From, a socket of its own). A bridge without
// uplinks moves nothing.
func (r *Reconv) prematureWhere(targets []plan.Target) (out, taps map[string][]rarp.MAC) {
	out, taps = map[string][]rarp.MAC{}, map[string][]rarp.MAC{}
	for _, t := range targets {
		if t.Strategy == plan.Skip {
			continue
		}
		var ups []string
		if r.Uplinks != nil {
			ups = r.Uplinks(t)
		}
		bridged := t.Master != "" && t.Port != ""
		switch {
		case len(ups) == 1:
			addWatched(out, ups[0], t.NIC.MAC)
		case bridged && (len(ups) > 1 || r.Uplinks == nil):
			addWatched(taps, t.Port, t.NIC.MAC)
		}
	}
	return out, taps
}

// endPremature closes a domain's premature watch; with a landing (resumed
// not zero) it counts and logs the MACs that spoke more than the margin
// before it.
func (r *Reconv) endPremature(uuid string, resumed time.Time, log *zap.Logger) {
	if r == nil {
		return
	}
	r.mu.Lock()
	p := r.premature[uuid]
	delete(r.premature, uuid)
	r.mu.Unlock()
	if p == nil {
		return
	}
	p.cancel()
	if resumed.IsZero() {
		return
	}
	// Counted in the background: the landing's announces go first.
	go r.countPremature(p, resumed, log)
}

func (r *Reconv) countPremature(p *prematureWatch, resumed time.Time, log *zap.Logger) {
	seen := map[rarp.MAC]reconverge.Sighting{}
	for _, g := range p.groups {
		for mac, s := range g.wait() {
			seen[mac] = s // a MAC is watched in one group only
		}
	}
	for mac, s := range seen {
		if !s.Seen() || !s.First.Before(resumed.Add(-r.PrematureMargin)) {
			continue
		}
		if m := r.metrics(); m != nil {
			m.premature.Inc()
		}
		log.Warn("premature move: the VM's MAC left this host before the domain resumed here; the fabric saw the MAC move early",
			zap.Stringer("mac", mac), zap.Duration("before_resumed", resumed.Sub(s.First)), zap.Int("frames", s.Frames))
	}
}
