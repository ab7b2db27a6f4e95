package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/rarp-announce/rarp-announce/pkg/announce"
	"github.com/rarp-announce/rarp-announce/pkg/domxml"
	"github.com/rarp-announce/rarp-announce/pkg/fdb"
	"github.com/rarp-announce/rarp-announce/pkg/libvirtconn"
	"github.com/rarp-announce/rarp-announce/pkg/libvirtwatch"
	"github.com/rarp-announce/rarp-announce/pkg/plan"
	"github.com/rarp-announce/rarp-announce/pkg/portwatch"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
	"github.com/rarp-announce/rarp-announce/pkg/wait"
)

// Results of one NIC's announce, the "result" label of
// rarp_announce_nic_announces_total.
const (
	ResultStarted    = "started"     // frames are going out (host, ovs) or QEMU accepted (qemu)
	ResultFailed     = "failed"      // the strategy failed (see the log for why)
	ResultNotReady   = "not_ready"   // the port was not ready within readiness.timeout
	ResultSkipped    = "skipped"     // the plan says not to announce this NIC
	ResultNotHandled = "not_handled" // the strategy is not available on this host
	ResultCancelled  = "cancelled"   // the domain stopped or left first
	ResultInvalid    = "invalid"     // the NIC's live XML is unusable (bad MAC, bad VLAN tag); strategy skip
)

// invalidNICs counts the NICs domxml.Parse left out: its error joins one
// error per bad interface.
func invalidNICs(err error) int {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return len(j.Unwrap())
	}
	return 1
}

// NICResult is what happened to one NIC.
type NICResult struct {
	Target  plan.Target
	Result  string
	Err     error
	Handles []*announce.Handle // host and ovs strategies: one per VLAN
	// When the port was ready and the bridge repaired (host strategy;
	// zero: not reported), for the migration record.
	Ready, Repaired time.Time
}

// testHookXMLRead, set by tests (export_test.go), runs once a landing
// (xmlReadLanding) or a refresh of the failover registry
// (xmlReadRegistry) read a domain's XML, before it registers anything.
var testHookXMLRead func(where string, d libvirtwatch.DomainRef)

// testHookUplinkListed, set by tests (export_test.go), runs once an
// uplink event listed the running domains, before it announces any.
var testHookUplinkListed func()

// Where testHookXMLRead runs.
const (
	xmlReadLanding  = "landing"
	xmlReadRegistry = "registry"
)

