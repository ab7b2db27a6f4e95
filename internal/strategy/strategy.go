// Package strategy holds the announce strategies that are not the agent's
// own: ovs (inject into Open vSwitch as if from the VM's port) and qemu
// (ask QEMU for announce-self through libvirt). Each is a small adapter
// behind agent.Strategy that owns its readiness, its result mapping and
// its cancel reasoning, so the agent imports neither pkg/ovs nor pkg/qmp.
package strategy

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/rarp-announce/rarp-announce/internal/agent"
	"github.com/rarp-announce/rarp-announce/pkg/announce"
	"github.com/rarp-announce/rarp-announce/pkg/ovs"
	"github.com/rarp-announce/rarp-announce/pkg/plan"
	"github.com/rarp-announce/rarp-announce/pkg/qmp"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// OVSAnnouncer injects an announce into Open vSwitch as if from the VM's
// port (OVSPorts); the handles are the announces it started.
type OVSAnnouncer interface {
	Announce(ctx context.Context, port string, mac rarp.MAC, vlans []rarp.VLAN, s announce.Schedule, since time.Time) ([]*announce.Handle, error)
	CancelMAC(mac rarp.MAC) int
}

// Ready is the readiness of a port-backed strategy (agent.Agent.Ready).
type Ready func(ctx context.Context, t plan.Target, timeout time.Duration) error

// OVNReadiness tells whether OVN has bound an OVS port here and installed
// its flows (ovs.OVNReadiness, from the local OVSDB's
// external_ids:ovn-installed).
type OVNReadiness interface {
	Wait(ctx context.Context, iface string, timeout time.Duration) (ovs.OVNPort, error)
	Watch(ctx context.Context, iface string, window time.Duration) <-chan ovs.OVNPort
}

// OVS is the ovs strategy.
type OVS struct {
	Announcer OVSAnnouncer
	// Ready, if set, waits for the VM's port to exist and be up first.
	Ready Ready
	// OVN, if set, also waits for ovn-controller to have installed an
	// OVN-managed port (external_ids:iface-id) here: with Neutron's
	// activation-strategy=rarp the destination blocks the port until a
	// RARP enters from it, and only a RARP sent once the port's flows
	// are installed meets the activation flow. Ports without an iface-id
	// are not OVN's and pass at once.
	OVN OVNReadiness
}

// Announce implements agent.Strategy.
func (o OVS) Announce(ctx context.Context, l agent.Landing, targets []plan.Target) []agent.NICResult {
	return agent.PerTarget(targets, func(t plan.Target) agent.NICResult { return o.one(ctx, l, t) })
}

// CancelMAC implements agent.Strategy.
func (o OVS) CancelMAC(mac rarp.MAC) int { return o.Announcer.CancelMAC(mac) }

// RewireEvery is how often an OVS port parked on VLAN 4095 is looked at
// again; OVSDB lookups cost about 0.2 ms.
const RewireEvery = 200 * time.Millisecond

func (o OVS) one(ctx context.Context, l agent.Landing, t plan.Target) agent.NICResult {
	s := l.Settings
	log := l.Log.With(zap.Stringer("mac", t.NIC.MAC), zap.String("port", t.Port))
	if o.Ready != nil {
		if err := o.Ready(ctx, t, s.ReadyTimeout); err != nil {
			r := agent.Failed(ctx, t, agent.ResultNotReady, err)
			if r.Result == agent.ResultNotReady {
				log.Warn("OVS port not ready; not announced", zap.Error(err))
			}
			return r
		}
	}
	var ovnPort ovs.OVNPort
	if o.OVN != nil {
		p, err := o.OVN.Wait(ctx, t.Port, s.ReadyTimeout)
		if err != nil {
			r := agent.Failed(ctx, t, agent.ResultNotReady, err)
			if r.Result == agent.ResultNotReady {
				log.Warn("OVS port not installed by OVN here; not announced", zap.String("logical_port", p.IfaceID), zap.Error(err))
			}
			return r
		}
		ovnPort = p
		log = log.With(zap.Bool("ovn_managed", p.Managed()))
		if p.Managed() {
			log = log.With(zap.String("logical_port", p.IfaceID))
		}
	}
	r := o.start(ctx, l, t, log)
	if r.Result == agent.ResultStarted && ovnPort.Managed() && s.WatchWindow > 0 {
		// ovn-controller re-installs a port when its binding moves or
		// os-vif re-plugs it: frames sent before went through flows that
		// are gone, so announce again, as the host strategy does when a
		// tap is re-plugged.
		go o.reinstalled(ctx, l, t, log)
	}
	return r
}

// reinstalled announces again each time OVN re-installs the port within
// the landing's watch window, if the domain still runs here.
func (o OVS) reinstalled(ctx context.Context, l agent.Landing, t plan.Target, log *zap.Logger) {
	for range o.OVN.Watch(ctx, t.Port, l.Settings.WatchWindow) {
		if l.Running != nil {
			if running, err := l.Running(ctx); err != nil || !running {
				log.Info("OVN re-installed the port but the domain no longer runs here; not re-announced", zap.Error(err))
				return
			}
		}
		_, err := o.Announcer.Announce(ctx, t.Port, t.NIC.MAC, t.VLANs, l.Settings.Schedule, time.Now())
		if o.ended(ctx, t) {
			return
		}
		if err != nil {
			log.Warn("OVN re-installed the port; announcing again failed", zap.Error(err))
			continue
		}
		log.Info("OVN re-installed the port: announced again")
	}
}

