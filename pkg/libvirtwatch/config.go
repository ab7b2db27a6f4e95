package libvirtwatch

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"go.uber.org/zap"
)

// DefaultSockets are tried in order when Config.Socket is empty: the split
// QEMU daemon's socket, then the monolithic libvirtd's. Their read-only
// siblings (virtqemud-sock-ro, libvirt-sock-ro) are enough for events, state
// and XML, but not for QEMUMonitorCommand.
var DefaultSockets = []string{"/run/libvirt/virtqemud-sock", "/run/libvirt/libvirt-sock"}

// ReadOnlySockets are tried instead when Config.ReadOnly is set: the
// read-only sockets suffice for events, states and live XML, and give the
// agent no power over the domains (least privilege). QMP needs the others.
var ReadOnlySockets = []string{"/run/libvirt/virtqemud-sock-ro", "/run/libvirt/libvirt-sock-ro"}

// Defaults for the zero values of Config.
const (
	DefaultURI        = "qemu:///system"
	DefaultRPCTimeout = 5 * time.Second
	DefaultBackoffMin = 200 * time.Millisecond
	DefaultBackoffMax = 10 * time.Second
	DefaultPingEvery  = 30 * time.Second
)

// Config configures a Watcher, or a Conn made by Dial.
type Config struct {
	// ReadOnly picks the socket from ReadOnlySockets instead of
	// DefaultSockets when Socket is empty.
	ReadOnly bool
	// Socket is libvirt's unix socket; "" = the first of DefaultSockets
	// that exists, looked up again at every (re)connect.
	Socket string
	// URI is the driver URI opened over the socket; "" = qemu:///system.
	// Tests use test:///default (libvirt's test driver, served by libvirtd).
	URI string
	// RPCTimeout bounds every libvirt call (go-libvirt has none); a call
	// that times out closes the connection, and the Watcher reconnects.
	// Default 5 s.
	RPCTimeout time.Duration
	// BackoffMin and BackoffMax bound the wait between reconnect attempts
	// (doubling from min to max; back to min after a successful
	// connection). Defaults 200 ms and 10 s.
	BackoffMin, BackoffMax time.Duration
	// PingEvery is how often a connected Watcher asks libvirt for its
	// version (bounded by RPCTimeout) to notice a libvirtd that still
	// holds the socket open but no longer answers: go-libvirt has no
	// keepalive, and without calls a wedged libvirtd would go unnoticed.
	// Default 30 s; negative disables.
	PingEvery time.Duration
	// AnnounceOnResync makes every (re)connect emit Landed for running
	// domains whose state reason is MIGRATED, POSTCOPY or POSTCOPY_FAILED
	// (they may have landed while nobody watched), once per QEMU process:
	// see Tracker.Resync. The agent wants this on.
	AnnounceOnResync bool
	// ReportConnection makes Run also send Disconnected when a working
	// connection is lost and Resynced after every resync's decisions: the
	// agent suspends refresh announces in between (a long libvirtd outage
	// must not keep broadcasting MACs of VMs an HA controller rebuilt
	// elsewhere). Off, the output carries only Landed, Cancel and Other.
	ReportConnection bool
	// Logger; nil = no logging.
	Logger *zap.Logger
	// Metrics; nil = not counted.
	Metrics *Metrics
}

func (c Config) withDefaults() Config {
	if c.URI == "" {
		c.URI = DefaultURI
	}
	if c.RPCTimeout <= 0 {
		c.RPCTimeout = DefaultRPCTimeout
	}
	if c.BackoffMin <= 0 {
		c.BackoffMin = DefaultBackoffMin
	}
	if c.BackoffMax <= 0 {
		c.BackoffMax = DefaultBackoffMax
	}
	if c.BackoffMax < c.BackoffMin {
		c.BackoffMax = c.BackoffMin
	}
	if c.PingEvery == 0 {
		c.PingEvery = DefaultPingEvery
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.Metrics == nil {
		c.Metrics = NewMetrics(nil) // counted, not exported
	}
	return c
}

// ErrNoSocket reports that none of DefaultSockets exists.
var ErrNoSocket = errors.New("no libvirt socket found")

// SocketPath is the socket a connection would use now: Config.Socket, or
// the first of DefaultSockets that exists.
func (c Config) SocketPath() (string, error) {
	if c.Socket != "" {
		return c.Socket, nil
	}
	candidates := DefaultSockets
	if c.ReadOnly {
		candidates = ReadOnlySockets
	}
	for _, p := range candidates {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w (tried %s)", ErrNoSocket, strings.Join(candidates, ", "))
}