// land announces every NIC of a landed domain. force overrides the
// strategy (manual announce). It returns once each NIC's announce has
// started or failed; port watching goes on in the background until the
// window closes.
func (a *Agent) land(ctx context.Context, l *landing, s Settings, force plan.Strategy) []NICResult {
	defer func() {
		if force == "" {
			// A landing stays registered while its ports are watched, so
			// a cancel can still reach it; forget it afterwards (no
			// goroutine waits for that: a landing storm would keep one per
			// domain).
			context.AfterFunc(ctx, func() { a.forget(l) })
		}
	}()
	ev := l.ev
	log := a.log.With(zap.String("domain", ev.Domain.Name), zap.String("uuid", ev.Domain.UUID))
	dom, prefetched := a.domain(ctx, ev, s.ReadyTimeout, log)
	if testHookXMLRead != nil {
		testHookXMLRead(xmlReadLanding, ev.Domain)
	}
	if dom == nil {
		if force == "" {
			a.landed(ev, nil, s) // the registry refreshes from libvirt instead
			// No converge will close the domain's premature watch.
			a.d.Reconv.endPremature(ev.Domain.UUID, time.Time{}, log)
		}
		return nil
	}
	opts := s.Plan
	if force != "" {
		opts.Force = force
	}
	targets := plan.Plan(dom, opts)
	// What the landing registers, unless the domain left (or a newer
	// landing took over) while its XML was read: the departure's
	// cleanup ran already and would not undo it. The landing goes on
	// with its context cancelled: its NICs count as cancelled.
	l.register(func() {
		l.targets = targets
		if force == "" {
			a.landed(ev, dom, s) // the failover registry takes the XML read here
		}
		a.d.IP.Landed(dom, targets, log)
	})
	log.Info("landed", zap.Time("received", ev.Received), zap.String("event", ev.Name()), zap.Bool("resync", ev.Resync),
		zap.Int("nics", len(targets)), zap.Bool("prefetched", prefetched), zap.Duration("plan_lag", time.Since(ev.Received)))

	conv := a.converge(ctx, l, targets, force, log)
	lnd := Landing{Domain: ev.Domain, Event: ev.Name(), Since: ev.Received, Trigger: l.trigger, Settings: s, Log: log,
		Running: func(ctx context.Context) (bool, error) { return a.d.Libvirt.DomainRunning(ctx, ev.Domain) }}
	results := make([]NICResult, len(targets))
	// Each strategy gets its NICs at once (QEMU announces them all in one
	// call), and the strategies run side by side.
	byStrategy := map[plan.Strategy][]int{}
	var order []plan.Strategy
	for i, t := range targets {
		results[i].Target = t
		if t.Strategy == plan.Skip {
			results[i].Result = ResultSkipped
			log.Info("NIC not announced", zap.Stringer("mac", t.NIC.MAC), zap.String("kind", string(t.Kind)), zap.String("reason", t.Skip))
			continue
		}
		if _, ok := byStrategy[t.Strategy]; !ok {
			order = append(order, t.Strategy)
		}
		byStrategy[t.Strategy] = append(byStrategy[t.Strategy], i)
	}
	inParallel(len(order), func(n int) {
		name, idx := order[n], byStrategy[order[n]]
		ts := make([]plan.Target, len(idx))
		for k, i := range idx {
			ts[k] = targets[i]
		}
		var rs []NICResult
		if st := a.strategies[name]; st != nil {
			rs = st.Announce(ctx, lnd, ts)
		} else {
			rs = notHandled(lnd, name, ts)
		}
		for k, i := range idx {
			results[i] = rs[k]
		}
	})
	for _, r := range results {
		a.m.nic(string(r.Target.Strategy), r.Result)
	}
	conv.finish(a, results)
	return results
}

// domain returns the landed domain's parsed live XML (prefetched when the
// migration started, or read now), or nil if there is nothing to announce
// (cancelled meanwhile, unreadable, unparsable: logged and counted here).
func (a *Agent) domain(ctx context.Context, ev libvirtwatch.Event, budget time.Duration, log *zap.Logger) (dom *domxml.Domain, prefetched bool) {
	var err error
	p := a.prefetched(ctx, ev)
	if p != nil {
		dom, err = p.dom, p.err
	} else {
		xml, xerr := a.readXML(ctx, ev, budget, log)
		if xerr != nil && ctx.Err() != nil {
			// The domain stopped or left while its XML was being read:
			// nothing to announce, and nothing failed.
			log.Info("landing cancelled before its live XML was read", zap.NamedError("cause", context.Cause(ctx)))
			return nil, false
		}
		if xerr != nil {
			a.m.landingError("xml")
			log.Error("cannot read the domain's live XML; not announced", zap.Error(xerr))
			return nil, false
		}
		dom, err = domxml.Parse(xml)
	}
	if dom == nil {
		a.m.landingError("parse")
		log.Error("cannot parse the domain's live XML; not announced", zap.Error(err))
		return nil, false
	}
	if err != nil {
		// One broken NIC must not keep the others from being announced.
		// The domain was announced, so this is no landing error: each
		// broken NIC is counted as a NIC not announced.
		for range invalidNICs(err) {
			a.m.nic(string(plan.Skip), ResultInvalid)
		}
		log.Error("some NICs of the live XML are invalid and not announced", zap.Error(err))
	}
	return dom, p != nil
}

// xmlRetryMin and xmlRetryMax bound the pause between two reads of a
// landed domain's live XML while libvirt is unreachable.
const (
	xmlRetryMin = 50 * time.Millisecond
	xmlRetryMax = time.Second
)

