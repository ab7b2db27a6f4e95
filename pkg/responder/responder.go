// Package responder answers RARP requests from a rarptable.Table, with
// Debian rarpd's rules (see decide), from an in-memory table instead of
// re-reading /etc/ethers for every request. One receive ring per
// interface; see ring.go for how frames move and why.
//
// Embedding it:
//
//	holder := rarptable.NewHolder(nil)
//	reloader := &rarptable.Reloader{Loader: &rarptable.Loader{Files: files}, Holder: holder, Logger: log}
//	if err := reloader.Reload(ctx, "start"); err != nil { ... }
//	m := responder.NewMetrics(registry)
//	_ = rarptable.NewMetrics(holder, registry)
//	r, err := responder.New(responder.Config{Interfaces: []string{"br0"}, Table: holder, Logger: log, Metrics: m})
//	go reloader.Watch(ctx)
//	err = r.Run(ctx) // until ctx ends; on SIGHUP: reloader.Reload(ctx, "SIGHUP"); r.RefreshBootDir()
package responder

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"

	"github.com/rarp-announce/rarp-announce/pkg/rarp"
	"github.com/rarp-announce/rarp-announce/pkg/rarptable"
)

// DefaultCoalesce is how long the loop waits under load before it drains
// the ring again (see ring.go).
const DefaultCoalesce = 100 * time.Microsecond

// Config configures a Responder.
type Config struct {
	// Interfaces to answer on, by name: Ethernet devices, bridges, VLAN
	// sub-interfaces (eth0.100), macvlans. Requests are answered on the
	// interface they arrive on, from its MAC and IPv4 address.
	Interfaces []string
	// Table is what requests are answered from; swap tables in it to
	// reload (rarptable.Reloader does).
	Table *rarptable.Holder
	// OffLink answers with a mapped address that is not on the
	// receiving interface's subnet, with spa 0.0.0.0 (rarpd -o).
	OffLink bool
	// BootDir, when set, answers only for addresses that have a boot file
	// there: a name starting with the address in 8 upper-case hex digits
	// (rarpd without -e).
	BootDir string
	// Logger receives events; unknown and malformed requests only at
	// debug level. nil: no logging.
	Logger *zap.Logger
	// Metrics counts requests and replies per interface; nil: none.
	Metrics *Metrics
	// Coalesce is the wait under load between two drains of the ring
	// (0: DefaultCoalesce; negative: never wait, go back to epoll).
	Coalesce time.Duration
	// RingFrames is the receive ring size per interface (0:
	// DefaultRingFrames).
	RingFrames int
	// ARPAdvise adds each answered client (mapped IPv4 -> its MAC) to the
	// neighbour table of the receiving interface, as rarpd does with
	// SIOCSARP, for boot PROMs that cannot answer ARP. Off by default: it
	// fills the host's neighbour table with one entry per client. It runs
	// off the receive loop and never delays a reply.
	ARPAdvise bool

	// Tests only: the netlink subscriptions' receive buffer (0: the
	// system default), and a hook run before each update is taken, which
	// a test blocks to overflow the subscription.
	receiveBuffer int
	beforeUpdate  func()
}

// Responder answers RARP requests on a set of interfaces.
type Responder struct {
	cfg   Config
	log   *zap.Logger
	rules rules
	boot  *bootDir
	nl    *netlink.Handle // bound to the namespace New ran in
	ns    netns.NsHandle  // that namespace, to reopen interfaces in it
	links []*link

	advise    chan neighbour // ARPAdvise work, off the receive loop
	subMu     sync.Mutex
	sub       *subscription // link and address updates (follow.go)
	resyncs   atomic.Int64  // subscriptions replaced after an error
	ran       atomic.Bool
	closeOnce sync.Once
}

// link is one interface being served.
type link struct {
	name  string
	index atomic.Int32 // changes when the interface is recreated
	state atomic.Pointer[ifState]
	count *counters
	ring  atomic.Pointer[packetRing]
	stop  atomic.Bool
	back  chan struct{} // a link of this name was announced (follow.go)
	r     *Responder

	// One limit per kind of warning: a flood of off-link requests must
	// not hide that replies are failing (they shared one, found in
	// review).
	sendWarn, offLinkWarn warnLimit
}

