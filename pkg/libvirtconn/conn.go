// Package libvirtconn is the agent's libvirt client: one connection to
// libvirtd's unix socket (github.com/digitalocean/go-libvirt) with what that
// library lacks (a timeout on every call, detection of a dead socket), and
// the calls the agent makes: look a domain up, its live XML and state, the
// active and running domains, QMP monitor commands, the domain's metadata,
// a libvirt network's DHCP leases, and the lifecycle event subscription.
// Redialer is a connection that dials again after a loss.
//
// pkg/libvirtwatch builds the event watcher on it (reconnect, resync, the
// Tracker).
package libvirtconn

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"

	libvirt "github.com/digitalocean/go-libvirt"
	"go.uber.org/zap"

	"github.com/rarp-announce/rarp-announce/pkg/domxml"
	"github.com/rarp-announce/rarp-announce/pkg/wait"
)

// Errors a Conn's calls wrap (test with errors.Is).
var (
	// ErrTimeout: libvirt did not answer within Config.RPCTimeout; the
	// connection has been closed. It has a Timeout method that returns
	// true, like net.Error and context.DeadlineExceeded, so callers that
	// know nothing of libvirtconn can tell a timeout from other failures.
	ErrTimeout error = timeoutError{}
	// ErrConnectionLost: the connection to libvirt is gone (closed, libvirtd
	// died, or an earlier call timed out).
	ErrConnectionLost = errors.New("connection to libvirt lost")
	// ErrDomainNotFound: libvirt knows no such domain (VIR_ERR_NO_DOMAIN).
	ErrDomainNotFound = errors.New("domain not found")
)

type timeoutError struct{}

func (timeoutError) Error() string { return "libvirt did not answer in time" }
func (timeoutError) Timeout() bool { return true }

// DomainRef names a domain. UUID is canonical lower-case 8-4-4-4-12.
type DomainRef struct {
	Name string
	UUID string
}

func (d DomainRef) String() string { return d.Name + " (" + d.UUID + ")" }

// DomainStatus is one active domain as listed by libvirt.
type DomainStatus struct {
	Domain        DomainRef
	ID            int32
	State, Reason int32 // virDomainState and its reason
}

// RunningDomain is a domain libvirt listed as running, with its id (a new
// one for every QEMU process).
type RunningDomain struct {
	Domain DomainRef
	ID     int32
}

// Conn is one connection to libvirt. Every call returns by the earlier of
// its context and Config.RPCTimeout; a call that times out closes the
// connection (go-libvirt cannot abandon one call), so a wedged libvirtd
// cannot wedge the caller.
//
// Dial gives a Conn for one-shot use (the CLI: lookup, XML, close). A
// libvirtwatch.Watcher dials its own and exposes the current one through
// its methods.
// Conn is safe for concurrent use.
type Conn struct {
	cfg    Config
	log    *zap.Logger
	m      *Metrics
	socket string
	dialer *dialer
	l      *libvirt.Libvirt
	// lvDone is go-libvirt's Disconnected() channel, read once after the
	// handshake (reading it later would race with go-libvirt).
	lvDone    <-chan struct{}
	closeOnce sync.Once
}

// Dial connects to libvirt (Config.Socket or the first existing of
// DefaultSockets) and opens Config.URI. The whole handshake is bounded by
// Config.RPCTimeout and ctx.
func Dial(ctx context.Context, cfg Config) (*Conn, error) {
	cfg = cfg.WithDefaults()
	path, err := cfg.SocketPath()
	if err != nil {
		return nil, err
	}
	d := newDialer(path, cfg.RPCTimeout)
	c := &Conn{cfg: cfg, log: cfg.Logger, m: cfg.Metrics, socket: path, dialer: d}
	c.l = libvirt.NewWithDialer(d)
	err = c.call(ctx, procConnectOpen, func() error { return c.l.ConnectToURI(libvirt.ConnectURI(cfg.URI)) })
	if err != nil {
		d.breakConn()
		return nil, fmt.Errorf("connect to %s at %s: %w", cfg.URI, path, err)
	}
	c.lvDone = c.l.Disconnected()
	return c, nil
}

// Socket is the path this connection uses.
func (c *Conn) Socket() string { return c.socket }

// Done is closed when the connection is lost or closed.
func (c *Conn) Done() <-chan struct{} { return c.dialer.dead }

