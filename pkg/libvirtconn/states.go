package libvirtconn

import "strconv"

// Domain states (virDomainState) and the running reasons a resync looks at.
const (
	StateRunning int32 = 1
	StatePaused  int32 = 3

	ReasonRunningMigrated       int32 = 2  // VIR_DOMAIN_RUNNING_MIGRATED
	ReasonRunningPostcopy       int32 = 10 // VIR_DOMAIN_RUNNING_POSTCOPY
	ReasonRunningPostcopyFailed int32 = 11 // VIR_DOMAIN_RUNNING_POSTCOPY_FAILED
)

var stateNames = []string{"nostate", "running", "blocked", "paused", "shutdown", "shutoff", "crashed", "pmsuspended"}

// StateName names a domain state ("running"), or the number.
func StateName(state int32) string {
	if state >= 0 && int(state) < len(stateNames) {
		return stateNames[state]
	}
	return strconv.Itoa(int(state))
}
