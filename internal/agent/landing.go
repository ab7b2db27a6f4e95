package agent

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/rarp-announce/rarp-announce/pkg/announce"
	"github.com/rarp-announce/rarp-announce/pkg/domxml"
	"github.com/rarp-announce/rarp-announce/pkg/fdb"
	"github.com/rarp-announce/rarp-announce/pkg/libvirtwatch"
	"github.com/rarp-announce/rarp-announce/pkg/ovs"
	"github.com/rarp-announce/rarp-announce/pkg/plan"
	"github.com/rarp-announce/rarp-announce/pkg/qmp"
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
	Handles []*announce.Handle // host strategy: one per VLAN
}

// land announces every NIC of a landed domain. force overrides the
// strategy (manual announce). It returns once each NIC's announce has
// started or failed; port watching goes on in the background until the
// window closes.
func (a *Agent) land(ctx context.Context, l *landing, s Settings, force plan.Strategy) []NICResult {
	defer func() {
		if force == "" {
			// A landing stays registered while its ports are watched, so
			// a cancel can still reach it; forget it afterwards.
			go func() { <-ctx.Done(); a.forget(l) }()
		}
	}()
	ev := l.ev
	log := a.log.With(zap.String("domain", ev.Domain.Name), zap.String("uuid", ev.Domain.UUID))
	var dom *domxml.Domain
	var err error
	p := a.prefetched(ctx, ev)
	if p != nil {
		dom, err = p.dom, p.err
	} else {
		xml, xerr := a.d.Libvirt.DomainXML(ctx, ev.Domain)
		if xerr != nil && ctx.Err() != nil {
			// The domain stopped or left while its XML was being read:
			// nothing to announce, and nothing failed.
			log.Info("landing cancelled before its live XML was read", zap.NamedError("cause", context.Cause(ctx)))
			return nil
		}
		if xerr != nil {
			a.m.landingError("xml")
			log.Error("cannot read the domain's live XML; not announced", zap.Error(xerr))
			return nil
		}
		dom, err = domxml.Parse(xml)
	}
	if dom == nil {
		a.m.landingError("parse")
		log.Error("cannot parse the domain's live XML; not announced", zap.Error(err))
		return nil
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
	opts := s.Plan
	if force != "" {
		opts.Force = force
	}
	targets := plan.Plan(dom, opts)
	l.mu.Lock()
	for _, t := range targets {
		l.macs = append(l.macs, t.NIC.MAC)
	}
	l.mu.Unlock()
	log.Info("landed", zap.Time("received", ev.Received), zap.String("event", ev.Name()), zap.Bool("resync", ev.Resync),
		zap.Int("nics", len(targets)), zap.Bool("prefetched", p != nil), zap.Duration("plan_lag", time.Since(ev.Received)))

	results := make([]NICResult, len(targets))
	var wg sync.WaitGroup
	var qemuIdx []int
	for i, t := range targets {
		results[i].Target = t
		switch t.Strategy {
		case plan.Skip:
			results[i].Result = ResultSkipped
			log.Info("NIC not announced", zap.Stringer("mac", t.NIC.MAC), zap.String("kind", string(t.Kind)), zap.String("reason", t.Skip))
		case plan.QEMU:
			qemuIdx = append(qemuIdx, i)
		case plan.Host:
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i] = a.hostTarget(ctx, ev, t, s, log)
			}()
		case plan.OVS:
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i] = a.ovsTarget(ctx, ev, t, s, log)
			}()
		}
	}
	if len(qemuIdx) > 0 {
		a.qemuTargets(ctx, ev, targets, qemuIdx, results, s, log)
	}
	wg.Wait()
	for _, r := range results {
		a.m.nic(string(r.Target.Strategy), r.Result)
	}
	return results
}