// Close closes the connection: a polite CONNECT_CLOSE (bounded by a short
// timeout), then the socket; it waits for go-libvirt's goroutines to end.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		select {
		case <-c.dialer.dead:
		default:
			timeout := c.cfg.RPCTimeout
			if timeout > time.Second {
				timeout = time.Second
			}
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			_ = c.call(ctx, procConnectClose, c.l.ConnectClose)
			cancel()
		}
		c.dialer.breakConn()
		select {
		case <-c.lvDone:
		case <-time.After(2 * time.Second):
			c.log.Warn("go-libvirt did not finish disconnecting within 2 s")
		}
	})
	return nil
}

// call runs fn (one go-libvirt RPC, or a few) as rpc does, for calls
// whose only result is their error.
func (c *Conn) call(ctx context.Context, proc string, fn func() error) error {
	_, err := rpc(c, ctx, proc, func() (struct{}, error) { return struct{}{}, fn() })
	return err
}

// rpc runs fn in a goroutine and returns by the earlier of its result, ctx
// and the RPC timeout. On the timeout the connection is closed, which makes
// fn return at once (go-libvirt fails pending calls when its socket
// closes), and rpc waits for that: no goroutine outlives a timed-out call.
// When ctx ends first the caller gets ctx's error at once while fn keeps
// its timeout in the background. fn's result travels with its error over
// the channel, so a caller that returned early never shares a variable
// with the RPC still running.
func rpc[T any](c *Conn, ctx context.Context, proc string, fn func() (T, error)) (T, error) {
	var zero T
	if err := ctx.Err(); err != nil {
		return zero, err
	}
	type result struct {
		v   T
		err error
	}
	start := time.Now()
	done := make(chan result, 1)
	go func() {
		v, err := fn()
		done <- result{v, err}
	}()
	timer := time.NewTimer(c.cfg.RPCTimeout)
	select {
	case r := <-done:
		timer.Stop()
		return r.v, c.finish(proc, start, r.err)
	case <-timer.C:
		c.timedOut(proc)
		<-done
		return zero, fmt.Errorf("libvirt %s: %w (%v; connection closed)", proc, ErrTimeout, c.cfg.RPCTimeout)
	case <-ctx.Done():
		go func() {
			select {
			case r := <-done:
				timer.Stop()
				_ = c.finish(proc, start, r.err)
			case <-timer.C:
				c.timedOut(proc)
				<-done
			}
		}()
		return zero, ctx.Err()
	}
}

func (c *Conn) timedOut(proc string) {
	c.m.rpcTimedOut(proc)
	c.log.Warn("libvirt RPC timed out; closing the connection",
		zap.String("procedure", proc), zap.Duration("timeout", c.cfg.RPCTimeout), zap.String("socket", c.socket))
	c.dialer.breakConn()
}

// finish records a finished call and wraps its error.
func (c *Conn) finish(proc string, start time.Time, err error) error {
	switch {
	case err == nil:
		c.m.rpcDone(proc, time.Since(start), false)
		return nil
	case libvirt.IsNotFound(err):
		c.m.rpcDone(proc, time.Since(start), false)
		return fmt.Errorf("libvirt %s: %w: %v", proc, ErrDomainNotFound, err)
	case c.lost(err):
		c.m.rpcDone(proc, time.Since(start), true)
		return fmt.Errorf("libvirt %s: %w: %v", proc, ErrConnectionLost, err)
	}
	c.m.rpcDone(proc, time.Since(start), true)
	return fmt.Errorf("libvirt %s: %w", proc, err)
}

// lost reports an error that means the connection is gone.
func (c *Conn) lost(err error) bool {
	if wait.Closed(c.dialer.dead) {
		return true
	}
	return errors.Is(err, libvirt.ErrInterrupted) || errors.Is(err, syscall.EINVAL) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)
}

// ref converts a DomainRef to go-libvirt's Domain. libvirt looks domains up
// by UUID but insists on a non-empty name; a missing part is looked up.
func (c *Conn) ref(ctx context.Context, d DomainRef) (libvirt.Domain, error) {
	if d.UUID != "" && d.Name != "" {
		u, err := parseUUID(d.UUID)
		if err != nil {
			return libvirt.Domain{}, err
		}
		return libvirt.Domain{Name: d.Name, UUID: u, ID: -1}, nil
	}
	key := d.UUID
	if key == "" {
		key = d.Name
	}
	if key == "" {
		return libvirt.Domain{}, errors.New("empty domain reference")
	}
	return c.lookup(ctx, key)
}

