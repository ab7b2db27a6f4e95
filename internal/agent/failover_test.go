package agent

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/rarp-announce/rarp-announce/pkg/announce"
	"github.com/rarp-announce/rarp-announce/pkg/libvirtwatch"
)

func TestLandingTrigger(t *testing.T) {
	for _, c := range []struct {
		event, detail int32
		resync        bool
		trigger       announce.Trigger
		name          string
	}{
		{libvirtwatch.EventResumed, libvirtwatch.DetailResumedMigrated, false, announce.TriggerLanding, TriggerMigration},
		{-1, -1, true, announce.TriggerLanding, TriggerMigration},
		{libvirtwatch.EventStarted, libvirtwatch.DetailStartedRestored, false, announce.TriggerRestore, TriggerRestore},
		{libvirtwatch.EventStarted, libvirtwatch.DetailStartedFromSnapshot, false, announce.TriggerRestore, TriggerSnapshot},
		{libvirtwatch.EventResumed, libvirtwatch.DetailResumedFromSnapshot, false, announce.TriggerRestore, TriggerSnapshot},
	} {
		ev := libvirtwatch.Event{Kind: libvirtwatch.Landed, Event: c.event, Detail: c.detail, Resync: c.resync}
		tr, name := landingTrigger(ev)
		if tr != c.trigger || name != c.name {
			t.Errorf("%s: %s/%s, want %s/%s", ev.Name(), tr, name, c.trigger, c.name)
		}
	}
}

func TestSettingsEnabled(t *testing.T) {
	var s Settings
	if !s.enabled(TriggerRestore) || !s.enabled("carrier_up") {
		t.Fatal("zero settings must enable every trigger")
	}
	s.Disabled = map[string]bool{"carrier_up": true}
	if s.enabled("carrier_up") || !s.enabled("bond_failover") {
		t.Fatal("only carrier_up is off")
	}
}

func TestAfterCarrier(t *testing.T) {
	one := announce.DefaultSchedule()
	got := afterCarrier(one)
	if got.Bursts != 2 || got.BurstInterval != carrierSettle {
		t.Errorf("one burst became %d bursts %v apart, want 2, %v", got.Bursts, got.BurstInterval, carrierSettle)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("invalid: %v", err)
	}
	three := one
	three.Bursts, three.BurstInterval = 3, 5*time.Second
	if got := afterCarrier(three); got != three {
		t.Errorf("an operator's bursts changed: %+v", got)
	}
}

// The registry keeps what running domains it was told, drops a domain on
// any event after which it does not run here, and marks it stale (to be
// read again) when it starts, resumes or lands.
func TestRegistryObserve(t *testing.T) {
	r := newRegistry()
	d := libvirtwatch.DomainRef{Name: "vm", UUID: "6167656e-7400-4000-8000-000000000001"}
	r.put(&known{ref: d, id: 3})
	r.observe(libvirtwatch.Event{Kind: libvirtwatch.Other, Domain: d, Event: libvirtwatch.EventResumed, Detail: libvirtwatch.DetailResumedUnpaused})
	if !r.doms[d.UUID].stale {
		t.Fatal("a resume must make the entry stale")
	}
	for _, ev := range []int32{libvirtwatch.EventSuspended, libvirtwatch.EventStopped, libvirtwatch.EventUndefined, libvirtwatch.EventCrashed} {
		r.put(&known{ref: d, id: 3})
		gone := r.observe(libvirtwatch.Event{Kind: libvirtwatch.Cancel, Domain: d, Event: ev})
		if gone == nil || r.doms[d.UUID] != nil {
			t.Fatalf("%s: the domain must be dropped and returned", libvirtwatch.EventName(ev))
		}
		if gone.stay.ctx.Err() == nil {
			t.Errorf("%s: the dropped domain's stay did not end (its re-announces would go on)", libvirtwatch.EventName(ev))
		}
	}
}

// A domain's stay lasts as long as its QEMU process is registered: a
// re-read of the same process keeps it, another process (a restart whose
// events were missed) ends it, and so does leaving the registry.
func TestRegistryStay(t *testing.T) {
	r := newRegistry()
	d := libvirtwatch.DomainRef{Name: "vm", UUID: "6167656e-7400-4000-8000-000000000001"}
	first := &known{ref: d, id: 3}
	r.put(first)
	reread := &known{ref: d, id: 3}
	r.put(reread)
	if reread.stay != first.stay || first.stay.ctx.Err() != nil {
		t.Fatal("a re-read of the same QEMU process must keep its stay")
	}
	ctx, release := reread.stay.within(context.Background())
	defer release()
	restarted := &known{ref: d, id: 4}
	r.put(restarted)
	if first.stay.ctx.Err() == nil {
		t.Fatal("another QEMU process must end the old one's stay")
	}
	if ctx.Err() == nil {
		t.Fatal("a context within the ended stay must end with it")
	}
	if !errors.Is(context.Cause(ctx), ErrDomainLeft) {
		t.Errorf("cause %v, want ErrDomainLeft", context.Cause(ctx))
	}
	if restarted.stay == first.stay || restarted.stay.ctx.Err() != nil {
		t.Fatal("the new process needs a stay of its own")
	}
	if r.drop(d.UUID) != restarted || restarted.stay.ctx.Err() == nil {
		t.Error("drop must return the entry and end its stay")
	}
	if r.drop(d.UUID) != nil {
		t.Error("a second drop finds nothing")
	}
}

// listerFunc is a RunningLister.
type listerFunc func(context.Context) ([]libvirtwatch.RunningDomain, error)

func (f listerFunc) RunningDomains(ctx context.Context) ([]libvirtwatch.RunningDomain, error) {
	return f(ctx)
}

// A refresh drops a registered domain its listing does not hold, but not
// one registered after the listing was taken: that is a landing whose XML
// was handed over (landed) while libvirt answered, and dropping it would
// leave the VM out of every uplink re-announce until another event.
func TestRefreshKeepsADomainRegisteredAfterTheListing(t *testing.T) {
	a := New(Deps{}, Settings{})
	gone := libvirtwatch.DomainRef{Name: "gone", UUID: "6167656e-7400-4000-8000-000000000001"}
	landed := libvirtwatch.DomainRef{Name: "landed", UUID: "6167656e-7400-4000-8000-000000000002"}
	a.reg.mu.Lock()
	a.reg.put(&known{ref: gone, id: 3})
	a.reg.mu.Unlock()
	time.Sleep(time.Millisecond) // the listing's time is after gone's registration
	list := listerFunc(func(context.Context) ([]libvirtwatch.RunningDomain, error) {
		// libvirt took its list before the domain landed; the landing
		// registers it before the answer arrives.
		a.reg.mu.Lock()
		a.reg.put(&known{ref: landed, id: 4})
		a.reg.mu.Unlock()
		return nil, nil
	})
	if _, err := a.refresh(context.Background(), list); err != nil {
		t.Fatal(err)
	}
	if a.Registered(gone.UUID) {
		t.Error("a domain registered before the listing and absent from it must be dropped")
	}
	if !a.Registered(landed.UUID) {
		t.Error("a domain registered after the listing was taken must be kept")
	}
}