// New checks the interfaces and opens a receive ring on each, in the
// network namespace of the calling thread (a test or an agent may call
// it from a thread switched into another namespace; everything later
// uses the sockets opened here).
func New(cfg Config) (*Responder, error) {
	if len(cfg.Interfaces) == 0 {
		return nil, errors.New("no interface to answer on")
	}
	if cfg.Table == nil {
		return nil, errors.New("no table")
	}
	if cfg.Coalesce == 0 {
		cfg.Coalesce = DefaultCoalesce
	}
	r := &Responder{cfg: cfg, log: cfg.Logger, rules: rules{offLink: cfg.OffLink}}
	if cfg.ARPAdvise {
		r.advise = make(chan neighbour, 4096)
	}
	if r.log == nil {
		r.log = zap.NewNop()
	}
	if cfg.BootDir != "" {
		b, err := newBootDir(cfg.BootDir, r.log)
		if err != nil {
			return nil, err
		}
		r.boot, r.rules.boot = b, b
	}
	var err error
	if r.ns, err = netns.Get(); err != nil {
		return nil, fmt.Errorf("network namespace: %w", err)
	}
	if r.nl, err = netlink.NewHandle(unix.NETLINK_ROUTE); err != nil {
		r.ns.Close()
		return nil, fmt.Errorf("netlink: %w", err)
	}
	// Subscribe before reading the interfaces, so no change between the
	// read and the subscription is missed.
	if r.sub, err = r.subscribe(); err != nil {
		r.close()
		return nil, err
	}
	seen := map[string]bool{}
	for _, name := range cfg.Interfaces {
		if seen[name] {
			continue
		}
		seen[name] = true
		l := &link{name: name, count: cfg.Metrics.link(name), r: r, back: make(chan struct{}, 1)}
		if err := l.open(); err != nil {
			r.close()
			return nil, err
		}
		r.links = append(r.links, l)
	}
	return r, nil
}

// open looks the interface up and opens its ring (in the namespace of the
// calling thread).
func (l *link) open() error {
	nl, err := l.r.nl.LinkByName(l.name)
	if err != nil {
		return fmt.Errorf("interface %s: %w", l.name, err)
	}
	st, err := l.r.readState(nl)
	if err != nil {
		return err
	}
	ring, err := openRing(nl.Attrs().Index, l.r.cfg.RingFrames)
	if err != nil {
		return fmt.Errorf("interface %s: %w", l.name, err)
	}
	l.index.Store(int32(nl.Attrs().Index))
	l.state.Store(st)
	l.ring.Store(ring)
	return nil
}

// readState reads an interface's MAC and IPv4 addresses.
func (r *Responder) readState(nl netlink.Link) (*ifState, error) {
	a := nl.Attrs()
	mac, ok := rarp.MACFrom(a.HardwareAddr)
	if !ok {
		return nil, fmt.Errorf("interface %s: no Ethernet address (type %s)", a.Name, nl.Type())
	}
	addrs, err := r.nl.AddrList(nl, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("interface %s: addresses: %w", a.Name, err)
	}
	st := &ifState{mac: mac}
	for _, ad := range addrs {
		ip4 := ad.IP.To4()
		if ip4 == nil || ad.Mask == nil || len(ad.Mask) != 4 {
			continue
		}
		local := uint32(ip4[0])<<24 | uint32(ip4[1])<<16 | uint32(ip4[2])<<8 | uint32(ip4[3])
		mask := uint32(ad.Mask[0])<<24 | uint32(ad.Mask[1])<<16 | uint32(ad.Mask[2])<<8 | uint32(ad.Mask[3])
		if mask == 0 {
			continue // rarpd skips addresses without a prefix
		}
		st.addrs = append(st.addrs, ifAddr{local: local, prefix: local & mask, mask: mask})
	}
	return st, nil
}

// Run answers requests until ctx ends, then closes the sockets. It may be
// called once.
func (r *Responder) Run(ctx context.Context) error {
	if !r.ran.CompareAndSwap(false, true) {
		return errors.New("responder: Run called twice")
	}
	defer r.Close()
	var wg sync.WaitGroup
	for _, l := range r.links {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.run(ctx)
		}()
		r.log.Info("answering RARP requests", zap.String("interface", l.name), zap.Int32("ifindex", l.index.Load()),
			zap.Stringer("mac", l.state.Load().mac), zap.Strings("ipv4", l.state.Load().addrStrings()))
	}
	if r.boot != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.boot.watch(ctx)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.track(ctx)
	}()
	if r.advise != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.adviseLoop(ctx)
		}()
	}
	<-ctx.Done()
	for _, l := range r.links {
		l.halt()
	}
	wg.Wait()
	return nil
}