func (c *Conn) lookup(ctx context.Context, nameOrUUID string) (libvirt.Domain, error) {
	if u, err := parseUUID(nameOrUUID); err == nil {
		dom, err := rpc(c, ctx, procLookupByUUID, func() (libvirt.Domain, error) { return c.l.DomainLookupByUUID(u) })
		if err == nil || !errors.Is(err, ErrDomainNotFound) {
			return dom, err
		}
		// A domain may be *named* like a UUID: fall through.
	}
	return rpc(c, ctx, procLookupByName, func() (libvirt.Domain, error) { return c.l.DomainLookupByName(nameOrUUID) })
}

func parseUUID(s string) (libvirt.UUID, error) {
	u, err := domxml.ParseUUID(s)
	return libvirt.UUID(u), err
}

// DomainRefOf names a go-libvirt domain (a lifecycle event's).
func DomainRefOf(d libvirt.Domain) DomainRef {
	return DomainRef{Name: d.Name, UUID: domxml.FormatUUID(d.UUID)}
}

// LookupDomain finds a domain by UUID (any form libvirt accepts) or name.
func (c *Conn) LookupDomain(ctx context.Context, nameOrUUID string) (DomainRef, error) {
	d, err := c.lookup(ctx, nameOrUUID)
	if err != nil {
		return DomainRef{}, err
	}
	return DomainRefOf(d), nil
}

// DomainXML returns the domain's live XML (virDomainGetXMLDesc, flags 0):
// the one with <target dev> and <alias>. Parse it with domxml.Parse.
func (c *Conn) DomainXML(ctx context.Context, d DomainRef) ([]byte, error) {
	dom, err := c.ref(ctx, d)
	if err != nil {
		return nil, err
	}
	xml, err := rpc(c, ctx, procGetXMLDesc, func() (string, error) { return c.l.DomainGetXMLDesc(dom, 0) })
	return []byte(xml), err
}

// DomainState returns the domain's state and reason (virDomainGetState).
func (c *Conn) DomainState(ctx context.Context, d DomainRef) (state, reason int32, err error) {
	dom, err := c.ref(ctx, d)
	if err != nil {
		return 0, 0, err
	}
	st, err := c.state(ctx, dom)
	return st.state, st.reason, err
}

// domainState is what virDomainGetState answers.
type domainState struct{ state, reason int32 }

func (c *Conn) state(ctx context.Context, dom libvirt.Domain) (domainState, error) {
	return rpc(c, ctx, procGetState, func() (domainState, error) {
		state, reason, err := c.l.DomainGetState(dom, 0)
		return domainState{state, reason}, err
	})
}

// DomainRunning reports whether the domain exists here and is running (not
// paused, not shut off): the agent never announces a MAC of anything else.
// An unknown domain is (false, nil).
func (c *Conn) DomainRunning(ctx context.Context, d DomainRef) (bool, error) {
	state, _, err := c.DomainState(ctx, d)
	if errors.Is(err, ErrDomainNotFound) {
		return false, nil
	}
	return err == nil && state == StateRunning, err
}

// LibVersion returns libvirtd's version (major*1,000,000 + minor*1,000 +
// micro); the watcher's ping.
func (c *Conn) LibVersion(ctx context.Context) (uint64, error) {
	return rpc(c, ctx, procGetLibVersion, c.l.ConnectGetLibVersion)
}

// ActiveDomains lists the active (running or paused) domains with their
// state and reason, in one call (virConnectGetAllDomainStats, "state"
// group only): a resync must not cost one round trip per domain while the
// events queued behind it wait (1,000 domains at 5 ms each held the first
// landing 5 s with one virDomainGetState each).
func (c *Conn) ActiveDomains(ctx context.Context) ([]DomainStatus, error) {
	recs, err := rpc(c, ctx, procGetAllDomainStats, func() ([]libvirt.DomainStatsRecord, error) {
		return c.l.ConnectGetAllDomainStats(nil, uint32(libvirt.DomainStatsState), uint32(libvirt.ConnectGetAllDomainsStatsActive))
	})
	if err != nil {
		return nil, err
	}
	out := make([]DomainStatus, 0, len(recs))
	for _, r := range recs {
		st, ok := stateOf(r.Params)
		if !ok {
			// libvirt always reports the state group it was asked for;
			// a record without it is a domain gone since the listing.
			continue
		}
		out = append(out, DomainStatus{Domain: DomainRefOf(r.Dom), ID: r.Dom.ID, State: st.state, Reason: st.reason})
	}
	return out, nil
}

