// Package libvirtwatch watches libvirt for domains that land on this host
// after a live migration, and answers the questions the agent then asks
// libvirt (the domain's live XML, whether it runs) on its current
// connection.
//
// It keeps one pkg/libvirtconn connection subscribed to lifecycle events,
// with reconnection with backoff, a ping, and a resync after every
// (re)connect. Which events mean "landed" is decided by Tracker, a pure
// state machine.
package libvirtwatch

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	libvirt "github.com/digitalocean/go-libvirt"
	"go.uber.org/zap"

	"github.com/rarp-announce/rarp-announce/pkg/libvirtconn"
	"github.com/rarp-announce/rarp-announce/pkg/wait"
)

// Watcher keeps a connection to libvirt, subscribed to lifecycle events,
// for as long as Run runs, and classifies the events. Its query methods use
// the current connection (ErrNotConnected between connections).
type Watcher struct {
	cfg     Config
	log     *zap.Logger
	m       *Metrics
	running atomic.Bool
	ready   atomic.Bool

	mu   sync.RWMutex
	conn *libvirtconn.Conn

	tracker *Tracker // Run's goroutine only
}

// New returns a Watcher; nothing happens until Run.
func New(cfg Config) *Watcher {
	cfg = cfg.withDefaults()
	return &Watcher{cfg: cfg, log: cfg.Logger, m: cfg.Metrics, tracker: NewTracker()}
}

// Ready reports whether the Watcher is connected, subscribed to lifecycle
// events and has finished its resync (for /readyz).
func (w *Watcher) Ready() bool { return w.ready.Load() }

// ErrNotConnected: the Watcher has no connection at the moment.
var ErrNotConnected = errors.New("not connected to libvirt")

// Conn is the current connection, or ErrNotConnected.
func (w *Watcher) Conn() (*libvirtconn.Conn, error) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.conn == nil {
		return nil, ErrNotConnected
	}
	return w.conn, nil
}

func (w *Watcher) setConn(c *libvirtconn.Conn) {
	w.mu.Lock()
	w.conn = c
	w.mu.Unlock()
}

// DomainXML returns the domain's live XML through the current connection.
func (w *Watcher) DomainXML(ctx context.Context, d DomainRef) ([]byte, error) {
	c, err := w.Conn()
	if err != nil {
		return nil, err
	}
	return c.DomainXML(ctx, d)
}

// LookupDomain finds a domain by UUID or name through the current connection.
func (w *Watcher) LookupDomain(ctx context.Context, nameOrUUID string) (DomainRef, error) {
	c, err := w.Conn()
	if err != nil {
		return DomainRef{}, err
	}
	return c.LookupDomain(ctx, nameOrUUID)
}

// DomainRunning reports whether the domain runs here, through the current
// connection.
func (w *Watcher) DomainRunning(ctx context.Context, d DomainRef) (bool, error) {
	c, err := w.Conn()
	if err != nil {
		return false, err
	}
	return c.DomainRunning(ctx, d)
}

// QEMUMonitorCommand sends a QMP command through the current connection
// (which must use a read-write socket).
func (w *Watcher) QEMUMonitorCommand(ctx context.Context, d DomainRef, cmd string) (string, error) {
	c, err := w.Conn()
	if err != nil {
		return "", err
	}
	return c.QEMUMonitorCommand(ctx, d, cmd)
}

// DHCPLeases returns a libvirt network's DHCP leases of mac through the
// current connection (libvirtconn.Conn.DHCPLeases).
func (w *Watcher) DHCPLeases(ctx context.Context, network, mac string) ([]netip.Addr, error) {
	c, err := w.Conn()
	if err != nil {
		return nil, err
	}
	return c.DHCPLeases(ctx, network, mac)
}

// Run connects, subscribes to lifecycle events, resyncs, and sends every
// event, classified, to out, until ctx ends; then it returns nil. Losing
// libvirt (libvirtd restarted, socket gone, a call timing out) never ends
// it: it logs, waits (BackoffMin doubling up to BackoffMax; the first retry
// after a loss is immediate), reconnects, re-subscribes and resyncs. Sends
// to out block (events queue in go-libvirt meanwhile), so read out promptly.
// Only one Run at a time.
func (w *Watcher) Run(ctx context.Context, out chan<- Event) error {
	if out == nil {
		return errors.New("libvirtwatch: Run needs an output channel")
	}
	if !w.running.CompareAndSwap(false, true) {
		return errors.New("libvirtwatch: Run is already running")
	}
	defer w.running.Store(false)

	backoff := wait.Backoff{Min: w.cfg.BackoffMin, Max: w.cfg.BackoffMax}
	failures := 0
	var lostAt time.Time // zero until a working connection was lost
	for {
		var established bool
		var err error
		c, derr := libvirtconn.Dial(ctx, w.cfg.Conn)
		if derr == nil {
			established, err = w.session(ctx, c, out, lostAt)
			_ = c.Close()
		} else {
			err = derr
		}
		if ctx.Err() != nil {
			return nil
		}
		if established {
			w.log.Warn("lost the connection to libvirt; reconnecting", zap.Error(err))
			if w.cfg.ReportConnection && !send(ctx, out, Event{Kind: Disconnected, DomainID: -1, Event: -1, Detail: -1, Received: time.Now()}) {
				return nil
			}
			lostAt = time.Now()
			backoff.Reset()
			failures = 0
			continue
		}
		w.m.connectFailed()
		failures++
		pause := backoff.Next()
		if failures == 1 {
			w.log.Warn("cannot connect to libvirt; retrying", zap.Error(err), zap.Duration("backoff", pause))
		} else {
			w.log.Debug("still cannot connect to libvirt", zap.Error(err), zap.Int("attempts", failures), zap.Duration("backoff", pause))
		}
		if !wait.Sleep(ctx.Done(), pause) {
			return nil
		}
	}
}

