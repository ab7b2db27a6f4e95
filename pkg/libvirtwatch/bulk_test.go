package libvirtwatch

import (
	"testing"
	"time"

	"github.com/rarp-announce/rarp-announce/internal/libvirtfake"
	"github.com/rarp-announce/rarp-announce/pkg/libvirtconn"
)

// Issue 11 #9: a resync lists the domains' states in one call. With 1,000
// active domains and a libvirtd that takes 5 ms per answer, one
// virDomainGetState per domain held the first landing ~5 s; in one
// virConnectGetAllDomainStats the resync and the landing queued behind it
// take a few answers. The fake counts the calls: no GetState at all.
func TestResyncOneCallForManyDomains(t *testing.T) {
	const n = 1000
	s := libvirtfake.Start(t)
	for i := 1; i <= n; i++ {
		libvirtfake.AddTestDomain(t, s, i, libvirtconn.StateRunning, 1, 1) // booted here: nothing to land
	}
	libvirtfake.AddTestDomain(t, s, n+1, libvirtconn.StateRunning, libvirtconn.ReasonRunningMigrated, 1) // landed while nobody watched
	s.SetDelay(5 * time.Millisecond)

	start := time.Now()
	r := startWatcher(t, testConfig(t, s.Path()), 16)
	r.expect(t, Landed, "vm1001", "resync")
	r.waitReady(t, 10*time.Second)
	took := time.Since(start)
	t.Logf("resync of %d domains at 5 ms per answer: %v", n+1, took)
	if took > time.Second {
		t.Errorf("resync took %v; one call per domain would take %v", took, n*5*time.Millisecond)
	}
	if got := s.Calls(libvirtfake.ProgramRemote, libvirtfake.ProcDomainGetState); got != 0 {
		t.Errorf("%d GetState calls during the resync, want 0 (one bulk call)", got)
	}
	if got := s.Calls(libvirtfake.ProgramRemote, libvirtfake.ProcConnectGetAllDomainStats); got != 1 {
		t.Errorf("%d GetAllDomainStats calls, want 1", got)
	}

	// A landing right after the resync is relayed at once.
	r.emitExpect(t, s, "vm1", suspendedMigrated, Cancel, "suspended/migrated")
	at := time.Now()
	r.emitExpect(t, s, "vm1", resumedMigrated, Landed, "resumed/migrated")
	if d := time.Since(at); d > 500*time.Millisecond {
		t.Errorf("landing relayed after %v", d)
	}
}

// With ReportConnection, a lost connection is reported (Disconnected)
// before the reconnect, and Resynced follows the resync's decisions: the
// agent resumes refreshes only after the cancels of domains gone.
func TestReportConnection(t *testing.T) {
	s := libvirtfake.Start(t)
	libvirtfake.AddTestDomain(t, s, 1, libvirtconn.StateRunning, libvirtconn.ReasonRunningMigrated, 1)
	cfg := testConfig(t, s.Path())
	cfg.ReportConnection = true
	r := startWatcher(t, cfg, 16)
	r.expect(t, Landed, "vm1", "resync")
	r.expect(t, Resynced, "", "resynced")
	r.waitReady(t, 5*time.Second)

	if err := s.SetState("vm1", stateShutoff, 1); err != nil {
		t.Fatal(err)
	}
	s.DropConnections()
	r.expect(t, Disconnected, "", "disconnected")
	r.expect(t, Cancel, "vm1", "resync")
	r.expect(t, Resynced, "", "resynced")
	r.expectNone(t, 50*time.Millisecond)
}

// A resync lands a domain whose STARTED/MIGRATED and RESUMED/MIGRATED
// were still queued behind the listing (the subscription comes first, so
// events of the migration that finished meanwhile arrive after the
// resync): the stale STARTED of the very process that landed must not
// forget the landing, or the queued RESUMED lands the migration twice.
func TestTrackerStaleStartedAfterResync(t *testing.T) {
	tr := NewTracker()
	d := DomainRef{Name: "vm1", UUID: libvirtfake.TestUUID(1)}
	dec := tr.Resync([]DomainStatus{{Domain: d, ID: 7, State: libvirtconn.StateRunning, Reason: libvirtconn.ReasonRunningMigrated}}, true)
	if len(dec) != 1 || dec[0].Kind != Landed {
		t.Fatalf("resync decided %v", dec)
	}
	if k := tr.Observe(d, 7, EventStarted, DetailStartedMigrated); k != Other || !tr.HasLanded(d.UUID) {
		t.Fatalf("stale STARTED of the landed process: %v, landed %v", k, tr.HasLanded(d.UUID))
	}
	if k := tr.Observe(d, 7, EventResumed, DetailResumedMigrated); k != Other {
		t.Fatalf("queued RESUMED after the resync landed it: %v, want other (once per migration)", k)
	}
	// A new process (the next migration) still forgets and lands.
	if k := tr.Observe(d, 8, EventStarted, DetailStartedMigrated); k != Other || tr.HasLanded(d.UUID) {
		t.Fatalf("STARTED of a new process: %v, landed %v", k, tr.HasLanded(d.UUID))
	}
	if k := tr.Observe(d, 8, EventResumed, DetailResumedMigrated); k != Landed {
		t.Fatalf("next migration: %v, want landed", k)
	}
}
