package libvirtwatch

import (
	"encoding/json"
	"time"
)

// AnnounceSelf holds the arguments of QMP announce-self: QEMU sends Rounds
// RARPs per NIC, the first at once, then initial + (rounds - round - 1) *
// step apart, capped at max. QEMU requires the four numbers; Interfaces
// (libvirt's <alias name>, e.g. "net0") limits it to those NICs, empty = all.
type AnnounceSelf struct {
	Initial, Max, Step time.Duration
	Rounds             int
	Interfaces         []string
}

// DefaultAnnounceSelf is QEMU's own schedule (0, 50, 200, 450, 800 ms).
var DefaultAnnounceSelf = AnnounceSelf{Initial: 50 * time.Millisecond, Max: 550 * time.Millisecond, Step: 100 * time.Millisecond, Rounds: 5}

// Command renders the QMP command for QEMUMonitorCommand.
func (a AnnounceSelf) Command() string {
	type args struct {
		Initial    int64    `json:"initial"`
		Max        int64    `json:"max"`
		Rounds     int      `json:"rounds"`
		Step       int64    `json:"step"`
		Interfaces []string `json:"interfaces,omitempty"`
	}
	cmd := struct {
		Execute   string `json:"execute"`
		Arguments args   `json:"arguments"`
	}{"announce-self", args{a.Initial.Milliseconds(), a.Max.Milliseconds(), a.Rounds, a.Step.Milliseconds(), a.Interfaces}}
	b, _ := json.Marshal(cmd) // cannot fail: plain types
	return string(b)
}