// ended reports whether the landing (ctx) ended while an announce of t
// started, and if so stops it. A cancel that came during the OVSDB lookup
// found nothing of this NIC's to stop, and one that came while Announce
// waited for the first frame left the announce running. A landing
// superseded by a newer one of the same domain leaves the MAC alone: the
// newer landing's announce of the same port and MAC replaces this one, and
// must not be cancelled.
func (o OVS) ended(ctx context.Context, t plan.Target) bool {
	if ctx.Err() == nil {
		return false
	}
	if !errors.Is(context.Cause(ctx), agent.ErrSuperseded) {
		o.Announcer.CancelMAC(t.NIC.MAC)
	}
	return true
}

// start injects the announce, retrying while the port is parked on VLAN
// 4095.
func (o OVS) start(ctx context.Context, l agent.Landing, t plan.Target, log *zap.Logger) agent.NICResult {
	s := l.Settings
	// Neutron's OVS agent parks a new port on VLAN 4095 until it wires
	// it: that is exactly the window in which QEMU's own RARPs are lost
	// (Nova bug 1815989). Keep trying until the port is wired.
	deadline := time.Now().Add(s.ReadyTimeout)
	attempts := 0
	for {
		hs, err := o.Announcer.Announce(ctx, t.Port, t.NIC.MAC, t.VLANs, s.Schedule, l.Since)
		if o.ended(ctx, t) {
			return agent.NICResult{Target: t, Result: agent.ResultCancelled, Err: ctx.Err()}
		}
		// An Open vSwitch restarting (ovsdb-server or ovs-vswitchd not
		// running yet, or not answering) comes back within seconds, as
		// a port gets wired: retry within the same readiness budget.
		unavailable := errors.Is(err, ovs.ErrNotRunning) || errors.Is(err, ovs.ErrTimeout)
		switch {
		case err == nil:
			log.Info("OVS announce started", zap.Duration("lag", time.Since(l.Since)), zap.Int("retries", attempts))
			return agent.NICResult{Target: t, Result: agent.ResultStarted, Handles: hs}
		case !errors.Is(err, ovs.ErrPortNotWired) && !unavailable:
			log.Error("OVS announce failed", zap.Error(err))
			return agent.NICResult{Target: t, Result: agent.ResultFailed, Err: err}
		case !time.Now().Before(deadline) && unavailable:
			log.Error("Open vSwitch unavailable for the whole readiness timeout; not announced", zap.Error(err))
			return agent.NICResult{Target: t, Result: agent.ResultFailed, Err: err}
		case !time.Now().Before(deadline):
			log.Warn("OVS port still not wired (VLAN 4095); not announced")
			return agent.NICResult{Target: t, Result: agent.ResultNotReady, Err: err}
		case unavailable && attempts == 0:
			log.Warn("Open vSwitch unavailable (restarting?); retrying within the readiness timeout", zap.Error(err))
		}
		attempts++
		select {
		case <-ctx.Done():
			return agent.NICResult{Target: t, Result: agent.ResultCancelled, Err: ctx.Err()}
		case <-time.After(RewireEvery):
		}
	}
}

// QEMUAnnouncer asks QEMU to announce a domain's NICs by alias (QMP
// announce-self through libvirt: qmp.Announcer).
type QEMUAnnouncer interface {
	AnnounceSelf(ctx context.Context, uuid string, aliases []string, s announce.Schedule) error
}

// QEMU is the qemu strategy: one QMP call for all the domain's NICs on it,
// its timing from our schedule. QEMU sends the frames; nothing to cancel.
type QEMU struct{ Announcer QEMUAnnouncer }

// CancelMAC implements agent.Strategy: QEMU's announce-self cannot be
// stopped from here (it ends after its rounds).
func (QEMU) CancelMAC(rarp.MAC) int { return 0 }

// Announce implements agent.Strategy.
func (q QEMU) Announce(ctx context.Context, l agent.Landing, targets []plan.Target) []agent.NICResult {
	all := func(res string, err error) []agent.NICResult {
		out := make([]agent.NICResult, len(targets))
		for i, t := range targets {
			out[i] = agent.NICResult{Target: t, Result: res, Err: err}
		}
		return out
	}
	aliases := make([]string, len(targets))
	for i, t := range targets {
		aliases[i] = t.Alias
	}
	log := l.Log.With(zap.Strings("aliases", aliases))
	err := q.Announcer.AnnounceSelf(ctx, l.Domain.UUID, aliases, l.Settings.Schedule)
	switch {
	case err == nil:
		log.Info("QEMU announce-self accepted", zap.Duration("lag", time.Since(l.Since)))
		return all(agent.ResultStarted, nil)
	case ctx.Err() != nil:
		log.Info("QEMU announce-self cancelled: the domain stopped or left", zap.Error(err))
		return all(agent.ResultCancelled, err)
	case qmp.IsTimeout(err):
		// Seen in the lab: on RESUMED/POSTCOPY the call waits for the
		// incoming migration job to end, which can outlast the RPC
		// timeout; libvirtd may still run the command then.
		log.Error("QEMU announce-self failed: libvirt did not answer in time (monitor commands wait while a migration job runs)",
			zap.String("event", l.Event), zap.Error(err))
	default:
		log.Error("QEMU announce-self failed", zap.Error(err))
	}
	return all(agent.ResultFailed, err)
}
