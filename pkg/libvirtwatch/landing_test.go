package libvirtwatch

import (
	"reflect"
	"testing"

	"github.com/rarp-announce/rarp-announce/pkg/libvirtconn"
)

type step struct {
	dom           string // "a" or "b"
	event, detail int32
	want          EventKind
}

var (
	domA = DomainRef{Name: "a", UUID: "00000000-0000-4000-8000-00000000000a"}
	domB = DomainRef{Name: "b", UUID: "00000000-0000-4000-8000-00000000000b"}
)

func ref(name string) DomainRef {
	if name == "b" {
		return domB
	}
	return domA
}

// Shorthands: event/detail pairs.
var (
	startedBooted           = [2]int32{EventStarted, 0}
	startedMigrated         = [2]int32{EventStarted, DetailStartedMigrated}
	suspendedPaused         = [2]int32{EventSuspended, 0}
	suspendedMigrated       = [2]int32{EventSuspended, DetailSuspendedMigrated}
	suspendedPostcopy       = [2]int32{EventSuspended, DetailSuspendedPostcopy}
	suspendedPostcopyFailed = [2]int32{EventSuspended, DetailSuspendedPostcopyFailed}
	resumedUnpaused         = [2]int32{EventResumed, DetailResumedUnpaused}
	resumedMigrated         = [2]int32{EventResumed, DetailResumedMigrated}
	resumedPostcopy         = [2]int32{EventResumed, DetailResumedPostcopy}
	resumedPostcopyFailed   = [2]int32{EventResumed, DetailResumedPostcopyFailed}
	resumedFromSnapshot     = [2]int32{EventResumed, 2}
	stoppedMigrated         = [2]int32{EventStopped, DetailStoppedMigrated}
	stoppedFailed           = [2]int32{EventStopped, DetailStoppedFailed}
	stoppedDestroyed        = [2]int32{EventStopped, 1}
	crashedPanicked         = [2]int32{EventCrashed, 0}
	pmsuspendedMemory       = [2]int32{EventPMSuspended, 0}
	definedAdded            = [2]int32{EventDefined, 0}
	startedRestored         = [2]int32{EventStarted, DetailStartedRestored}
	startedFromSnapshot     = [2]int32{EventStarted, DetailStartedFromSnapshot}
	undefinedRemoved        = [2]int32{EventUndefined, 0}
	shutdownFinished        = [2]int32{EventShutdown, 0}
)

func s(dom string, ed [2]int32, want EventKind) step { return step{dom, ed[0], ed[1], want} }

