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
// errors.Is) and a distinct metric label (Reason), so an operator can tell
// "OVS is down" from "the port is not there yet" from "OVS is hung".
var (
	// ErrNotRunning: the OVSDB socket or the bridge's OpenFlow management
	// socket is missing or refuses connections.
	ErrNotRunning = errors.New("open vswitch is not running")
	// ErrPortNotFound: OVSDB has no port (or interface) of that name.
	ErrPortNotFound = errors.New("port not found in OVSDB")
	// ErrNoOFPort: the port exists but has no OpenFlow port number (-1 or
	// none yet): ovs-vswitchd could not open the device.
	ErrNoOFPort = errors.New("port has no OpenFlow port number")
	// ErrPortNotWired: the port is tagged with VLAN 4095, where Neutron's
	// OVS agent parks ports it has not wired yet (and drops their
	// traffic); an announce now would be lost. Announce again once the tag
	// changes.
	ErrPortNotWired = errors.New("port is on the dead VLAN 4095 (not wired yet)")
	// ErrVLANNotCarried: none of the requested VLANs can enter the port
	// (trunks excludes them).
	ErrVLANNotCarried = errors.New("no requested VLAN is carried by the port")
	// ErrTimeout: ovs-vsctl, ovs-ofctl or the OpenFlow exchange did not
	// finish in time (a hung ovsdb-server or ovs-vswitchd).
	ErrTimeout = errors.New("open vswitch did not answer in time")
	// ErrOpenFlow: the switch answered a packet-out with an OpenFlow error.
	ErrOpenFlow = errors.New("openflow error")
	// ErrCommand: a command failed in a way none of the above explains
	// (unexpected output, missing binary).
	ErrCommand = errors.New("ovs command failed")
)

// Reasons are the label values of rarp_announce_ovs_failures_total, in the
// order Reason checks them.
var Reasons = []string{"timeout", "not_running", "port_not_found", "no_ofport", "port_not_wired", "vlan_not_carried", "openflow_error", "permission", "command"}

// Reason is the metric label for err: one of Reasons.
func Reason(err error) string {
	switch {
	case errors.Is(err, ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, ErrNotRunning):
		return "not_running"
	case errors.Is(err, ErrPortNotFound):
		return "port_not_found"
	case errors.Is(err, ErrNoOFPort):
		return "no_ofport"
	case errors.Is(err, ErrPortNotWired):
		return "port_not_wired"
	case errors.Is(err, ErrVLANNotCarried):
		return "vlan_not_carried"
	case errors.Is(err, ErrOpenFlow):
		return "openflow_error"
	case denied(err):
		return "permission"
	}
	return "command"
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
