package agent

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/rarp-announce/rarp-announce/pkg/domxml"
	"github.com/rarp-announce/rarp-announce/pkg/libvirtwatch"
)

// The domain's live XML is read when a migration starts, not when it
// lands: on the destination STARTED/MIGRATED comes while the VM is still
// paused (its taps already exist), on the source SUSPENDED/MIGRATED comes
// before a possible cancel. Reading it at RESUMED costs a libvirt round
// trip on the critical path, just when libvirtd is busy finishing the
// migration job; measured in the lab that was the bulk of the event to
// first frame lag.

// prefetchTTL bounds how old a prefetched XML may be at landing; a
// migration that takes longer is read again.
const prefetchTTL = 10 * time.Minute

type prefetch struct {
	domainID int32 // the QEMU process the XML describes
	at       time.Time
	done     chan struct{}
	dom      *domxml.Domain // nil if reading or parsing failed
	err      error
}

type prefetcher struct {
	mu sync.Mutex
	m  map[string]*prefetch // by UUID
}

// prefetch reads and parses the domain's XML in the background.
func (a *Agent) prefetch(ctx context.Context, ev libvirtwatch.Event) {
	p := &prefetch{domainID: ev.DomainID, at: time.Now(), done: make(chan struct{})}
	a.pre.mu.Lock()
	if a.pre.m == nil {
		a.pre.m = map[string]*prefetch{}
	}
	a.pre.m[ev.Domain.UUID] = p
	a.pre.mu.Unlock()
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		defer close(p.done)
		xml, err := a.d.Libvirt.DomainXML(ctx, ev.Domain)
		if err != nil {
			p.err = err
			a.log.Debug("prefetch of the live XML failed; it will be read at landing", zap.String("domain", ev.Domain.Name), zap.Error(err))
			return
		}
		p.dom, p.err = domxml.Parse(xml)
		if ev.Kind == libvirtwatch.Other { // STARTED/MIGRATED: incoming
			a.startPremature(ctx, ev, p)
		}
	}()
}

// prefetched returns the XML prefetched for this landing, waiting for a
// read in flight; nil if there is none to use.
func (a *Agent) prefetched(ctx context.Context, ev libvirtwatch.Event) *prefetch {
	return a.takePrefetch(ev).wait(ctx)
}

// takePrefetch takes the domain's prefetch out of the map; nil if there is
// none to use for ev (too old, another QEMU process).
func (a *Agent) takePrefetch(ev libvirtwatch.Event) *prefetch {
	a.pre.mu.Lock()
	p := a.pre.m[ev.Domain.UUID]
	delete(a.pre.m, ev.Domain.UUID)
	a.pre.mu.Unlock()
	if p == nil || time.Since(p.at) > prefetchTTL || (ev.DomainID >= 0 && p.domainID >= 0 && p.domainID != ev.DomainID) {
		return nil
	}
	return p
}

// wait waits for the read in flight; nil if it failed (or p is nil).
func (p *prefetch) wait(ctx context.Context) *prefetch {
	if p == nil {
		return nil
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		return nil
	}
	if p.dom == nil {
		return nil
	}
	return p
}

// dropPrefetch forgets a domain's prefetched XML (it stopped).
func (a *Agent) dropPrefetch(uuid string) {
	a.pre.mu.Lock()
	delete(a.pre.m, uuid)
	a.pre.mu.Unlock()
}