// stateOf reads state.state and state.reason (ints) from a stats record.
func stateOf(params []libvirt.TypedParam) (domainState, bool) {
	var st domainState
	var haveState bool
	for _, p := range params {
		v, ok := p.Value.I.(int32)
		if !ok {
			continue
		}
		switch p.Field {
		case "state.state":
			st.state, haveState = v, true
		case "state.reason":
			st.reason = v
		}
	}
	return st, haveState
}

// RunningDomains lists the running domains in one call (active and
// running: a paused domain is left out), for the agent's registry of local
// NICs: cheap enough to make at every uplink event.
func (c *Conn) RunningDomains(ctx context.Context) ([]RunningDomain, error) {
	doms, err := rpc(c, ctx, procListAllDomains, func() ([]libvirt.Domain, error) {
		doms, _, err := c.l.ConnectListAllDomains(1, libvirt.ConnectListDomainsActive|libvirt.ConnectListDomainsRunning)
		return doms, err
	})
	if err != nil {
		return nil, err
	}
	out := make([]RunningDomain, 0, len(doms))
	for _, d := range doms {
		out = append(out, RunningDomain{Domain: DomainRefOf(d), ID: d.ID})
	}
	return out, nil
}

// QEMUMonitorCommand sends a QMP command (JSON) to the domain's QEMU through
// libvirt (virDomainQemuMonitorCommand, flags 0) and returns QEMU's reply
// unparsed: a QMP error comes back inside a successful call, and pkg/qmp
// (ParseReply) is the one place that reads replies. libvirt marks the domain tainted (custom
// monitor), needs the read-write socket, and blocks the call while an
// incoming migration job runs.
func (c *Conn) QEMUMonitorCommand(ctx context.Context, d DomainRef, cmd string) (string, error) {
	dom, err := c.ref(ctx, d)
	if err != nil {
		return "", err
	}
	return rpc(c, ctx, procMonitorCommand, func() (string, error) { return c.l.QEMUDomainMonitorCommand(dom, cmd, 0) })
}

// LifecycleEvents subscribes to lifecycle events (subscribe says how stop
// unsubscribes).
func (c *Conn) LifecycleEvents(ctx context.Context) (<-chan libvirt.DomainEventLifecycleMsg, func(), error) {
	return subscribe(ctx, c, c.l.LifecycleEvents)
}

// dialer implements go-libvirt's socket.Dialer: it dials with a timeout and
// a context, and hands out a connection that reports its own death.
type dialer struct {
	path    string
	timeout time.Duration
	ctx     context.Context
	cancel  context.CancelFunc
	dead    chan struct{}

	mu     sync.Mutex
	conn   net.Conn
	broken bool
	once   sync.Once
}

func newDialer(path string, timeout time.Duration) *dialer {
	ctx, cancel := context.WithCancel(context.Background())
	return &dialer{path: path, timeout: timeout, ctx: ctx, cancel: cancel, dead: make(chan struct{})}
}

func (d *dialer) Dial() (net.Conn, error) {
	nd := net.Dialer{Timeout: d.timeout}
	conn, err := nd.DialContext(d.ctx, "unix", d.path)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.broken || d.conn != nil {
		conn.Close()
		return nil, ErrConnectionLost
	}
	d.conn = conn
	return &watchedConn{Conn: conn, d: d}, nil
}

// breakConn closes the connection (now, or as soon as it is dialed) and
// marks it dead.
func (d *dialer) breakConn() {
	d.mu.Lock()
	d.broken = true
	conn := d.conn
	d.mu.Unlock()
	d.cancel()
	if conn != nil {
		conn.Close()
	}
	d.markDead()
}

func (d *dialer) markDead() { d.once.Do(func() { close(d.dead) }) }

// watchedConn marks its dialer dead on the first read error: go-libvirt
// reads until the socket fails, and no read deadline is ever set.
type watchedConn struct {
	net.Conn
	d *dialer
}

func (c *watchedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		c.d.markDead()
	}
	return n, err
}

func (c *watchedConn) Close() error {
	c.d.markDead()
	return c.Conn.Close()
}