func TestTrackerObserve(t *testing.T) {
	tests := []struct {
		name  string
		steps []step
	}{
		{"destination pre-copy lands at RESUMED/MIGRATED, never at STARTED/MIGRATED", []step{
			s("a", startedMigrated, Other), s("a", resumedMigrated, Landed)}},
		{"destination post-copy lands once (RESUMED/POSTCOPY, then RESUMED/MIGRATED)", []step{
			s("a", startedMigrated, Other), s("a", resumedPostcopy, Landed), s("a", resumedMigrated, Other)}},
		{"source of a successful migration only cancels", []step{
			s("a", suspendedMigrated, Cancel), s("a", stoppedMigrated, Cancel)}},
		{"source of a cancelled migration lands (SUSPENDED/MIGRATED then RESUMED/MIGRATED)", []step{
			s("a", suspendedMigrated, Cancel), s("a", resumedMigrated, Landed)}},
		{"a migration that landed here, then a cancelled migration away, lands again", []step{
			s("a", startedMigrated, Other), s("a", resumedMigrated, Landed),
			s("a", suspendedMigrated, Cancel), s("a", resumedMigrated, Landed)}},
		{"two cancelled migrations land twice", []step{
			s("a", suspendedMigrated, Cancel), s("a", resumedMigrated, Landed),
			s("a", suspendedMigrated, Cancel), s("a", resumedMigrated, Landed)}},
		{"failed incoming migration cancels", []step{
			s("a", startedMigrated, Other), s("a", stoppedFailed, Cancel)}},
		{"post-copy failure with the destination running: landed once", []step{
			s("a", startedMigrated, Other), s("a", resumedPostcopy, Landed), s("a", resumedPostcopyFailed, Other)}},
		{"post-copy failure seen first (RESUMED/POSTCOPY missed) lands", []step{
			s("a", resumedPostcopyFailed, Landed), s("a", resumedMigrated, Other)}},
		{"post-copy failure pausing the destination cancels; recovery lands again", []step{
			s("a", startedMigrated, Other), s("a", resumedPostcopy, Landed),
			s("a", suspendedPostcopyFailed, Cancel), s("a", resumedPostcopy, Landed), s("a", resumedMigrated, Other)}},
		{"post-copy source: paused, failed, all cancels", []step{
			s("a", suspendedPostcopy, Cancel), s("a", suspendedPostcopyFailed, Cancel)}},
		{"boot, pause, unpause: nothing lands", []step{
			s("a", startedBooted, Other), s("a", resumedUnpaused, Other), s("a", suspendedPaused, Cancel),
			s("a", resumedUnpaused, Other), s("a", shutdownFinished, Other),
			s("a", stoppedDestroyed, Cancel)}},
		{"paused migration (--suspend): lands at the first unpause, not at a later one", []step{
			s("a", startedMigrated, Other), s("a", suspendedPaused, Cancel), s("a", resumedUnpaused, Landed),
			s("a", suspendedPaused, Cancel), s("a", resumedUnpaused, Other)}},
		{"paused migration that never runs here: stopped, the next unpause of a booted run is no landing", []step{
			s("a", startedMigrated, Other), s("a", suspendedPaused, Cancel), s("a", stoppedDestroyed, Cancel),
			s("a", resumedUnpaused, Other), s("a", startedBooted, Other), s("a", resumedUnpaused, Other)}},
		{"pre-copy then a user's pause: the unpause does not land again", []step{
			s("a", startedMigrated, Other), s("a", resumedMigrated, Landed), s("a", suspendedPaused, Cancel),
			s("a", resumedUnpaused, Other)}},
		{"migrated here, away, and back: lands twice", []step{
			s("a", startedMigrated, Other), s("a", resumedMigrated, Landed),
			s("a", suspendedMigrated, Cancel), s("a", stoppedMigrated, Cancel),
			s("a", startedMigrated, Other), s("a", resumedMigrated, Landed)}},
		{"a repeated RESUMED/MIGRATED does not land twice", []step{
			s("a", resumedMigrated, Landed), s("a", resumedMigrated, Other), s("a", resumedPostcopy, Other)}},
		{"STARTED forgets a landing (new QEMU process)", []step{
			s("a", resumedMigrated, Landed), s("a", startedBooted, Other), s("a", resumedMigrated, Landed)}},
		{"user pause during post-copy: cancel, and the final RESUMED/MIGRATED lands again", []step{
			s("a", resumedPostcopy, Landed), s("a", suspendedPaused, Cancel), s("a", resumedUnpaused, Other),
			s("a", resumedMigrated, Landed)}},
		{"crash and PM suspend cancel", []step{
			s("a", resumedMigrated, Landed), s("a", crashedPanicked, Cancel), s("a", resumedMigrated, Landed),
			s("a", pmsuspendedMemory, Cancel)}},
		{"domains are independent", []step{
			s("a", resumedMigrated, Landed), s("b", resumedMigrated, Landed), s("a", resumedMigrated, Other),
			s("b", suspendedPaused, Cancel), s("a", resumedMigrated, Other), s("b", resumedMigrated, Landed)}},
		{"restore lands at STARTED/RESTORED, once", []step{
			s("a", startedRestored, Landed), s("a", resumedUnpaused, Other), s("a", resumedMigrated, Other)}},
		{"restore paused: lands, the pause cancels, the unpause lands again (it runs now), a later one does not", []step{
			s("a", startedRestored, Landed), s("a", suspendedPaused, Cancel), s("a", resumedUnpaused, Landed),
			s("a", suspendedPaused, Cancel), s("a", resumedUnpaused, Other)}},
		{"restore not paused: one landing", []step{
			s("a", startedRestored, Landed), s("a", resumedUnpaused, Other)}},
		{"snapshot revert to a new QEMU lands once (STARTED then RESUMED/FROM_SNAPSHOT)", []step{
			s("a", startedFromSnapshot, Landed), s("a", resumedFromSnapshot, Other)}},
		{"snapshot revert of a running domain lands at RESUMED/FROM_SNAPSHOT", []step{
			s("a", startedBooted, Other), s("a", resumedFromSnapshot, Landed), s("a", resumedFromSnapshot, Other)}},
		{"snapshot revert to a paused state, then run: the RESUMED/FROM_SNAPSHOT lands", []step{
			s("a", startedFromSnapshot, Landed), s("a", suspendedPaused, Cancel), s("a", resumedFromSnapshot, Landed)}},
		{"a restore after a landing lands again (new QEMU process)", []step{
			s("a", resumedMigrated, Landed), s("a", stoppedDestroyed, Cancel), s("a", startedRestored, Landed)}},
		{"define/undefine/unknown events are Other; UNDEFINED forgets", []step{
			s("a", definedAdded, Other), s("a", resumedMigrated, Landed), s("a", undefinedRemoved, Other),
			s("a", resumedMigrated, Landed), s("a", [2]int32{99, 0}, Other), s("a", [2]int32{EventResumed, 99}, Other)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := NewTracker()
			ids := map[string]int32{"a": 5, "b": 5}
			for i, st := range tt.steps {
				if st.event == EventStarted {
					ids[st.dom]++ // every STARTED is a new QEMU process, with a new id
				}
				got := tr.Observe(ref(st.dom), ids[st.dom], st.event, st.detail)
				if got != st.want {
					t.Fatalf("step %d %s %s/%s: got %s, want %s", i, st.dom, EventName(st.event), DetailName(st.event, st.detail), got, st.want)
				}
			}
		})
	}
}

