package libvirtwatch

// Lifecycle event types (virDomainEventType), as libvirt sends them.
const (
	EventDefined     int32 = 0
	EventUndefined   int32 = 1
	EventStarted     int32 = 2
	EventSuspended   int32 = 3
	EventResumed     int32 = 4
	EventStopped     int32 = 5
	EventShutdown    int32 = 6
	EventPMSuspended int32 = 7
	EventCrashed     int32 = 8
)

// The lifecycle details the landing rules look at (libvirt-domain.h; the
// same numbers as go-libvirt's DomainEvent*DetailType constants).
const (
	DetailStartedMigrated         int32 = 1 // VIR_DOMAIN_EVENT_STARTED_MIGRATED: incoming migration, paused
	DetailSuspendedMigrated       int32 = 1 // VIR_DOMAIN_EVENT_SUSPENDED_MIGRATED: source paused for switch-over
	DetailSuspendedPostcopy       int32 = 7 // VIR_DOMAIN_EVENT_SUSPENDED_POSTCOPY: source paused, post-copy running
	DetailSuspendedPostcopyFailed int32 = 8 // VIR_DOMAIN_EVENT_SUSPENDED_POSTCOPY_FAILED (libvirt >= 8.5)
	DetailResumedUnpaused         int32 = 0 // VIR_DOMAIN_EVENT_RESUMED_UNPAUSED
	DetailResumedMigrated         int32 = 1 // VIR_DOMAIN_EVENT_RESUMED_MIGRATED: runs here after migration (or after a cancelled one, on the source)
	DetailResumedPostcopy         int32 = 3 // VIR_DOMAIN_EVENT_RESUMED_POSTCOPY: runs here, memory still arriving
	DetailResumedPostcopyFailed   int32 = 4 // VIR_DOMAIN_EVENT_RESUMED_POSTCOPY_FAILED (libvirt >= 8.5): runs here, post-copy broke
	DetailStoppedMigrated         int32 = 3 // VIR_DOMAIN_EVENT_STOPPED_MIGRATED
	DetailStoppedFailed           int32 = 5 // VIR_DOMAIN_EVENT_STOPPED_FAILED
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
