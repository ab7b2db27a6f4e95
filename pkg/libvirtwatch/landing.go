package libvirtwatch

import (
	"sort"

	"github.com/rarp-announce/rarp-announce/pkg/libvirtconn"
)

// Tracker is the "landed once per migration" state machine. It is pure:
// events in, decisions out, no I/O and no clock; not safe for concurrent use
// (the Watcher drives it from one goroutine).
//
// Per domain UUID it remembers only whether a Landed was already emitted for
// the domain's current migration (and the libvirt domain id it had then):
//
//	RESUMED/MIGRATED, RESUMED/POSTCOPY  -> Landed, unless already landed
//	RESUMED/POSTCOPY_FAILED             -> Landed, unless already landed
//	RESUMED/FROM_SNAPSHOT               -> Landed, unless already landed
//	RESUMED/UNPAUSED                    -> Landed if the QEMU process came by
//	                                       migration, restore or revert and
//	                                       has not run here yet
//	                                       (see "Paused migrations"), else Other
//	STARTED/RESTORED, STARTED/FROM_SNAPSHOT -> Landed (a new QEMU process
//	                                       whose state was loaded: the MACs
//	                                       were last seen elsewhere or long ago)
//	STARTED/any other                   -> Other; forget (a new QEMU process:
//	                                       STARTED/MIGRATED begins an incoming
//	                                       migration and is never a trigger),
//	                                       unless it is the process that landed
//	                                       (a stale event queued behind a resync)
//	SUSPENDED/any, STOPPED/any,
//	CRASHED/any, PMSUSPENDED/any        -> Cancel; forget
//	UNDEFINED/any                       -> Other; forget
//	anything else                       -> Other
//
// Hence: post-copy on the destination (STARTED/MIGRATED, RESUMED/POSTCOPY,
// RESUMED/MIGRATED) lands once; a cancelled migration on the source
// (SUSPENDED/MIGRATED then RESUMED/MIGRATED) lands, because the SUSPENDED
// forgot the earlier landing; a second migration lands again because
// STARTED/MIGRATED (destination) or SUSPENDED/MIGRATED (source) forgot the
// first.
//
// Post-copy failure (libvirt >= 8.5). RESUMED/POSTCOPY_FAILED is sent on the
// destination when post-copy breaks while its vCPUs run: the guest runs
// *here* (the source is paused and can never resume, it lacks the newest
// memory), so it counts as a landing, deduplicated with the RESUMED/POSTCOPY
// that preceded it (normally no second announce). SUSPENDED/POSTCOPY_FAILED
// (source, or a destination whose vCPUs were paused) is a SUSPENDED like any
// other: Cancel. When post-copy recovery later resumes the destination, its
// RESUMED/POSTCOPY or RESUMED/MIGRATED lands again, which re-announces after
// the pause.
//
// Paused migrations. A migration that leaves the VM paused (virsh migrate
// --suspend, VIR_MIGRATE_PAUSED; or a VM that was paused on the source)
// ends on the destination with SUSPENDED/PAUSED instead of
// RESUMED/MIGRATED: the VM runs here only when someone resumes it, and
// that RESUMED/UNPAUSED is its landing. So the Tracker also remembers each
// domain whose current QEMU process started with STARTED/MIGRATED (or
// STARTED/RESTORED, STARTED/FROM_SNAPSHOT: a restore or revert left
// paused, whose start landed while it could not run) and has not run
// here yet (incoming); its first RESUMED/UNPAUSED after a pause lands.
// An agent restarted while such a VM is still paused has forgotten it:
// the domain is listed paused, which says nothing of where it came from. Any landing,
// STOPPED, CRASHED, PMSUSPENDED, UNDEFINED or another STARTED forgets it;
// a SUSPENDED does not (the pause at the end of such a migration is one).
// An unpause of a VM that ran here before (a user's pause) is no landing.
type Tracker struct {
	landed   map[string]landing // by UUID
	incoming map[string]landing // by UUID: came by migration, not run here yet
}

type landing struct {
	name string
	id   int32 // libvirt domain id when it landed: a new QEMU process gets a new id
	// start is the STARTED detail of an incoming QEMU process (migrated,
	// restored, from_snapshot), kept into its landing: Origin.
	start int32
}

// NewTracker returns a Tracker that knows of no landing.
func NewTracker() *Tracker {
	return &Tracker{landed: make(map[string]landing), incoming: make(map[string]landing)}
}