func TestTrackerForgetsStoppedDomains(t *testing.T) {
	tr := NewTracker()
	for i := 0; i < 100; i++ {
		d := DomainRef{Name: "x", UUID: string(rune('A' + i))}
		tr.Observe(d, 1, EventResumed, DetailResumedMigrated)
		tr.Observe(d, 1, EventStopped, DetailStoppedMigrated)
	}
	if tr.Len() != 0 {
		t.Errorf("tracker remembers %d domains after they all stopped", tr.Len())
	}
}

func TestTrackerResync(t *testing.T) {
	running := func(d DomainRef, id, reason int32) DomainStatus {
		return DomainStatus{Domain: d, ID: id, State: libvirtconn.StateRunning, Reason: reason}
	}
	c := DomainRef{Name: "c", UUID: "00000000-0000-4000-8000-00000000000c"}
	d := DomainRef{Name: "d", UUID: "00000000-0000-4000-8000-00000000000d"}
	e := DomainRef{Name: "e", UUID: "00000000-0000-4000-8000-00000000000e"}
	tests := []struct {
		name     string
		landed   []DomainStatus // landed before (by event, with this id)
		active   []DomainStatus
		announce bool
		want     []Decision
		after    []string // UUIDs remembered afterwards
	}{
		{
			name: "start: running with reason migrated, postcopy, postcopy_failed land; others do not",
			active: []DomainStatus{
				running(domA, 5, libvirtconn.ReasonRunningMigrated), running(domB, 6, 1 /* booted */),
				{Domain: c, ID: 7, State: libvirtconn.StatePaused, Reason: 2 /* incoming migration */},
				running(d, 8, libvirtconn.ReasonRunningPostcopy), running(e, 9, libvirtconn.ReasonRunningPostcopyFailed),
			},
			announce: true,
			want:     []Decision{{Landed, domA, 5}, {Landed, d, 8}, {Landed, e, 9}},
			after:    []string{domA.UUID, d.UUID, e.UUID},
		},
		{
			name:     "AnnounceOnResync off: nothing lands, nothing is remembered",
			active:   []DomainStatus{running(domA, 5, libvirtconn.ReasonRunningMigrated)},
			announce: false,
		},
		{
			name:     "same QEMU process (same id) already landed: not again",
			landed:   []DomainStatus{running(domA, 5, 0)},
			active:   []DomainStatus{running(domA, 5, libvirtconn.ReasonRunningMigrated)},
			announce: true,
			after:    []string{domA.UUID},
		},
		{
			name:     "new QEMU process (other id) since the landing: cancel the old, land the new",
			landed:   []DomainStatus{running(domA, 5, 0)},
			active:   []DomainStatus{running(domA, 7, libvirtconn.ReasonRunningMigrated)},
			announce: true,
			want:     []Decision{{Cancel, domA, 5}, {Landed, domA, 7}},
			after:    []string{domA.UUID},
		},
		{
			name:     "landed domain gone or paused meanwhile: cancelled (also without announce)",
			landed:   []DomainStatus{running(domA, 5, 0), running(domB, 6, 0)},
			active:   []DomainStatus{{Domain: domB, ID: 6, State: libvirtconn.StatePaused, Reason: 1}},
			announce: false,
			want:     []Decision{{Cancel, domA, 5}, {Cancel, domB, 6}},
		},
		{
			name:     "landed domain still running (reason changed by a pause/resume we missed): kept, no event",
			landed:   []DomainStatus{running(domA, 5, 0)},
			active:   []DomainStatus{running(domA, 5, 5 /* unpaused */)},
			announce: true,
			after:    []string{domA.UUID},
		},
		{
			name:     "restarted by a boot while away: cancelled, not landed",
			landed:   []DomainStatus{running(domA, 5, 0)},
			active:   []DomainStatus{running(domA, 9, 1 /* booted */)},
			announce: true,
			want:     []Decision{{Cancel, domA, 5}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := NewTracker()
			for _, l := range tt.landed {
				if k := tr.Observe(l.Domain, l.ID, EventResumed, DetailResumedMigrated); k != Landed {
					t.Fatalf("setup: %v", k)
				}
			}
			got := tr.Resync(tt.active, tt.announce)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Resync = %+v\nwant %+v", got, tt.want)
			}
			if tr.Len() != len(tt.after) {
				t.Errorf("remembers %d domains, want %d", tr.Len(), len(tt.after))
			}
			for _, u := range tt.after {
				if !tr.HasLanded(u) {
					t.Errorf("%s not remembered as landed", u)
				}
			}
		})
	}
}