// RefreshBootDir reads the boot directory again (on SIGHUP; changes are
// also picked up by a directory watch).
func (r *Responder) RefreshBootDir() error {
	if r.boot == nil {
		return nil
	}
	return r.boot.refresh()
}

// Stats returns each interface's counters.
func (r *Responder) Stats() map[string]Stats {
	out := map[string]Stats{}
	for _, l := range r.links {
		out[l.name] = l.count.snapshot()
	}
	return out
}

// Close releases the sockets of a Responder whose Run was never called
// (Run releases them when it returns). It must not be called while Run
// runs: cancel Run's context instead.
func (r *Responder) Close() error {
	r.closeOnce.Do(r.close)
	return nil
}

func (r *Responder) close() {
	r.subMu.Lock()
	if r.sub != nil {
		r.sub.end()
	}
	r.subMu.Unlock()
	for _, l := range r.links {
		l.halt()
		if ring := l.ring.Swap(nil); ring != nil {
			ring.close()
		}
	}
	if r.nl != nil {
		r.nl.Close()
	}
	if r.ns.IsOpen() {
		r.ns.Close()
	}
}

func (s *ifState) addrStrings() []string {
	var out []string
	for _, a := range s.addrs {
		ones := 0
		for m := a.mask; m != 0; m <<= 1 {
			ones++
		}
		out = append(out, fmt.Sprintf("%d.%d.%d.%d/%d", a.local>>24, a.local>>16&0xff, a.local>>8&0xff, a.local&0xff, ones))
	}
	return out
}

// halt makes the serving loop return and wakes it if it waits.
func (l *link) halt() {
	l.stop.Store(true)
	if ring := l.ring.Load(); ring != nil {
		_ = ring.file.SetReadDeadline(time.Unix(1, 0))
	}
}

// run serves the interface until ctx ends, reopening it if it is deleted
// and created again.
func (l *link) run(ctx context.Context) {
	statsTick := time.NewTicker(time.Second)
	defer statsTick.Stop()
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-statsTick.C:
				if ring := l.ring.Load(); ring != nil {
					l.count.n[tRingDrops].Add(ring.drops())
				}
			}
		}
	}()
	for {
		l.serve()
		if ctx.Err() != nil {
			return
		}
		// The interface went away. Reopen it when it is back (a bridge
		// recreated by the network configuration).
		if old := l.ring.Swap(nil); old != nil {
			l.count.n[tRingDrops].Add(old.drops())
			old.close()
		}
		for l.ring.Load() == nil {
			select {
			case <-ctx.Done():
				return
			case <-l.back: // a link of this name appeared
			case <-time.After(time.Second):
			}
			// Cleared before the reopen, not by it: a halt during
			// the reopen (the new link deleted again) then holds.
			l.stop.Store(false)
			if err := l.reopen(); err == nil {
				if ctx.Err() != nil {
					// Stopped while reopening: a shutdown's halt may
					// have come before the clear, with no ring to
					// wake; serving now would block shutdown for
					// good (found in review).
					return
				}
				l.r.log.Info("interface is back", zap.String("interface", l.name), zap.Int32("ifindex", l.index.Load()))
			}
		}
	}
}

// reopen opens the ring again in the responder's namespace: the netlink
// handle is bound to it, and the ring socket must be too.
func (l *link) reopen() error {
	return l.r.inNamespace(l.open)
}

// serve runs the receive loop until halt.
func (l *link) serve() {
	ring := l.ring.Load()
	if ring == nil {
		return
	}
	var (
		bc       batchCounts
		got      int
		coalesce = l.r.cfg.Coalesce
		holder   = l.r.cfg.Table
	)
	drain := func() {
		st := l.state.Load()
		view := holder.Load().View(l.name)
		for {
			f := ring.next()
			if f == nil {
				break
			}
			got++
			d := decide(f, st, &view, &l.r.rules, ring.slot())
			l.account(&d, &bc)
			ring.release()
			if d.out == outReply {
				ring.n++
				if ring.n == batchSize {
					l.flush(&bc)
				}
			}
		}
		if ring.n > 0 {
			l.flush(&bc)
		}
		l.count.add(&bc)
	}
	fn := func(uintptr) bool {
		for !l.stop.Load() {
			got = 0
			drain()
			if got < 2 || coalesce < 0 {
				return false // wait in epoll for the next request
			}
			// Under load: let requests gather, then drain again.
			ts := unix.NsecToTimespec(int64(coalesce))
			unix.RawSyscall(unix.SYS_NANOSLEEP, uintptr(unsafe.Pointer(&ts)), 0, 0)
		}
		return true
	}
	for !l.stop.Load() {
		if err := ring.rc.Read(fn); err != nil && !l.stop.Load() {
			l.r.log.Error("receive loop", zap.String("interface", l.name), zap.Error(err))
			time.Sleep(100 * time.Millisecond)
		}
	}
}