// hostTarget announces one NIC from the host: wait for the port, repair
// the bridge, send, then watch the port for the window.
func (a *Agent) hostTarget(ctx context.Context, ev libvirtwatch.Event, t plan.Target, s Settings, log *zap.Logger) NICResult {
	r := NICResult{Target: t}
	log = log.With(zap.Stringer("mac", t.NIC.MAC), zap.String("device", t.Device), zap.String("port", t.Port))
	if err := a.ready(ctx, t, s); err != nil {
		r.Err = err
		if ctx.Err() != nil {
			r.Result = ResultCancelled
			return r
		}
		r.Result = ResultNotReady
		log.Warn("port not ready; not announced", zap.Error(err))
		return r
	}
	r.Handles, r.Err = a.sendHost(ctx, t, s, ev.Received, "landed", log)
	if r.Err != nil {
		r.Result = ResultFailed
		if ctx.Err() != nil {
			r.Result = ResultCancelled
		}
		return r
	}
	r.Result = ResultStarted
	if s.WatchWindow > 0 && t.Port != "" && a.d.Ports != nil {
		// Announce again if the port is re-wired soon after landing
		// (os-vif/Neutron re-plug, a bridge rebuilt): frames sent
		// before that went nowhere.
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			for range a.d.Ports.Watch(ctx, t.Port, t.Master, s.WatchWindow) {
				a.portChanged(ctx, ev, t, s, log)
			}
		}()
	}
	return r
}

func (a *Agent) ready(ctx context.Context, t plan.Target, s Settings) error {
	if t.Port == "" || a.d.Ports == nil {
		return nil
	}
	_, err := a.d.Ports.WaitReady(ctx, t.Port, t.Master, s.ReadyTimeout)
	return err
}

func (a *Agent) portChanged(ctx context.Context, ev libvirtwatch.Event, t plan.Target, s Settings, log *zap.Logger) {
	changed := time.Now()
	if err := a.ready(ctx, t, s); err != nil {
		log.Warn("port changed and is not ready again; not re-announced", zap.Error(err))
		return
	}
	// Never announce a MAC that is not a running local domain's.
	if running, err := a.d.Libvirt.DomainRunning(ctx, ev.Domain); err != nil || !running {
		log.Info("port changed but the domain no longer runs here; not re-announced", zap.Error(err))
		return
	}
	if _, err := a.sendHost(ctx, t, s, changed, "port-changed", log); err == nil {
		a.m.reannounce()
		log.Info("port changed: announced again")
	}
}

// sendHost repairs the FDB (if planned) and starts one announce per VLAN,
// unless the landing (ctx) ended first.
func (a *Agent) sendHost(ctx context.Context, t plan.Target, s Settings, since time.Time, reason string, log *zap.Logger) ([]*announce.Handle, error) {
	if t.RepairFDB {
		a.repair(t, log)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var hs []*announce.Handle
	for _, v := range t.VLANs {
		h, err := a.d.Announcer.Announce(announce.Request{
			MAC: t.NIC.MAC, Interface: t.Device, VLAN: v, Schedule: s.Schedule, Since: since, Reason: reason,
		})
		if err != nil {
			log.Error("announce refused", zap.Error(err))
			return hs, err
		}
		hs = append(hs, h)
	}
	// A cancel (the domain stopped or left) that came while the port was
	// awaited or the bridge repaired found nothing of this NIC's to stop.
	// Handle cancels the landing's context before it cancels the MAC's
	// running announces, so an announce registered before this check is
	// reached by that, and one the check finds cancelled is stopped here;
	// otherwise it would run after the domain stopped (with a refresh
	// schedule: forever).
	if ctx.Err() != nil {
		for _, h := range hs {
			h.Cancel()
		}
		return nil, ctx.Err()
	}
	log.Debug("announce started", zap.String("reason", reason), zap.Int("vlans", len(t.VLANs)))
	return hs, nil
}

func (a *Agent) repair(t plan.Target, log *zap.Logger) {
	a.mu.Lock()
	off := a.fdbOff || a.d.FDB == nil
	a.mu.Unlock()
	if off {
		return
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
}

func (a *Agent) ovsTarget(ctx context.Context, ev libvirtwatch.Event, t plan.Target, s Settings, log *zap.Logger) NICResult {
	r := NICResult{Target: t}
	if a.d.OVS == nil {
		r.Result, r.Err = ResultNotHandled, errors.New("the ovs strategy is not available")
		log.Warn("NIC not announced", zap.Stringer("mac", t.NIC.MAC), zap.Error(r.Err))
		return r
	}
	if err := a.ready(ctx, t, s); err != nil {
		r.Result, r.Err = ResultNotReady, err
		if ctx.Err() != nil {
			r.Result = ResultCancelled
			return r
		}
		log.Warn("OVS port not ready; not announced", zap.Stringer("mac", t.NIC.MAC), zap.Error(err))
		return r
	}
	err := a.d.OVS.Announce(ctx, t.Port, t.NIC.MAC, t.VLANs, s.Schedule, ev.Received)
	if ctx.Err() != nil {
		// As in sendHost: a cancel that came during the OVSDB lookup
		// found nothing of this NIC's to stop, and one that came while
		// Announce waited for the first frame left the announce running
		// (Announce returns the context's error then, not stopping it).
		// A landing superseded by a newer one of the same domain leaves
		// the MAC alone: the newer landing's announce of the same port
		// and MAC replaces this one, and must not be cancelled.
		if !errors.Is(context.Cause(ctx), errSuperseded) {
			a.d.OVS.CancelMAC(t.NIC.MAC)
		}
		r.Result, r.Err = ResultCancelled, ctx.Err()
		return r
	}
	// Neutron's OVS agent parks a new port on VLAN 4095 until it wires
	// it: that is exactly the window in which QEMU's own RARPs are lost
	// (Nova bug 1815989). Keep trying until the port is wired.
	deadline := time.Now().Add(s.ReadyTimeout)
	for errors.Is(err, ovs.ErrPortNotWired) && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			r.Result, r.Err = ResultCancelled, ctx.Err()
			return r
		case <-time.After(ovsRewireEvery):
		}
		err = a.d.OVS.Announce(ctx, t.Port, t.NIC.MAC, t.VLANs, s.Schedule, ev.Received)
	}
	if errors.Is(err, ovs.ErrPortNotWired) {
		r.Result, r.Err = ResultNotReady, err
		log.Warn("OVS port still not wired (VLAN 4095); not announced", zap.Stringer("mac", t.NIC.MAC), zap.String("port", t.Port))
		return r
	}
	if err != nil {
		r.Result, r.Err = ResultFailed, err
		log.Error("OVS announce failed", zap.Stringer("mac", t.NIC.MAC), zap.String("port", t.Port), zap.Error(err))
		return r
	}
	r.Result = ResultStarted
	return r
}

