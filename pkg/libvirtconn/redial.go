package libvirtconn

import (
	"context"
	"errors"
	"sync"

	"go.uber.org/zap"
)

// Redialer is a Conn of its own, dialed on first use and again whenever the
// last one was lost (libvirtd restarted, a call timed out). It is for QMP
// monitor commands, which must not share the event watcher's connection
// (libvirtwatch.Watcher):
//
//   - libvirtd holds a monitor command while the domain has a migration job
//     (on the destination: until the incoming migration ends, the whole
//     post-copy phase after RESUMED/POSTCOPY), and a call that outlasts the
//     RPC timeout closes its connection. On the watcher's connection that
//     would drop the event subscription and fail every call in flight
//     (other domains' XML, the ping) and force a reconnect and resync.
//   - libvirtd serves at most max_client_requests (default 5) calls of one
//     connection at a time; blocked monitor commands on the watcher's
//     connection would stall its other calls. On one connection of their
//     own they also never occupy more than that many of libvirtd's workers,
//     which the host's other clients (nova-compute) share.
//
// The watcher can then stay on the read-only socket; only the Redialer,
// when a NIC on the qemu strategy lands, opens the read-write one.
// Redialer is safe for concurrent use.
type Redialer struct {
	cfg Config
	log *zap.Logger

	mu     sync.Mutex
	c      *Conn
	closed bool
}

// ErrClosed: the Redialer was closed.
var ErrClosed = errors.New("libvirt connection closed")

// NewRedialer returns a Redialer that dials with cfg (see Dial) when first
// used. cfg.ReadOnly picks the socket when cfg.Socket is empty: QMP needs
// the read-write one.
func NewRedialer(cfg Config) *Redialer {
	cfg = cfg.WithDefaults()
	return &Redialer{cfg: cfg, log: cfg.Logger}
}

// Conn returns the connection, dialing a new one if there is none or the
// last was lost. Concurrent callers share one dial.
func (r *Redialer) Conn(ctx context.Context) (*Conn, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, ErrClosed
	}
	if r.c != nil {
		select {
		case <-r.c.Done():
			r.c.Close()
			r.c = nil
		default:
			return r.c, nil
		}
	}
	c, err := Dial(ctx, r.cfg)
	if err != nil {
		return nil, err
	}
	r.log.Info("connected to libvirt for QEMU monitor commands", zap.String("socket", c.Socket()))
	r.c = c
	return c, nil
}

// QEMUMonitorCommand is Conn.QEMUMonitorCommand on the current connection.
func (r *Redialer) QEMUMonitorCommand(ctx context.Context, d DomainRef, cmd string) (string, error) {
	c, err := r.Conn(ctx)
	if err != nil {
		return "", err
	}
	return c.QEMUMonitorCommand(ctx, d, cmd)
}

// Close closes the connection; later calls fail with ErrClosed.
func (r *Redialer) Close() error {
	r.mu.Lock()
	c := r.c
	r.c, r.closed = nil, true
	r.mu.Unlock()
	if c != nil {
		return c.Close()
	}
	return nil
}
