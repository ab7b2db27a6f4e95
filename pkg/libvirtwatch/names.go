package libvirtwatch

import libvirt "github.com/digitalocean/go-libvirt"

// Lifecycle event types (virDomainEventType), as libvirt sends them: go-libvirt's
// generated constants, as the int32 the events carry, so that callers need
// not import go-libvirt.
const (
	EventDefined     = int32(libvirt.DomainEventDefined)
	EventUndefined   = int32(libvirt.DomainEventUndefined)
	EventStarted     = int32(libvirt.DomainEventStarted)
	EventSuspended   = int32(libvirt.DomainEventSuspended)
	EventResumed     = int32(libvirt.DomainEventResumed)
	EventStopped     = int32(libvirt.DomainEventStopped)
	EventShutdown    = int32(libvirt.DomainEventShutdown)
	EventPMSuspended = int32(libvirt.DomainEventPmsuspended)
	EventCrashed     = int32(libvirt.DomainEventCrashed)
)

// The lifecycle details the landing rules look at (libvirt-domain.h's
// VIR_DOMAIN_EVENT_<EVENT>_<DETAIL>).
const (
	DetailStartedMigrated         = int32(libvirt.DomainEventStartedMigrated)         // incoming migration, paused
	DetailSuspendedMigrated       = int32(libvirt.DomainEventSuspendedMigrated)       // source paused for switch-over
	DetailSuspendedPostcopy       = int32(libvirt.DomainEventSuspendedPostcopy)       // source paused, post-copy running
	DetailSuspendedPostcopyFailed = int32(libvirt.DomainEventSuspendedPostcopyFailed) // libvirt >= 8.5
	DetailResumedUnpaused         = int32(libvirt.DomainEventResumedUnpaused)
	DetailResumedMigrated         = int32(libvirt.DomainEventResumedMigrated)       // runs here after migration (or after a cancelled one, on the source)
	DetailResumedPostcopy         = int32(libvirt.DomainEventResumedPostcopy)       // runs here, memory still arriving
	DetailResumedPostcopyFailed   = int32(libvirt.DomainEventResumedPostcopyFailed) // libvirt >= 8.5: runs here, post-copy broke
	DetailStoppedMigrated         = int32(libvirt.DomainEventStoppedMigrated)
	DetailStoppedFailed           = int32(libvirt.DomainEventStoppedFailed)
)

var eventNames = []string{"defined", "undefined", "started", "suspended", "resumed", "stopped", "shutdown", "pmsuspended", "crashed"}

var detailNames = [][]string{
	{"added", "updated", "renamed", "from_snapshot"},
	{"removed", "renamed"},
	{"booted", "migrated", "restored", "from_snapshot", "wakeup", "recreated"},
	{"paused", "migrated", "ioerror", "watchdog", "restored", "from_snapshot", "api_error", "postcopy", "postcopy_failed"},
	{"unpaused", "migrated", "from_snapshot", "postcopy", "postcopy_failed"},
	{"shutdown", "destroyed", "crashed", "migrated", "saved", "failed", "from_snapshot", "recreated"},
	{"finished", "guest", "host"},
	{"memory", "disk"},
	{"panicked", "crashloaded"},
}

// EventName names a lifecycle event type in lower case ("resumed"), or
// "unknown" for a value this libvirt binding does not know (a bounded set,
// fit for a metric label).
func EventName(event int32) string {
	if event >= 0 && int(event) < len(eventNames) {
		return eventNames[event]
	}
	return "unknown"
}

// DetailName names a lifecycle event's detail in lower case
// ("postcopy_failed"), or "unknown".
func DetailName(event, detail int32) string {
	if event >= 0 && int(event) < len(detailNames) && detail >= 0 && int(detail) < len(detailNames[event]) {
		return detailNames[event][detail]
	}
	return "unknown"
}
