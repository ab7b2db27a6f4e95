package libvirtwatch

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/rarp-announce/rarp-announce/internal/libvirtfake"
	"github.com/rarp-announce/rarp-announce/pkg/libvirtconn"
)

// A property test of the Tracker (issue 11): whatever the order of events
// and resyncs, for every domain
//
//   - at most one landing per migration: between two landings of a domain
//     there is an event or a resync that ends the migration (STARTED,
//     UNDEFINED, SUSPENDED, STOPPED, CRASHED, PMSUSPENDED; a resync that
//     finds it gone, not running, or another QEMU process: a Cancel);
//   - no landing is lost: a landing event (RESUMED/MIGRATED, POSTCOPY,
//     POSTCOPY_FAILED, FROM_SNAPSHOT; RESUMED/UNPAUSED of a QEMU process
//     that came by migration and has not run here) of a domain not landed
//     since the last such end lands;
//   - only landing events and resyncs of running domains with a landed
//     reason land, and a Cancel decision only names a domain the tracker
//     remembered.
//
// The model is the rule itself, kept per domain as two bools; the events
// are drawn from every (event, detail) libvirt defines plus unknown ones.
func TestTrackerProperty(t *testing.T) {
	const (
		sequences = 3000
		steps     = 200
		domains   = 4
	)
	for seed := uint64(1); seed <= sequences; seed++ {
		rng := rand.New(rand.NewPCG(seed, 0x7261727061))
		tr := NewTracker()
		landed := map[string]bool{} // the model
		id := map[string]int32{}    // QEMU process id of the current run
		landedID := map[string]int32{}
		// came by migration (STARTED/MIGRATED), not run here yet: its
		// first RESUMED/UNPAUSED lands (a paused migration)
		incoming := map[string]bool{}
		var trace []string
		fail := func(format string, a ...any) {
			t.Helper()
			t.Fatalf("seed %d after %d steps: %s\ntrace:\n%v", seed, len(trace), fmt.Sprintf(format, a...), trace)
		}
		dom := func(i int) DomainRef {
			return DomainRef{Name: fmt.Sprintf("vm%d", i), UUID: libvirtfake.TestUUID(i)}
		}
		for range steps {
			d := dom(rng.IntN(domains))
			if rng.IntN(10) == 0 {
				// A resync with a random view of the domains.
				var active []DomainStatus
				for i := range domains {
					if rng.IntN(3) == 0 {
						continue // not active
					}
					r := dom(i)
					st := DomainStatus{Domain: r, ID: id[r.UUID], State: libvirtconn.StateRunning, Reason: int32(rng.IntN(12))}
					if rng.IntN(4) == 0 {
						st.State = libvirtconn.StatePaused
					}
					if rng.IntN(6) == 0 {
						st.ID++ // another QEMU process than the one remembered
					}
					active = append(active, st)
				}
				announce := rng.IntN(4) != 0
				trace = append(trace, fmt.Sprintf("resync %v announce=%v", active, announce))
				byUUID := map[string]DomainStatus{}
				for _, s := range active {
					byUUID[s.Domain.UUID] = s
				}
				// The landings a resync must cancel: the domain is gone, not
				// running, or runs in another QEMU process.
				mustCancel := map[string]bool{}
				for i := range domains {
					u := dom(i).UUID
					s, ok := byUUID[u]
					mustCancel[u] = landed[u] && (!ok || s.State != libvirtconn.StateRunning || s.ID != landedID[u])
				}
				cancelled := map[string]bool{}
				seen := map[string]int{}
				for _, dec := range tr.Resync(active, announce) {
					u := dec.Domain.UUID
					seen[u]++
					switch dec.Kind {
					case Cancel:
						if !landed[u] {
							fail("resync cancelled %s, which had not landed", dec.Domain)
						}
						landed[u] = false
						cancelled[u] = true
					case Landed:
						landedID[u] = dec.ID
						if landed[u] {
							fail("resync landed %s twice in one migration", dec.Domain)
						}
						if !announce {
							fail("resync landed %s without announce", dec.Domain)
						}
						landed[u] = true
					default:
						fail("resync decided %v", dec.Kind)
					}
				}
				for u, must := range mustCancel {
					if must != cancelled[u] {
						fail("resync cancelled=%v for %s, want %v", cancelled[u], u, must)
					}
				}
				for u, n := range seen {
					if n > 2 {
						fail("resync decided %d times for %s", n, u)
					}
				}
				// Model: every remembered landing not confirmed was cancelled,
				// every running one with a landed reason, or incoming and
				// running in the same process, is remembered; an incoming
				// domain gone or in another process is forgotten.
				for i := range domains {
					u := dom(i).UUID
					if s, ok := byUUID[u]; !ok || s.ID != id[u] {
						incoming[u] = false
					}
				}
				for _, s := range active {
					u := s.Domain.UUID
					lands := LandedReason(s.State, s.Reason) || (incoming[u] && s.State == libvirtconn.StateRunning)
					if announce && lands {
						if !landed[u] {
							fail("resync left %s (running, migrated here) not landed", s.Domain)
						}
						incoming[u] = false
					}
				}
				for i := range domains {
					u := dom(i).UUID
					if tr.HasLanded(u) != landed[u] {
						fail("tracker says landed=%v for %s, model %v", tr.HasLanded(u), u, landed[u])
					}
				}
				continue
			}
			ev := int32(rng.IntN(10))         // 0..8 known, 9 unknown
			detail := int32(rng.IntN(10)) - 1 // -1..8
			if ev == EventStarted {
				id[d.UUID]++
			}
			kind := tr.Observe(d, id[d.UUID], ev, detail)
			trace = append(trace, fmt.Sprintf("%s %s/%s -> %s", d.Name, EventName(ev), DetailName(ev, detail), kind))
			landing := ev == EventResumed && (detail == DetailResumedMigrated || detail == DetailResumedPostcopy ||
				detail == DetailResumedPostcopyFailed || detail == DetailResumedFromSnapshot ||
				(detail == DetailResumedUnpaused && incoming[d.UUID]))
			staleStart := ev == EventStarted && landed[d.UUID] && landedID[d.UUID] == id[d.UUID]
			switch {
			case landing, ev == EventUndefined, ev == EventStopped, ev == EventCrashed, ev == EventPMSuspended:
				incoming[d.UUID] = false
			case ev == EventStarted && !staleStart:
				incoming[d.UUID] = detail == DetailStartedMigrated || detail == DetailStartedRestored || detail == DetailStartedFromSnapshot
			}
			// A restore or snapshot revert starts a new QEMU process whose
			// state was loaded: it lands at once (issue 14).
			restoreStart := ev == EventStarted && !staleStart && (detail == DetailStartedRestored || detail == DetailStartedFromSnapshot)
			ends := (ev == EventStarted && !staleStart) || ev == EventUndefined || ev == EventSuspended || ev == EventStopped || ev == EventCrashed || ev == EventPMSuspended
			switch {
			case restoreStart:
				if kind != Landed {
					fail("restore start of %s not landed: %s", d, kind)
				}
				landed[d.UUID] = true
				landedID[d.UUID] = id[d.UUID]
			case landing && !landed[d.UUID]:
				if kind != Landed {
					fail("landing event of %s not landed: %s", d, kind)
				}
				landed[d.UUID] = true
				landedID[d.UUID] = id[d.UUID]
			case landing:
				if kind == Landed {
					fail("%s landed twice in one migration", d)
				}
			case ends:
				if kind == Landed {
					fail("%s landed on %s/%s", d, EventName(ev), DetailName(ev, detail))
				}
				landed[d.UUID] = false
			default:
				if kind != Other {
					fail("%s/%s of %s classified %s, want other", EventName(ev), DetailName(ev, detail), d, kind)
				}
			}
			if tr.HasLanded(d.UUID) != landed[d.UUID] {
				fail("tracker says landed=%v for %s, model %v", tr.HasLanded(d.UUID), d, landed[d.UUID])
			}
		}
	}
}
