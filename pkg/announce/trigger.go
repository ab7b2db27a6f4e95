package announce

import "strconv"

// Trigger is why an announce is sent: it travels with a request into logs
// (Request.Reason, Sent.Reason) and, later, per-trigger counts.
type Trigger uint8

const (
	TriggerLanding        Trigger = iota // a domain landed after a migration
	TriggerManual                        // rarp-announce announce, by hand
	TriggerPortChange                    // the VM's port was re-wired or flapped soon after landing
	TriggerUplinkFailover                // the segment's uplink changed (bond failover)
	TriggerRestore                       // the agent restarted or reconnected and resynchronized
)

var triggerNames = [...]string{"landed", "manual", "port-changed", "uplink-failover", "restore"}

func (t Trigger) String() string {
	if int(t) < len(triggerNames) {
		return triggerNames[t]
	}
	return "trigger(" + strconv.Itoa(int(t)) + ")"
}