// session runs one connection: subscribe, resync, relay events. established
// reports whether it got as far as ready (then a loss is a reconnect, not a
// failed attempt).
func (w *Watcher) session(ctx context.Context, c *libvirtconn.Conn, out chan<- Event, lostAt time.Time) (established bool, err error) {
	events, stop, err := c.LifecycleEvents(ctx)
	if err != nil {
		return false, err
	}
	defer stop()
	// Hot-plugged and unplugged devices (a NIC added to a running
	// domain): without them the agent learns of a new NIC only at the
	// domain's next start. A libvirt that refuses them costs nothing else.
	devices, stopDevices, err := c.DeviceEvents(ctx)
	if err != nil {
		if errors.Is(err, libvirtconn.ErrConnectionLost) || ctx.Err() != nil {
			return false, err
		}
		w.log.Warn("libvirt refused device events: hot-plugged NICs are known at the domain's next start only", zap.Error(err))
	} else {
		defer stopDevices()
	}
	w.setConn(c)
	defer w.setConn(nil)
	if err := w.resync(ctx, c, out); err != nil {
		return false, err
	}
	w.ready.Store(true)
	w.m.setConnected(true)
	defer func() {
		w.ready.Store(false)
		w.m.setConnected(false)
	}()
	if w.cfg.PingEvery > 0 {
		pctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); w.ping(pctx, c) }()
		defer func() { cancel(); wg.Wait() }()
	}
	if lostAt.IsZero() {
		w.log.Info("connected to libvirt", zap.String("socket", c.Socket()), zap.String("uri", w.cfg.Conn.URI))
	} else {
		w.m.reconnected()
		w.log.Info("reconnected to libvirt", zap.String("socket", c.Socket()), zap.Duration("after", time.Since(lostAt)))
	}
	for {
		select {
		case <-ctx.Done():
			return true, ctx.Err()
		case <-c.Done():
			return true, libvirtconn.ErrConnectionLost
		case msg, ok := <-events:
			if !ok {
				return true, libvirtconn.ErrConnectionLost
			}
			if !w.relay(ctx, msg, out) {
				return true, ctx.Err()
			}
		case d, ok := <-devices:
			if !ok {
				return true, libvirtconn.ErrConnectionLost
			}
			ev := deviceChanged(d)
			ev.Received = time.Now()
			w.log.Debug("device event", zap.String("domain", ev.Domain.Name), zap.String("event", ev.Name()))
			if !send(ctx, out, ev) {
				return true, ctx.Err()
			}
		}
	}
}

// ping calls libvirt every PingEvery until ctx ends; a call that times out
// closes the connection (libvirtconn.Conn), which ends the session.
func (w *Watcher) ping(ctx context.Context, c *libvirtconn.Conn) {
	wait.Every(ctx, w.cfg.PingEvery, func(ctx context.Context) {
		if _, err := c.LibVersion(ctx); err != nil && ctx.Err() == nil {
			w.log.Debug("libvirt ping failed", zap.Error(err))
		}
	})
}

func (w *Watcher) relay(ctx context.Context, msg libvirt.DomainEventLifecycleMsg, out chan<- Event) bool {
	now := time.Now()
	d := libvirtconn.DomainRefOf(msg.Dom)
	w.m.event(msg.Event, msg.Detail)
	kind := w.tracker.Observe(d, msg.Dom.ID, msg.Event, msg.Detail)
	w.m.decision(kind, false)
	ev := Event{Kind: kind, Domain: d, DomainID: msg.Dom.ID, Event: msg.Event, Detail: msg.Detail, Received: now, Origin: -1}
	if kind == Landed {
		ev.Origin = w.tracker.Origin(d.UUID)
	}
	// At debug, landings too: the agent logs each landing at info with
	// the time read here ("landed", received), and a second line per
	// landing, written in this reader's goroutine, held up the next
	// event in a storm.
	if ce := w.log.Check(zap.DebugLevel, "lifecycle event"); ce != nil {
		ce.Write(zap.String("domain", d.Name), zap.String("uuid", d.UUID), zap.String("event", ev.Name()), zap.Stringer("kind", kind))
	}
	return send(ctx, out, ev)
}

// resync lists the active domains and emits what Tracker.Resync decides.
func (w *Watcher) resync(ctx context.Context, c *libvirtconn.Conn, out chan<- Event) error {
	active, err := c.ActiveDomains(ctx)
	if err != nil {
		return err
	}
	w.m.resynced()
	decisions := w.tracker.Resync(active, w.cfg.AnnounceOnResync)
	landed := 0
	now := time.Now()
	for _, d := range decisions {
		w.m.decision(d.Kind, true)
		if d.Kind == Landed {
			landed++
		}
		ev := Event{Kind: d.Kind, Domain: d.Domain, DomainID: d.ID, Event: -1, Detail: -1, Received: now, Resync: true}
		if !send(ctx, out, ev) {
			return ctx.Err()
		}
	}
	w.log.Info("resynced with libvirt", zap.Int("active_domains", len(active)),
		zap.Int("landed", landed), zap.Int("cancelled", len(decisions)-landed))
	if w.cfg.ReportConnection && !send(ctx, out, Event{Kind: Resynced, DomainID: -1, Event: -1, Detail: -1, Received: now, Resync: true}) {
		return ctx.Err()
	}
	return nil
}

func send(ctx context.Context, out chan<- Event, ev Event) bool {
	select {
	case out <- ev:
		return true
	case <-ctx.Done():
		return false
	}
}