// Observe classifies one lifecycle event of domain d (whose libvirt domain id
// is id) and updates the state.
func (t *Tracker) Observe(d DomainRef, id, event, detail int32) EventKind {
	switch event {
	case EventResumed:
		switch detail {
		case DetailResumedUnpaused:
			if in, ok := t.incoming[d.UUID]; !ok || !sameProcess(in.id, id) {
				return Other
			}
		case DetailResumedMigrated, DetailResumedPostcopy, DetailResumedPostcopyFailed, DetailResumedFromSnapshot:
		default:
			return Other
		}
		start := t.incoming[d.UUID].start
		delete(t.incoming, d.UUID)
		if _, ok := t.landed[d.UUID]; ok {
			return Other
		}
		t.landed[d.UUID] = landing{name: d.Name, id: id, start: start}
		return Landed
	case EventStarted:
		// A STARTED of the very QEMU process that already landed is
		// older than the landing: a resync listed the domain running
		// (and landed it) while the event still waited in the queue.
		// Forgetting would land the same migration twice when the
		// queued RESUMED follows.
		if l, ok := t.landed[d.UUID]; ok && l.id == id && id >= 0 {
			return Other
		}
		delete(t.landed, d.UUID)
		delete(t.incoming, d.UUID)
		if detail == DetailStartedMigrated || detail == DetailStartedRestored || detail == DetailStartedFromSnapshot {
			// State loaded from elsewhere: if it stays paused, its
			// first unpause is when it runs here.
			t.incoming[d.UUID] = landing{name: d.Name, id: id, start: detail}
		}
		if detail == DetailStartedRestored || detail == DetailStartedFromSnapshot {
			t.landed[d.UUID] = landing{name: d.Name, id: id}
			return Landed
		}
		return Other
	case EventUndefined:
		delete(t.landed, d.UUID)
		delete(t.incoming, d.UUID)
		return Other
	case EventStopped, EventCrashed, EventPMSuspended:
		delete(t.incoming, d.UUID)
		fallthrough
	case EventSuspended:
		delete(t.landed, d.UUID)
		return Cancel
	}
	return Other
}

// sameProcess reports whether two libvirt domain ids name one QEMU process
// (a negative id is unknown: taken as the same).
func sameProcess(a, b int32) bool { return a < 0 || b < 0 || a == b }

// Origin is the STARTED detail of the QEMU process that last landed for
// uuid, if it came by migration, restore or revert (DetailStartedMigrated,
// DetailStartedRestored, DetailStartedFromSnapshot), else -1: what a
// landing at RESUMED/UNPAUSED ended (Event.Cause).
func (t *Tracker) Origin(uuid string) int32 {
	if l, ok := t.landed[uuid]; ok && l.start > 0 {
		return l.start
	}
	return -1
}

// HasLanded reports whether a Landed was emitted for uuid's current migration.
func (t *Tracker) HasLanded(uuid string) bool {
	_, ok := t.landed[uuid]
	return ok
}

// Len is the number of domains remembered as landed.
func (t *Tracker) Len() int { return len(t.landed) }

// DomainStatus is one active domain as libvirt lists it
// (libvirtconn.Conn.ActiveDomains).
type DomainStatus = libvirtconn.DomainStatus

// Decision is something Resync decided: Landed or Cancel for a domain.
type Decision struct {
	Kind   EventKind
	Domain DomainRef
	ID     int32
}

// LandedReason reports a running domain whose state reason says it got here
// by migration: MIGRATED, POSTCOPY or POSTCOPY_FAILED (see Tracker).
func LandedReason(state, reason int32) bool {
	return state == libvirtconn.StateRunning &&
		(reason == libvirtconn.ReasonRunningMigrated || reason == libvirtconn.ReasonRunningPostcopy || reason == libvirtconn.ReasonRunningPostcopyFailed)
}

// Resync reconciles the tracker with the active domains listed after
// (re)connecting, when events may have been missed:
//
//   - a remembered landing whose domain is gone, not running, or is a new QEMU
//     process (another domain id) is cancelled and forgotten;
//   - with announce, a domain running with a landed reason (LandedReason)
//     that is not remembered lands, and is remembered; one remembered with
//     the same domain id does not land again, so a libvirtd restart does not
//     re-announce every VM that ever migrated here (but an agent restart
//     does: the tracker starts empty);
//   - with announce, an incoming domain (see "Paused migrations") listed
//     running in the same QEMU process lands: it was resumed while the
//     events were missed; one gone or in another process is forgotten;
//   - without announce nothing lands and nothing is remembered, so a RESUMED
//     event still queued from before the listing lands normally.
//
// Cancels come first (by UUID), then landings in the order of active.
func (t *Tracker) Resync(active []DomainStatus, announce bool) []Decision {
	byUUID := make(map[string]DomainStatus, len(active))
	for _, s := range active {
		byUUID[s.Domain.UUID] = s
	}
	var out []Decision
	uuids := make([]string, 0, len(t.landed))
	for u := range t.landed {
		uuids = append(uuids, u)
	}
	sort.Strings(uuids)
	for _, u := range uuids {
		l := t.landed[u]
		s, ok := byUUID[u]
		if ok && s.State == libvirtconn.StateRunning && s.ID == l.id {
			continue
		}
		delete(t.landed, u)
		out = append(out, Decision{Kind: Cancel, Domain: DomainRef{Name: l.name, UUID: u}, ID: l.id})
	}
	for u, in := range t.incoming {
		if s, ok := byUUID[u]; !ok || !sameProcess(s.ID, in.id) {
			delete(t.incoming, u)
		}
	}
	if !announce {
		return out
	}
	for _, s := range active {
		_, incoming := t.incoming[s.Domain.UUID]
		if !LandedReason(s.State, s.Reason) && !(incoming && s.State == libvirtconn.StateRunning) {
			continue
		}
		delete(t.incoming, s.Domain.UUID)
		if _, ok := t.landed[s.Domain.UUID]; ok {
			continue
		}
		t.landed[s.Domain.UUID] = landing{name: s.Domain.Name, id: s.ID}
		out = append(out, Decision{Kind: Landed, Domain: s.Domain, ID: s.ID})
	}
	return out
}