// A RESUMED/MIGRATED still queued from before the listing must not land a
// second time when the resync already announced the domain, and must land
// when it did not.
func TestTrackerResyncThenQueuedEvent(t *testing.T) {
	tr := NewTracker()
	tr.Resync([]DomainStatus{{Domain: domA, ID: 5, State: libvirtconn.StateRunning, Reason: libvirtconn.ReasonRunningMigrated}}, true)
	if k := tr.Observe(domA, 5, EventResumed, DetailResumedMigrated); k != Other {
		t.Errorf("queued RESUMED/MIGRATED after a resync landing: %s, want other", k)
	}
	tr = NewTracker()
	tr.Resync([]DomainStatus{{Domain: domA, ID: 5, State: libvirtconn.StateRunning, Reason: libvirtconn.ReasonRunningMigrated}}, false)
	if k := tr.Observe(domA, 5, EventResumed, DetailResumedMigrated); k != Landed {
		t.Errorf("queued RESUMED/MIGRATED without resync announce: %s, want landed", k)
	}
}

func TestNames(t *testing.T) {
	for _, c := range []struct {
		ev, det   int32
		evN, detN string
	}{
		{EventResumed, DetailResumedMigrated, "resumed", "migrated"},
		{EventResumed, DetailResumedPostcopyFailed, "resumed", "postcopy_failed"},
		{EventSuspended, DetailSuspendedPostcopyFailed, "suspended", "postcopy_failed"},
		{EventStarted, DetailStartedMigrated, "started", "migrated"},
		{EventStopped, DetailStoppedFailed, "stopped", "failed"},
		{EventCrashed, 1, "crashed", "crashloaded"},
		{EventResumed, 5, "resumed", "unknown"},
		{9, 0, "unknown", "unknown"},
		{-1, -1, "unknown", "unknown"},
	} {
		if got := EventName(c.ev); got != c.evN {
			t.Errorf("EventName(%d) = %q, want %q", c.ev, got, c.evN)
		}
		if got := DetailName(c.ev, c.det); got != c.detN {
			t.Errorf("DetailName(%d, %d) = %q, want %q", c.ev, c.det, got, c.detN)
		}
	}
	ev := Event{Kind: Landed, Domain: domA, DomainID: 3, Event: EventResumed, Detail: DetailResumedPostcopy}
	if got := ev.String(); got != "landed a (00000000-0000-4000-8000-00000000000a) id 3: resumed/postcopy" {
		t.Errorf("Event.String() = %q", got)
	}
	if got := (Event{Resync: true, Event: -1, Detail: -1}).Name(); got != "resync" {
		t.Errorf("resync Event.Name() = %q", got)
	}
}