// ovsRewireEvery is how often an OVS port parked on VLAN 4095 is looked at
// again; OVSDB lookups cost about 0.2 ms.
const ovsRewireEvery = 200 * time.Millisecond

// qemuTargets asks QEMU once for all the domain's NICs on the qemu
// strategy: one QMP call, its timing from our schedule.
func (a *Agent) qemuTargets(ctx context.Context, ev libvirtwatch.Event, targets []plan.Target, idx []int, results []NICResult, s Settings, log *zap.Logger) {
	set := func(res string, err error) {
		for _, i := range idx {
			results[i] = NICResult{Target: targets[i], Result: res, Err: err}
		}
	}
	if a.d.QEMU == nil {
		err := errors.New("the qemu strategy is not available")
		set(ResultNotHandled, err)
		log.Warn("NICs not announced", zap.Int("nics", len(idx)), zap.Error(err))
		return
	}
	aliases := make([]string, len(idx))
	for k, i := range idx {
		aliases[k] = targets[i].Alias
	}
	if err := a.d.QEMU.AnnounceSelf(ctx, ev.Domain.UUID, aliases, s.Schedule); err != nil {
		if ctx.Err() != nil {
			set(ResultCancelled, err)
			log.Info("QEMU announce-self cancelled: the domain stopped or left", zap.Strings("aliases", aliases), zap.Error(err))
			return
		}
		set(ResultFailed, err)
		if qmp.IsTimeout(err) {
			// Seen in the lab: on RESUMED/POSTCOPY the call waits for
			// the incoming migration job to end, which can outlast the
			// RPC timeout; libvirtd may still run the command then.
			log.Error("QEMU announce-self failed: libvirt did not answer in time (monitor commands wait while a migration job runs)",
				zap.Strings("aliases", aliases), zap.String("event", ev.Name()), zap.Error(err))
			return
		}
		log.Error("QEMU announce-self failed", zap.Strings("aliases", aliases), zap.Error(err))
		return
	}
	set(ResultStarted, nil)
	log.Info("QEMU announce-self accepted", zap.Strings("aliases", aliases), zap.Duration("lag", time.Since(ev.Received)))
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
	l := &landing{ev: libvirtwatch.Event{Kind: libvirtwatch.Landed, Domain: d, Received: time.Now(), Event: -1, Detail: -1, Resync: true}, cancel: func(error) {}}
	res := a.land(ctx, l, s, force)
	if res == nil {
		return nil, fmt.Errorf("domain %s: cannot read or parse its live XML (see log)", d.Name)
	}
	return res, nil
}
