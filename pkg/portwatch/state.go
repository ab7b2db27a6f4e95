package portwatch

import (
	"fmt"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/rarp-announce/rarp-announce/pkg/enumname"
)

// PortState is a bridge port's spanning-tree state (BR_STATE_*). Only a
// forwarding port passes frames; a port whose device has no carrier (a tap
// nobody holds) or is down is disabled.
type PortState uint8

// Bridge port states, as the kernel numbers them.
const (
	PortDisabled   PortState = 0
	PortListening  PortState = 1
	PortLearning   PortState = 2
	PortForwarding PortState = 3
	PortBlocking   PortState = 4
)

var portStateNames = enumname.Table[PortState]{
	PortDisabled:   "disabled",
	PortListening:  "listening",
	PortLearning:   "learning",
	PortForwarding: "forwarding",
	PortBlocking:   "blocking",
}

func (p PortState) String() string { return portStateNames.Name(p, "state%d") }

// State is what the watcher knows about one link.
type State struct {
	Name  string
	Index int
	// Kind is the driver's link kind: "tun" for a tap, "macvtap",
	// "bridge", "veth", ...; "" for a physical NIC.
	Kind        string
	Master      string // the device it is enslaved to; "" for none
	MasterIndex int
	// Lower is the device a stacked link (macvtap, macvlan, vlan) sits
	// on; "" for none or when it is in another namespace.
	Lower      string
	LowerIndex int
	AdminUp    bool                  // IFF_UP: set up by ip link set up
	Carrier    bool                  // IFF_LOWER_UP: a tap has carrier only while a process holds it
	OperState  netlink.LinkOperState // RFC 2863 state the kernel derives
	BridgePort bool                  // enslaved to a Linux bridge
	PortState  PortState             // its STP state, when BridgePort
}

// Up reports whether the device passes frames itself: administratively up,
// with carrier, and operationally up. "unknown" counts as up: it is what a
// device reports when its driver never signalled carrier changes, as a tap
// created by libvirt and handed to QEMU open, or an ifb.
func (s State) Up() bool {
	return s.AdminUp && s.Carrier &&
		(s.OperState == netlink.OperUp || s.OperState == netlink.OperUnknown)
}

// Forwarding reports whether the bridge the link is a port of forwards its
// frames; true for a link that is not a bridge port.
func (s State) Forwarding() bool { return !s.BridgePort || s.PortState == PortForwarding }

// Condition names one readiness condition; the zero value means none.
type Condition uint8

// Readiness conditions, in the order they are checked.
const (
	None       Condition = iota // ready: nothing missing
	Exists                      // the device exists
	Attached                    // it is attached to the master asked for
	Up                          // it is up (see State.Up)
	Forwarding                  // its bridge port forwards (see State.Forwarding)
)

var conditionNames = enumname.Table[Condition]{
	None:       "none",
	Exists:     "exists",
	Attached:   "attached",
	Up:         "up",
	Forwarding: "forwarding",
}

func (c Condition) String() string { return conditionNames.Name(c, "condition%d") }

// stackedKinds are link kinds that have a lower device instead of a master.
var stackedKinds = map[string]bool{"macvtap": true, "macvlan": true, "ipvtap": true, "ipvlan": true, "vlan": true}

// AttachedTo reports whether s is attached to master: enslaved to it, or,
// for a macvtap (which has no master), stacked on it. master "" matches
// anything.
func (s State) AttachedTo(master string) bool {
	if master == "" || s.Master == master {
		return true
	}
	return s.MasterIndex == 0 && stackedKinds[s.Kind] && s.Lower == master
}

// Missing returns the first readiness condition s fails for master, or None
// when the port is ready: it exists, is attached to master, is up and, when a
// bridge port, forwarding. A zero State (Index 0) does not exist.
func (s State) Missing(master string) Condition {
	switch {
	case s.Index == 0:
		return Exists
	case !s.AttachedTo(master):
		return Attached
	case !s.Up():
		return Up
	case !s.Forwarding():
		return Forwarding
	}
	return None
}

// Why explains in words why s is not ready for master, for logs and errors.
func (s State) Why(master string) string {
	switch s.Missing(master) {
	case Exists:
		return "does not exist"
	case Attached:
		got := s.Master
		if got == "" {
			got = "none"
		}
		if stackedKinds[s.Kind] && s.MasterIndex == 0 {
			lower := s.Lower
			if lower == "" {
				lower = "none"
			}
			return fmt.Sprintf("not attached to %s (master %s, lower device %s)", master, got, lower)
		}
		return fmt.Sprintf("not attached to %s (master %s)", master, got)
	case Up:
		var why []string
		if !s.AdminUp {
			why = append(why, "admin down")
		}
		if !s.Carrier {
			why = append(why, "no carrier")
		}
		if s.OperState != netlink.OperUp && s.OperState != netlink.OperUnknown {
			why = append(why, "operstate "+s.OperState.String())
		}
		return "not up (" + strings.Join(why, ", ") + ")"
	case Forwarding:
		return fmt.Sprintf("bridge port %s on %s, not forwarding", s.PortState, s.Master)
	}
	return "ready"
}

func (u *update) adminUp() bool { return u.flags&unix.IFF_UP != 0 }
func (u *update) carrier() bool { return u.flags&unix.IFF_LOWER_UP != 0 }