// readXML reads the landed domain's live XML, retrying while the failure is
// the connection's (an RPC timeout closes it, libvirtd restarts, the
// watcher is between connections) until budget has passed since the
// landing was seen. The watcher marked the domain landed when it relayed
// the event, so the resync after the reconnect will not land it again: a
// read given up here was a VM never announced. A cancel (the resync found
// the domain gone or replaced) ends the retries through ctx.
func (a *Agent) readXML(ctx context.Context, ev libvirtwatch.Event, budget time.Duration, log *zap.Logger) ([]byte, error) {
	deadline := ev.Received.Add(budget)
	if ev.Received.IsZero() {
		deadline = time.Now().Add(budget)
	}
	backoff := wait.Backoff{Min: xmlRetryMin, Max: xmlRetryMax}
	for attempt := 1; ; attempt++ {
		xml, err := a.d.Libvirt.DomainXML(ctx, ev.Domain)
		if err == nil || !transient(err) || ctx.Err() != nil {
			if err == nil && attempt > 1 {
				log.Info("read the live XML after libvirt came back", zap.Int("attempts", attempt))
			}
			return xml, err
		}
		left := time.Until(deadline)
		if left <= 0 {
			return nil, fmt.Errorf("%w (gave up after %d attempts within readiness.timeout %v)", err, attempt, budget)
		}
		if attempt == 1 {
			log.Warn("cannot read the domain's live XML yet; retrying while libvirt reconnects", zap.Error(err))
		}
		if !wait.Sleep(ctx.Done(), min(backoff.Next(), left)) {
			return nil, ctx.Err()
		}
	}
}

// transient reports a libvirt failure that a reconnect may cure.
func transient(err error) bool {
	var te interface{ Timeout() bool }
	return errors.Is(err, libvirtwatch.ErrNotConnected) || errors.Is(err, libvirtconn.ErrConnectionLost) ||
		errors.Is(err, libvirtconn.ErrTimeout) || (errors.As(err, &te) && te.Timeout())
}

// hostStrategy announces from the host: wait for the port, repair the
// bridge's MAC table, send on the bridge, then watch the port.
type hostStrategy struct{ a *Agent }

func (h hostStrategy) Announce(ctx context.Context, l Landing, targets []plan.Target) []NICResult {
	return PerTarget(targets, func(t plan.Target) NICResult { return h.a.hostTarget(ctx, l, t) })
}

func (h hostStrategy) CancelMAC(mac rarp.MAC) int { return h.a.d.Announcer.CancelMAC(mac) }

// hostTarget announces one NIC from the host: wait for the port, repair
// the bridge, send, then watch the port for the window.
func (a *Agent) hostTarget(ctx context.Context, l Landing, t plan.Target) NICResult {
	s := l.Settings
	log := l.Log.With(zap.Stringer("mac", t.NIC.MAC), zap.String("device", t.Device), zap.String("port", t.Port))
	if err := a.Ready(ctx, t, s.ReadyTimeout); err != nil {
		r := Failed(ctx, t, ResultNotReady, err)
		if r.Result == ResultNotReady {
			log.Warn("port not ready; not announced", zap.Error(err))
		}
		return r
	}
	ready := time.Now()
	if err := a.d.Reconv.moveCap().Wait(ctx, t); err != nil {
		return Failed(ctx, t, ResultCancelled, err)
	}
	hs, repaired, err := a.sendHost(ctx, t, s, l.Since, l.Trigger, log)
	if errors.Is(err, errNoUplink) && ctx.Err() == nil {
		// An isolated bridge has no switch to tell (logged and counted
		// by reason in hostSends).
		return NICResult{Target: t, Result: ResultSkipped, Err: err}
	}
	if err != nil {
		return Failed(ctx, t, ResultFailed, err)
	}
	if s.WatchWindow > 0 && t.Port != "" && a.d.Ports != nil {
		// Announce again if the port is re-wired soon after landing
		// (os-vif/Neutron re-plug, a bridge rebuilt): frames sent
		// before that went nowhere.
		// No goroutine waits for that (two minutes by default, one per
		// NIC): portChanged runs when a change comes.
		a.wg.Add(1)
		a.d.Ports.WatchFunc(ctx, t.Port, t.Master, s.WatchWindow,
			func(portwatch.Change) { a.portChanged(ctx, l, t, log) }, a.wg.Done)
	}
	return NICResult{Target: t, Result: ResultStarted, Handles: hs, Ready: ready, Repaired: repaired}
}

