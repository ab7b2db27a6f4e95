// Package caps says, before anything starts, which Linux capability each
// enabled part of rarp-announce needs and which of them the process lacks,
// so that a missing capability is one clear error at start (exit 1, the
// capability named, what needs it, how to grant it) instead of EPERM
// retried for the whole announce schedule.
//
// Only the effective set matters: it is what the kernel checks when a
// packet socket is opened (CAP_NET_RAW) or a bridge FDB entry is deleted
// (CAP_NET_ADMIN). A unit's AmbientCapabilities=, setpriv --ambient-caps and
// a container's capabilities for UID 0 all end up there.
package caps

import (
	"fmt"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/rarp-announce/rarp-announce/internal/config"
)

// Cap is a capability number (linux/capability.h).
type Cap uint

// The capabilities rarp-announce uses; it never needs another.
const (
	NetRaw   Cap = unix.CAP_NET_RAW   // AF_PACKET sockets: announces, the responder
	NetAdmin Cap = unix.CAP_NET_ADMIN // bridge FDB deletes (fdb_repair)
)

var names = map[Cap]string{NetRaw: "CAP_NET_RAW", NetAdmin: "CAP_NET_ADMIN"}

func (c Cap) String() string {
	if n, ok := names[c]; ok {
		return n
	}
	return fmt.Sprintf("capability %d", uint(c))
}

// Set is a capability set, one bit per capability.
type Set uint64

// Of returns the set holding cs.
func Of(cs ...Cap) Set {
	var s Set
	for _, c := range cs {
		s |= 1 << c
	}
	return s
}

// Has reports whether c is in s.
func (s Set) Has(c Cap) bool { return c < 64 && s&(1<<c) != 0 }

// Effective returns the effective set of the calling thread. All threads of
// a Go program share it unless one was changed with Restrict.
func Effective() (Set, error) {
	d, err := get()
	if err != nil {
		return 0, err
	}
	return Set(d[0].Effective) | Set(d[1].Effective)<<32, nil
}

func get() ([2]unix.CapUserData, error) {
	var d [2]unix.CapUserData
	h := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	if err := unix.Capget(&h, &d[0]); err != nil {
		return d, fmt.Errorf("capget: %w", err)
	}
	return d, nil
}

// Restrict lowers the calling thread's effective and permitted sets to
// keep (what it already has of it). It is for tests that run a piece of
// code with fewer capabilities: lock the goroutine to its thread
// (runtime.LockOSThread) and never unlock it, so the thread ends with the
// goroutine instead of serving others with reduced rights.
func Restrict(keep Set) error {
	d, err := get()
	if err != nil {
		return err
	}
	for i := range d {
		k := uint32(keep >> (32 * i))
		d[i].Effective &= k
		d[i].Permitted &= k
	}
	h := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	if err := unix.Capset(&h, &d[0]); err != nil {
		return fmt.Errorf("capset: %w", err)
	}
	return nil
}

// Need is one capability an enabled part needs.
type Need struct {
	Cap Cap
	// For says which part needs it and how to do without, e.g.
	// "FDB repair (fdb_repair: true; set it to false to run without)".
	For string
}

// MissingError lists the needs the process does not meet.
type MissingError struct {
	Missing []Need
	Hint    string // how to grant them, appended in parentheses
}

func (e *MissingError) Error() string {
	var b strings.Builder
	for i, n := range e.Missing {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "missing %s, needed for %s", n.Cap, n.For)
	}
	if e.Hint != "" {
		fmt.Fprintf(&b, " (%s)", e.Hint)
	}
	return b.String()
}

// Check returns a *MissingError naming every need that the effective set
// does not hold, or nil.
func Check(needs ...Need) error {
	have, err := Effective()
	if err != nil {
		return err
	}
	return check(have, needs)
}

func check(have Set, needs []Need) error {
	var missing []Need
	for _, n := range needs {
		if !have.Has(n.Cap) {
			missing = append(missing, n)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return &MissingError{Missing: missing}
}

// Parts says which parts of the agent are enabled, for AgentNeeds.
type Parts struct {
	HostAnnounces bool // a NIC kind uses the host strategy (AF_PACKET frames)
	Responder     bool // responder.enabled
	FDBRepair     bool // fdb_repair
}

// AgentNeeds returns what "run" needs for the enabled parts. The ovs and
// qemu strategies need no capability: they talk to Unix sockets (OVS's and
// libvirt's), whose file permissions decide.
func AgentNeeds(p Parts) []Need {
	var n []Need
	if p.HostAnnounces {
		n = append(n, Need{NetRaw, "RARP announces (a NIC kind uses the host strategy)"})
	}
	if p.Responder {
		n = append(n, Need{NetRaw, "the RARP responder (responder.enabled: true)"})
	}
	if p.FDBRepair {
		n = append(n, Need{NetAdmin, "FDB repair (fdb_repair: true; set fdb_repair: false to run with CAP_NET_RAW only)"})
	}
	return n
}

// PartsOf returns the parts cfg enables.
func PartsOf(cfg *config.Config) Parts {
	s := cfg.Strategies
	host := false
	for _, v := range []config.Strategy{s.Bridge, s.Network, s.Direct, s.OpenVSwitch, s.VhostUser, s.Ethernet} {
		host = host || v == config.StrategyHost
	}
	return Parts{HostAnnounces: host, Responder: cfg.Responder.Enabled, FDBRepair: cfg.FDBRepair}
}

// CheckAgent checks, before "run" starts anything, that the process holds
// the capabilities cfg needs.
func CheckAgent(cfg *config.Config) error {
	err := Check(AgentNeeds(PartsOf(cfg))...)
	if me, ok := err.(*MissingError); ok {
		me.Hint = AgentHint
	}
	return err
}

// AgentHint says where the agent's capabilities come from.
const AgentHint = "grant it with the unit's AmbientCapabilities= and CapabilityBoundingSet= (or its drop-ins), the container's capabilities, or setpriv --ambient-caps; see docs/deploy.md"

// SendNeed is what "send" needs unless it writes a pcap file.
var SendNeed = Need{NetRaw, "sending frames on an interface (run as root, grant it with setpriv --ambient-caps +net_raw, or dry-run with --pcap FILE)"}
