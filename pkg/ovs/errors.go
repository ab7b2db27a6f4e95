package ovs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
)

// Failures of the ovs strategy. Each is a distinct sentinel (match with
// errors.Is) that carries its own metric label (Reason), so an operator
// can tell "OVS is down" from "the port is not there yet" from "OVS is
// hung".
var (
	// ErrNotRunning: the OVSDB socket or the bridge's OpenFlow management
	// socket is missing or refuses connections.
	ErrNotRunning = &failure{"not_running", "open vswitch is not running"}
	// ErrPortNotFound: OVSDB has no port (or interface) of that name.
	ErrPortNotFound = &failure{"port_not_found", "port not found in OVSDB"}
	// ErrNoOFPort: the port exists but has no OpenFlow port number (-1 or
	// none yet): ovs-vswitchd could not open the device.
	ErrNoOFPort = &failure{"no_ofport", "port has no OpenFlow port number"}
	// ErrPortNotWired: the port is tagged with VLAN 4095, where Neutron's
	// OVS agent parks ports it has not wired yet (and drops their
	// traffic); an announce now would be lost. Announce again once the tag
	// changes.
	ErrPortNotWired = &failure{"port_not_wired", "port is on the dead VLAN 4095 (not wired yet)"}
	// ErrVLANNotCarried: none of the requested VLANs can enter the port
	// (trunks excludes them).
	ErrVLANNotCarried = &failure{"vlan_not_carried", "no requested VLAN is carried by the port"}
	// ErrTimeout: ovs-vsctl, ovs-ofctl or the OpenFlow exchange did not
	// finish in time (a hung ovsdb-server or ovs-vswitchd).
	ErrTimeout = &failure{"timeout", "open vswitch did not answer in time"}
	// ErrOpenFlow: the switch answered a packet-out with an OpenFlow error.
	ErrOpenFlow = &failure{"openflow_error", "openflow error"}
	// ErrCommand: a command failed in a way none of the above explains
	// (unexpected output, missing binary).
	ErrCommand = &failure{"command", "ovs command failed"}
)

// failure is a sentinel that names its own metric label, so the label
// list, the sentinels and Reason cannot drift apart.
type failure struct{ reason, msg string }

func (f *failure) Error() string { return f.msg }

// Reason's order: the first of these that an error wraps names it (a hung
// switch whose socket then went away is still a timeout). ErrCommand is
// not among them: "permission" comes before it.
var named = []*failure{ErrTimeout, ErrNotRunning, ErrPortNotFound, ErrNoOFPort, ErrPortNotWired, ErrVLANNotCarried, ErrOpenFlow}

const (
	reasonPermission = "permission"
	reasonCommand    = "command"
)

// Reasons are the label values of rarp_announce_ovs_failures_total, in the
// order Reason checks them.
var Reasons = append(reasonsOf(named), reasonPermission, reasonCommand)

func reasonsOf(fs []*failure) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = f.reason
	}
	return out
}

// Reason is the metric label for err: one of Reasons. A context deadline
// counts as ErrTimeout; an error no sentinel explains is "permission" when
// a socket was denied (see denied), else ErrCommand's "command".
func Reason(err error) string {
	if errors.Is(err, context.DeadlineExceeded) {
		return ErrTimeout.reason
	}
	for _, f := range named {
		if errors.Is(err, f) {
			return f.reason
		}
	}
	if denied(err) {
		return reasonPermission
	}
	return reasonCommand
}

// denied reports a socket the agent may not use (OVS's sockets are
// root-only on Debian/Ubuntu): EACCES from connect, or ovs-vsctl's
// "Permission denied" (see internal/caps and docs/deploy.md, ovs.conf).
func denied(err error) bool {
	return err != nil && (errors.Is(err, os.ErrPermission) || strings.Contains(err.Error(), "Permission denied"))
}

// dialError classifies a failed connect to (or write on) a unix socket: a
// missing file, a refused connection or a peer that went away means nobody
// is serving it.
func dialError(err error) error {
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) {
		return fmt.Errorf("%w: %w", ErrNotRunning, err)
	}
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w: %w", ErrTimeout, err)
	}
	return err
}