// Ready waits until t's port exists, is attached to its master (if any)
// and is up.
func (a *Agent) Ready(ctx context.Context, t plan.Target, timeout time.Duration) error {
	return PortReady(a.d.Ports)(ctx, t, timeout)
}

// PortReady is the readiness of the strategies that send from, or as if
// from, the VM's port (host, ovs): ports reports it; nil ports: always.
func PortReady(ports Ports) func(ctx context.Context, t plan.Target, timeout time.Duration) error {
	return func(ctx context.Context, t plan.Target, timeout time.Duration) error {
		if t.Port == "" || ports == nil {
			return nil
		}
		_, err := ports.WaitReady(ctx, t.Port, t.Master, timeout)
		return err
	}
}

func (a *Agent) portChanged(ctx context.Context, l Landing, t plan.Target, log *zap.Logger) {
	changed := time.Now()
	if err := a.Ready(ctx, t, l.Settings.ReadyTimeout); err != nil {
		log.Warn("port changed and is not ready again; not re-announced", zap.Error(err))
		return
	}
	// Never announce a MAC that is not a running local domain's.
	if running, err := a.d.Libvirt.DomainRunning(ctx, l.Domain); err != nil || !running {
		log.Info("port changed but the domain no longer runs here; not re-announced", zap.Error(err))
		return
	}
	if _, _, err := a.sendHost(ctx, t, l.Settings, changed, announce.TriggerPortChange, log); err == nil {
		a.m.reannounce()
		log.Info("port changed: announced again")
	}
}

// sendHost starts one announce per place the NIC's frames go (hostSends:
// the bridge's uplinks with their tags, or the device), unless the landing
// (ctx) ended first, and then repairs the local bridge's table (if
// planned). The first frames do not wait for the repair: under load a
// repair takes tens of milliseconds, and a frame out of the uplink does not
// depend on the local bridge's table. On an idle link the announcer sends
// a first frame before Announce returns (the repair follows it in this
// goroutine: no goroutine of its own, no wake-up); on a busy one the frame
// waits in the link's queue while the repair runs. sendHost returns once
// the repair is done, so the bridge forwards the VM's returning traffic to
// its tap by the time the landing counts as started; the repair's lag
// behind the first frame is observed
// (rarp_announce_fdb_repair_after_first_frame_seconds). repaired is when
// the repair ended, zero when none ran or it failed (the migration record
// then says nothing of one).
func (a *Agent) sendHost(ctx context.Context, t plan.Target, s Settings, since time.Time, trigger announce.Trigger, log *zap.Logger) (hs []*announce.Handle, repaired time.Time, err error) {
	if ctx.Err() != nil {
		// The domain left (or a newer landing took over) first: the
		// bridge's entry for its MAC on the uplink is right again, and
		// removing it would only make the bridge flood its traffic.
		return nil, time.Time{}, context.Cause(ctx)
	}
	hs, err = a.startHost(ctx, t, s, since, trigger, log)
	if !t.RepairFDB || ctx.Err() != nil {
		return hs, time.Time{}, err
	}
	// Also when the announce failed: the bridge is wrong either way.
	if a.repair(t, log) {
		repaired = time.Now()
		if len(hs) > 0 {
			select {
			case <-hs[0].First(): // most often: no goroutine to wait for it
				a.observeRepairLag(hs[0], repaired)
			default:
				go a.observeRepairLag(hs[0], repaired)
			}
		}
	}
	if err == nil && ctx.Err() != nil {
		// The domain stopped or left during the repair: CancelMAC
		// stopped these already; the NIC counts as cancelled.
		for _, h := range hs {
			h.Cancel()
		}
		return nil, time.Time{}, ctx.Err()
	}
	return hs, repaired, err
}