// MigrationStarts (read the XML off the critical path) and PostCopyStarts
// (the migration goes on) are decided here, from libvirt's codes.
func TestMigrationEvents(t *testing.T) {
	for _, c := range []struct {
		ev               Event
		starts, postCopy bool
	}{
		{Event{Event: EventStarted, Detail: DetailStartedMigrated}, true, false},
		{Event{Event: EventSuspended, Detail: DetailSuspendedMigrated}, true, false},
		{Event{Event: EventStarted, Detail: 0}, false, false},
		{Event{Event: EventResumed, Detail: DetailResumedMigrated}, false, false},
		{Event{Event: -1, Detail: -1, Resync: true}, false, false},
		{Event{Event: EventSuspended, Detail: DetailSuspendedPostcopy}, false, true},
		{Event{Event: EventSuspended, Detail: DetailSuspendedPostcopyFailed}, false, false},
		{Event{Event: EventResumed, Detail: DetailResumedPostcopy}, false, false},
		{Event{Event: EventSuspended, Detail: DetailSuspendedPostcopy, Resync: true}, false, false},
	} {
		if got := c.ev.MigrationStarts(); got != c.starts {
			t.Errorf("%s: MigrationStarts() = %v, want %v", c.ev.Name(), got, c.starts)
		}
		if got := c.ev.PostCopyStarts(); got != c.postCopy {
			t.Errorf("%s: PostCopyStarts() = %v, want %v", c.ev.Name(), got, c.postCopy)
		}
	}
}