func (l *link) flush(bc *batchCounts) {
	ring := l.ring.Load()
	queued := ring.n
	sent, err := ring.flush()
	bc.n[tReplies] += uint64(sent)
	if err != nil {
		bc.n[tSendErrors] += uint64(queued - sent)
		if n, ok := l.sendWarn.now(); ok {
			l.r.log.Warn("replies not sent", zap.String("interface", l.name), zap.Int("count", queued-sent), zap.Error(err), zap.Int("suppressed_since_last", n))
		}
	}
}

// account counts one decision and logs it at debug level (off-link
// refusals, a sign of a wrong table or address, at warn level, at most
// once a second).
func (l *link) account(d *decision, bc *batchCounts) {
	log := l.r.log
	switch d.out {
	case outReply:
		bc.n[tRequests]++
		if l.r.advise != nil {
			select {
			case l.r.advise <- neighbour{ifindex: l.index.Load(), ip: d.ip, mac: d.req.TargetHardware}:
			default: // the advice is best effort; the reply is not
			}
		}
		if ce := log.Check(zapcore.DebugLevel, "reply"); ce != nil {
			ce.Write(zap.String("interface", l.name), zap.Stringer("mac", d.req.TargetHardware),
				zap.Stringer("ip", addr4(d.ip)), zap.Stringer("to", d.req.Source))
		}
	case outUnknown:
		bc.n[tRequests]++
		bc.n[tUnknown]++
		if ce := log.Check(zapcore.DebugLevel, "unknown MAC, not answered"); ce != nil {
			ce.Write(zap.String("interface", l.name), zap.Stringer("mac", d.req.TargetHardware), zap.Stringer("from", d.req.Source))
		}
	case outOffLink:
		bc.n[tRequests]++
		bc.n[tOffLink]++
		if n, ok := l.offLinkWarn.now(); ok {
			log.Warn("mapped address is not on the interface's subnet, not answered (see --off-link)", zap.String("interface", l.name),
				zap.Stringer("mac", d.req.TargetHardware), zap.Stringer("ip", addr4(d.ip)), zap.Int("suppressed_since_last", n))
		}
	case outNotBootable:
		bc.n[tRequests]++
		bc.n[tNotBootable]++
		if ce := log.Check(zapcore.DebugLevel, "no boot file, not answered"); ce != nil {
			ce.Write(zap.String("interface", l.name), zap.Stringer("mac", d.req.TargetHardware), zap.Stringer("ip", addr4(d.ip)),
				zap.String("file", fmt.Sprintf("%08X", uint32(d.ip[0])<<24|uint32(d.ip[1])<<16|uint32(d.ip[2])<<8|uint32(d.ip[3]))))
		}
	case outMalformed:
		bc.malformed[d.reason]++
		if ce := log.Check(zapcore.DebugLevel, "malformed RARP request"); ce != nil {
			ce.Write(zap.String("interface", l.name), zap.String("reason", malformedReasons[d.reason]))
		}
	}
}

// warnLimit rate-limits one kind of warning of one interface to one a
// second. Only the link's serve loop uses it: no lock.
type warnLimit struct {
	last       time.Time
	suppressed int
}

// now reports whether a warning may be logged now, and how many were
// suppressed since the last one.
func (w *warnLimit) now() (suppressed int, ok bool) {
	now := time.Now()
	if now.Sub(w.last) < time.Second {
		w.suppressed++
		return 0, false
	}
	n := w.suppressed
	w.last, w.suppressed = now, 0
	return n, true
}

type addr4 [4]byte

func (a addr4) String() string { return fmt.Sprintf("%d.%d.%d.%d", a[0], a[1], a[2], a[3]) }
