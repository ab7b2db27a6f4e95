package libvirtwatch

import (
	"context"

	libvirt "github.com/digitalocean/go-libvirt"

	"github.com/rarp-announce/rarp-announce/pkg/libvirtconn"
)

// The lifecycle details of a restore or a snapshot revert (libvirt-domain.h):
// the domain's state was loaded from a file, as an incoming migration, and
// its MACs were last seen elsewhere or long ago.
const (
	DetailStartedRestored     = int32(libvirt.DomainEventStartedRestored)     // virsh restore
	DetailStartedFromSnapshot = int32(libvirt.DomainEventStartedFromSnapshot) // snapshot revert started a new QEMU
	DetailResumedFromSnapshot = int32(libvirt.DomainEventResumedFromSnapshot) // runs after a snapshot revert
)

// Cause is why a Landed event landed, for the per-trigger configuration.
type Cause uint8

const (
	CauseMigration Cause = iota // RESUMED/MIGRATED, RESUMED/POSTCOPY(_FAILED), RESUMED/UNPAUSED after a paused migration, or a resync
	CauseRestore                // STARTED/RESTORED, RESUMED/UNPAUSED after a paused restore
	CauseSnapshot               // STARTED/FROM_SNAPSHOT, RESUMED/FROM_SNAPSHOT, RESUMED/UNPAUSED after a paused revert
)

// Cause tells a migration landing from a restore or a snapshot revert.
func (e Event) Cause() Cause {
	if e.Resync {
		return CauseMigration
	}
	switch {
	case e.Event == EventStarted && e.Detail == DetailStartedRestored,
		e.Event == EventResumed && e.Detail == DetailResumedUnpaused && e.Origin == DetailStartedRestored:
		return CauseRestore
	case e.Event == EventStarted && e.Detail == DetailStartedFromSnapshot,
		e.Event == EventResumed && e.Detail == DetailResumedFromSnapshot,
		e.Event == EventResumed && e.Detail == DetailResumedUnpaused && e.Origin == DetailStartedFromSnapshot:
		return CauseSnapshot
	}
	return CauseMigration
}

// Starts reports an event after which the domain may run here with a new
// QEMU process (STARTED/any, RESUMED/any): what the agent knows of its
// NICs must be read again.
func (e Event) Starts() bool {
	return !e.Resync && (e.Event == EventStarted || e.Event == EventResumed)
}

// Gone reports an event after which the domain no longer runs here
// (stopped, undefined, crashed, paused, suspended): none of its MACs may be
// announced from this host until it runs again.
func (e Event) Gone() bool {
	if e.Resync {
		return e.Kind == Cancel
	}
	switch e.Event {
	case EventStopped, EventUndefined, EventCrashed, EventSuspended, EventPMSuspended:
		return true
	}
	return false
}

// RunningDomain is a domain libvirt listed as running (libvirtconn's).
type RunningDomain = libvirtconn.RunningDomain

// RunningDomains lists the running domains through the current connection.
func (w *Watcher) RunningDomains(ctx context.Context) ([]RunningDomain, error) {
	c, err := w.Conn()
	if err != nil {
		return nil, err
	}
	return c.RunningDomains(ctx)
}
