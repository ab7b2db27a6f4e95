package agent

import (
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
	r.doms[d.UUID] = &known{ref: d, id: 3}
	r.observe(libvirtwatch.Event{Kind: libvirtwatch.Other, Domain: d, Event: libvirtwatch.EventResumed, Detail: libvirtwatch.DetailResumedUnpaused})
	if !r.doms[d.UUID].stale {
		t.Fatal("a resume must make the entry stale")
	}
	for _, ev := range []int32{libvirtwatch.EventSuspended, libvirtwatch.EventStopped, libvirtwatch.EventUndefined, libvirtwatch.EventCrashed} {
		r.doms[d.UUID] = &known{ref: d, id: 3}
		if gone := r.observe(libvirtwatch.Event{Kind: libvirtwatch.Cancel, Domain: d, Event: ev}); gone == nil || r.doms[d.UUID] != nil {
			t.Errorf("%s: the domain must be dropped and returned", libvirtwatch.EventName(ev))
		}
	}
}
