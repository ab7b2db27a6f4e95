package agent

import (
	"context"

	"go.uber.org/zap"

	"github.com/rarp-announce/rarp-announce/internal/record"
	"github.com/rarp-announce/rarp-announce/pkg/libvirtwatch"
	"github.com/rarp-announce/rarp-announce/pkg/plan"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
	"github.com/rarp-announce/rarp-announce/pkg/reconverge"
)

// depart watches the source's uplinks after a domain migrated away
// (STOPPED/MIGRATED): every unicast frame for one of its MACs that still
// arrives is a stale delivery, traffic the fabric sends to a host the VM
// left (the destination's announce did not reach the switches, or came
// late). The MACs and bridges come from the live XML prefetched at
// SUSPENDED/MIGRATED: at STOPPED the domain is gone. The source's own
// announces for the domain stopped at SUSPENDED (Handle's cancel), so
// only the fabric is measured. The departure record is written when the
// window closes.
func (a *Agent) depart(ctx context.Context, ev libvirtwatch.Event) {
	r := a.d.Reconv
	if r == nil || ev.Resync || ev.Event != libvirtwatch.EventStopped || ev.Detail != libvirtwatch.DetailStoppedMigrated {
		return
	}
	p := a.takePrefetch(ev)
	if p == nil {
		a.log.Debug("departure not watched: no live XML was prefetched when the migration started", zap.String("domain", ev.Domain.Name))
		return
	}
	// The event loop does not wait for a read still in flight (libvirtd
	// is busiest as a migration ends): a landing's event behind this one
	// would wait with it.
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		if p = p.wait(ctx); p == nil {
			a.log.Debug("departure not watched: the live XML prefetched when the migration started could not be read", zap.String("domain", ev.Domain.Name))
			return
		}
		a.watchDeparture(ctx, ev, p)
	}()
}

// watchDeparture watches the uplinks for stale deliveries to the departed
// domain's MACs (p: its live XML) and writes the departure record.
func (a *Agent) watchDeparture(ctx context.Context, ev libvirtwatch.Event, p *prefetch) {
	r := a.d.Reconv
	log := a.log.With(zap.String("domain", ev.Domain.Name), zap.String("uuid", ev.Domain.UUID))
	targets := plan.Plan(p.dom, a.current().Plan)
	var g *watchGroup
	if r.StaleWindow > 0 {
		if byDev := r.byUplink(targets); len(byDev) > 0 {
			g = r.watch(ctx, byDev, reconverge.To, ev.Received.Add(r.StaleWindow), false, log)
		}
	}
	// The stale window passes without a goroutine waiting for it: the
	// last watch's end writes the record.
	a.wg.Add(1)
	write := func(seen map[rarp.MAC]reconverge.Sighting) {
		defer a.wg.Done()
		rec := record.Record{Kind: record.Departure, Domain: ev.Domain.Name, UUID: ev.Domain.UUID, Host: r.Host,
			Event: ev.Name(), Trigger: "departure", Received: ev.Received.UTC()}
		total := 0
		for _, t := range targets {
			n := record.NIC{MAC: t.NIC.MAC.String(), Strategy: string(t.Strategy), Result: "departed"}
			if s, ok := seen[t.NIC.MAC]; ok {
				n.StaleDeliveries = s.Frames
				total += s.Frames
			}
			rec.NICs = append(rec.NICs, n)
		}
		if m := r.metrics(); m != nil && total > 0 {
			m.stale.Add(float64(total))
		}
		if total > 0 {
			// The fabric still points at this host: the destination
			// should announce again (its agent, or an operator with
			// 'rarp-announce announce --domain' there).
			log.Warn("stale deliveries after the domain left: the fabric did not follow it; re-announce requested from the destination",
				zap.Int("frames", total), zap.Duration("window", r.StaleWindow))
		} else if g != nil {
			log.Info("no stale deliveries after the domain left", zap.Duration("window", r.StaleWindow))
		}
		r.write(rec, log)
	}
	if g == nil {
		go write(nil)
		return
	}
	g.then(write)
}
