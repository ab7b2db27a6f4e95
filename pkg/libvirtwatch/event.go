package libvirtwatch

import (
	"fmt"
	"time"

	"github.com/rarp-announce/rarp-announce/pkg/libvirtconn"
)

// EventKind is what an event means for the announcer.
type EventKind int

const (
	// Other is any lifecycle event that neither lands nor cancels
	// (STARTED/MIGRATED among them: the VM still runs on the source then).
	Other EventKind = iota
	// Landed: the domain now runs here after a migration (or a cancelled
	// one): announce its MACs. Emitted once per migration.
	Landed
	// Cancel: the domain stopped, paused, crashed or left: cancel its
	// pending announces.
	Cancel
	// Disconnected: the connection to libvirt was lost; until Resynced,
	// nothing is known of the domains (Config.ReportConnection). No domain.
	Disconnected
	// Resynced: connected again, and the resync's Landed and Cancel
	// decisions were sent before it (Config.ReportConnection). No domain.
	Resynced
	// DeviceChanged: a device was hot-plugged into or unplugged from the
	// running domain (device.go): Device, DeviceAdded.
	DeviceChanged
)

func (k EventKind) String() string {
	switch k {
	case Landed:
		return "landed"
	case Cancel:
		return "cancel"
	case Disconnected:
		return "disconnected"
	case Resynced:
		return "resynced"
	case DeviceChanged:
		return "device-changed"
	}
	return "other"
}

// DomainRef names a domain (libvirtconn's; the events' and the Watcher's
// queries' vocabulary).
type DomainRef = libvirtconn.DomainRef

// Event is one lifecycle event, classified; or, with Resync set, a decision
// taken while resynchronizing with libvirt after (re)connecting.
type Event struct {
	Kind     EventKind
	Domain   DomainRef
	DomainID int32 // libvirt's domain id at the time (new for every QEMU process); -1 if unknown
	// Event and Detail are libvirt's raw lifecycle event and detail
	// (EventName, DetailName); -1 for Resync events, which have none.
	Event, Detail int32
	Received      time.Time // when the watcher read it (for lag measurements)
	// Origin is, for a landing, the STARTED detail of the QEMU process
	// that landed if it came by migration, restore or revert
	// (Tracker.Origin), else -1; a RESUMED/UNPAUSED landing is one of
	// these, left paused.
	Origin int32
	Resync bool // produced by a resync, not by a libvirt event
	// Device is the alias of the device a DeviceChanged event concerns;
	// DeviceAdded is true when it was added, false when removed.
	Device      string
	DeviceAdded bool
}

// Name is the event's "event/detail" in lower case, e.g. "resumed/migrated",
// or "resync".
func (e Event) Name() string {
	if e.Kind == Disconnected || e.Kind == Resynced {
		return e.Kind.String()
	}
	if e.Resync {
		return "resync"
	}
	if e.Kind == DeviceChanged {
		if e.DeviceAdded {
			return "device-added/" + e.Device
		}
		return "device-removed/" + e.Device
	}
	return EventName(e.Event) + "/" + DetailName(e.Event, e.Detail)
}

func (e Event) String() string {
	return fmt.Sprintf("%s %s id %d: %s", e.Kind, e.Domain, e.DomainID, e.Name())
}

// MigrationStarts reports whether e starts a migration that may land here
// or leave from here: STARTED/MIGRATED on the destination (the VM is still
// paused, its taps exist) and SUSPENDED/MIGRATED on the source (before a
// possible cancel). The agent reads the domain's XML then, off the
// critical path. Decided here, beside the Tracker, so no other package
// reads libvirt's raw codes.
func (e Event) MigrationStarts() bool {
	return !e.Resync && ((e.Event == EventStarted && e.Detail == DetailStartedMigrated) ||
		(e.Event == EventSuspended && e.Detail == DetailSuspendedMigrated))
}

// PostCopyStarts reports whether e is the source's switch to post-copy
// (SUSPENDED/POSTCOPY): the migration goes on, the VM now runs on the
// destination, and its STOPPED/MIGRATED here follows. The departure the
// agent watches then is the same migration's.
func (e Event) PostCopyStarts() bool {
	return !e.Resync && e.Event == EventSuspended && e.Detail == DetailSuspendedPostcopy
}