func TestEventCause(t *testing.T) {
	for _, c := range []struct {
		ev   Event
		want Cause
	}{
		{Event{Event: EventResumed, Detail: DetailResumedMigrated}, CauseMigration},
		{Event{Event: EventResumed, Detail: DetailResumedPostcopy}, CauseMigration},
		{Event{Event: EventStarted, Detail: DetailStartedRestored}, CauseRestore},
		{Event{Event: EventStarted, Detail: DetailStartedFromSnapshot}, CauseSnapshot},
		{Event{Event: EventResumed, Detail: DetailResumedFromSnapshot}, CauseSnapshot},
		{Event{Event: -1, Detail: -1, Resync: true}, CauseMigration},
		{Event{Event: EventResumed, Detail: DetailResumedUnpaused, Origin: DetailStartedMigrated}, CauseMigration},
		{Event{Event: EventResumed, Detail: DetailResumedUnpaused, Origin: DetailStartedRestored}, CauseRestore},
		{Event{Event: EventResumed, Detail: DetailResumedUnpaused, Origin: DetailStartedFromSnapshot}, CauseSnapshot},
	} {
		if got := c.ev.Cause(); got != c.want {
			t.Errorf("%s: cause %d, want %d", c.ev.Name(), got, c.want)
		}
	}
}

// A paused migration's VM resumed while the events were missed lands at the
// resync; one still paused lands at its later unpause; one whose QEMU
// process is gone or replaced is forgotten; without announce, the queued
// unpause lands.
func TestTrackerResyncIncoming(t *testing.T) {
	const unpaused = 5 // VIR_DOMAIN_RUNNING_UNPAUSED
	paused := func(id int32) DomainStatus {
		return DomainStatus{Domain: domA, ID: id, State: libvirtconn.StatePaused, Reason: 1}
	}
	running := func(id, reason int32) DomainStatus {
		return DomainStatus{Domain: domA, ID: id, State: libvirtconn.StateRunning, Reason: reason}
	}
	tests := []struct {
		name     string
		active   []DomainStatus
		announce bool
		want     []Decision
		unpause  EventKind // the RESUMED/UNPAUSED after the resync
	}{
		{"resumed while away: lands at the resync", []DomainStatus{running(5, unpaused)}, true, []Decision{{Landed, domA, 5}}, Other},
		{"still paused: lands at the unpause", []DomainStatus{paused(5)}, true, nil, Landed},
		{"without announce: the queued unpause lands", []DomainStatus{running(5, unpaused)}, false, nil, Landed},
		{"gone: forgotten", nil, true, nil, Other},
		{"another QEMU process: forgotten", []DomainStatus{paused(6)}, true, nil, Other},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := NewTracker()
			tr.Observe(domA, 5, EventStarted, DetailStartedMigrated)
			tr.Observe(domA, 5, EventSuspended, 0)
			if got := tr.Resync(tt.active, tt.announce); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Resync = %+v, want %+v", got, tt.want)
			}
			id := int32(5)
			if len(tt.active) > 0 {
				id = tt.active[0].ID
			}
			if k := tr.Observe(domA, id, EventResumed, DetailResumedUnpaused); k != tt.unpause {
				t.Fatalf("RESUMED/UNPAUSED after the resync: %s, want %s", k, tt.unpause)
			}
		})
	}
}

// Origin names what the QEMU process that landed at an unpause came by, so
// the landing counts under its trigger (a paused restore is a restore).
func TestTrackerOrigin(t *testing.T) {
	for _, start := range []int32{DetailStartedMigrated, DetailStartedRestored, DetailStartedFromSnapshot} {
		tr := NewTracker()
		tr.Observe(domA, 5, EventStarted, start)
		tr.Observe(domA, 5, EventSuspended, 0)
		if k := tr.Observe(domA, 5, EventResumed, DetailResumedUnpaused); k != Landed {
			t.Fatalf("start %s: unpause %s, want landed", DetailName(EventStarted, start), k)
		}
		if got := tr.Origin(domA.UUID); got != start {
			t.Errorf("start %s: Origin %d, want %d", DetailName(EventStarted, start), got, start)
		}
	}
	tr := NewTracker()
	tr.Observe(domA, 5, EventStarted, 0) // booted
	tr.Observe(domA, 5, EventResumed, DetailResumedFromSnapshot)
	if got := tr.Origin(domA.UUID); got != -1 {
		t.Errorf("a booted process reverted while running: Origin %d, want -1", got)
	}
}
