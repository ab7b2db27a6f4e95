package libvirtconn

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
)

// Config configures a Conn made by Dial or a Redialer.
type Config struct {
	// ReadOnly picks the socket from ReadOnlySockets instead of
	// DefaultSockets when Socket is empty.
	ReadOnly bool
	// Socket is libvirt's unix socket; "" = the first of DefaultSockets
	// that exists, looked up again at every dial.
	Socket string
	// URI is the driver URI opened over the socket; "" = qemu:///system.
	// Tests use test:///default (libvirt's test driver, served by libvirtd).
	URI string
	// RPCTimeout bounds every libvirt call (go-libvirt has none); a call
	// that times out closes the connection. Default 5 s.
	RPCTimeout time.Duration
	// Logger; nil = no logging.
	Logger *zap.Logger
	// Metrics; nil = not counted.
	Metrics *Metrics
}

// WithDefaults fills the zero values.
func (c Config) WithDefaults() Config {
	if c.URI == "" {
		c.URI = DefaultURI
	}
	if c.RPCTimeout <= 0 {
		c.RPCTimeout = DefaultRPCTimeout
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