// observeRepairLag records how long after h's first frame the repair
// ended at repaired (zero when the repair ended first).
func (a *Agent) observeRepairLag(h *announce.Handle, repaired time.Time) {
	select {
	case <-h.First():
	case <-h.Done():
		// Done without First only when cancelled before it.
		select {
		case <-h.First():
		default:
			return
		}
	}
	if h.FirstErr() != nil {
		return
	}
	a.m.repairLag(repaired.Sub(h.FirstSent()))
}

func (a *Agent) startHost(ctx context.Context, t plan.Target, s Settings, since time.Time, trigger announce.Trigger, log *zap.Logger) ([]*announce.Handle, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	sends, err := a.hostSends(t, log)
	if err != nil {
		return nil, err
	}
	var hs []*announce.Handle
	for _, sd := range sends {
		h, err := a.d.Announcer.Announce(announce.Request{
			MAC: t.NIC.MAC, Port: sd.port, VLAN: sd.vlan, Schedule: s.Schedule, Since: since, Reason: trigger.String(),
		})
		if err != nil {
			log.Error("announce refused", zap.Error(err))
			return hs, err
		}
		hs = append(hs, h)
	}
	// A cancel (the domain stopped or left) that came while the port was
	// awaited found nothing of this NIC's to stop. Handle cancels the
	// landing's context before it cancels the MAC's running announces,
	// so an announce registered before this check is reached by that,
	// and one the check finds cancelled is stopped here; otherwise it
	// would run after the domain stopped (with a refresh schedule:
	// forever).
	if ctx.Err() != nil {
		for _, h := range hs {
			h.Cancel()
		}
		return nil, ctx.Err()
	}
	log.Debug("announce started", zap.Stringer("trigger", trigger), zap.Int("sends", len(sends)))
	return hs, nil
}

// repair removes the bridge's stale entries for t's MAC; it reports
// whether the bridge is known right now (a repair that ran, whether it
// found entries or not), for the migration record.
func (a *Agent) repair(t plan.Target, log *zap.Logger) bool {
	a.mu.Lock()
	off := a.fdbOff || a.d.FDB == nil
	a.mu.Unlock()
	if off {
		return false
	}
	removed, err := a.d.FDB.Repair(t.Master, t.NIC.MAC, t.Port)
	switch {
	case errors.Is(err, fdb.ErrPermission):
		a.mu.Lock()
		a.fdbOff = true
		a.mu.Unlock()
		log.Error("FDB repair disabled: it needs CAP_NET_ADMIN; the local bridge keeps stale entries until they age out", zap.Error(err))
	case err != nil:
		log.Warn("FDB repair failed", zap.Error(err))
	case len(removed) > 0:
		ports := make([]string, len(removed))
		for i, e := range removed {
			ports[i] = e.Port
		}
		log.Info("removed stale bridge entries", zap.String("bridge", t.Master), zap.Strings("ports", ports))
	}
	return err == nil
}

// AnnounceDomain announces a running domain's NICs now, through the same
// planner (rarp-announce announce --domain). It returns once every
// announce has started; host announces can be waited on via the handles.
func (a *Agent) AnnounceDomain(ctx context.Context, d libvirtwatch.DomainRef, force plan.Strategy) ([]NICResult, error) {
	running, err := a.d.Libvirt.DomainRunning(ctx, d)
	if err != nil {
		return nil, err
	}
	if !running {
		return nil, fmt.Errorf("domain %s is not running here: its MACs are not announced from this host", d.Name)
	}
	s := a.current()
	s.WatchWindow = 0
	// A manual announce is its own trigger, not a libvirt event: the
	// event here only names the domain and the time.
	l := &landing{ev: libvirtwatch.Event{Domain: d, Received: time.Now(), Event: -1, Detail: -1, Resync: true},
		trigger: announce.TriggerManual, cancel: func(error) {}}
	res := a.land(ctx, l, s, force)
	if res == nil {
		return nil, fmt.Errorf("domain %s: cannot read or parse its live XML (see log)", d.Name)
	}
	return res, nil
}
