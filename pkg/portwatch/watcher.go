// Package portwatch tells when a VM's port can carry an announce: one
// netlink link subscription keeps a view of every link in a network
// namespace (name, index, kind, master, lower device, admin state, carrier,
// operational state, bridge port STP state), and any number of callers wait
// on it for a port to become ready (WaitReady) or to change after it did
// (Watch).
//
// "Ready" means the frames of an announce can get through: the port exists,
// is attached to the master asked for (a macvtap: stacked on it), is up
// (admin up, carrier, operstate up or unknown) and, when it is a bridge port,
// in the forwarding STP state. A tap that no process holds is admin up but
// has no carrier and its bridge port is disabled: the bridge drops frames for
// it, so it is not ready. See State.Up and State.Forwarding.
package portwatch

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/rarp-announce/rarp-announce/pkg/wait"
)

// Options configures a Watcher. The zero value watches the current network
// namespace with the defaults below.
type Options struct {
	// Namespace to watch; nil is the caller's. Tests pass a test
	// namespace's handle.
	Namespace *netns.NsHandle
	// Logger gets subscription errors and resyncs; nil logs nothing.
	Logger *zap.Logger
	// Metrics counts waits, changes and resyncs; nil counts nothing.
	Metrics *Metrics
	// Settle is how long a port must stay ready after a change before
	// Watch reports it; changes closer together are reported once.
	// Default 20 ms.
	Settle time.Duration
	// ReceiveBuffer is the netlink socket's receive buffer in bytes;
	// default 4 MiB. When a burst of link messages overflows it, the
	// watcher resubscribes and rebuilds its view from a dump.
	ReceiveBuffer int

	// beforeReceive, when set (tests only), runs before each read from
	// the socket: a test blocks it to overflow the socket.
	beforeReceive func()
}

// DefaultSettle is the default Options.Settle.
const DefaultSettle = 20 * time.Millisecond

const defaultReceiveBuffer = 4 << 20

// ErrClosed is returned by waits on a closed Watcher.
var ErrClosed = errors.New("port watcher closed")

// Watcher keeps a view of the links of one network namespace from a single
// netlink subscription. Its methods are safe for concurrent use.
type Watcher struct {
	opts Options
	log  *zap.Logger
	m    *Metrics

	closeOnce sync.Once
	closed    chan struct{} // closed by Close
	done      chan struct{} // closed when the reader exits
	synced    chan struct{} // closed after the first full dump

	mu      sync.Mutex
	sock    *nl.NetlinkSocket // current subscription, for Close
	links   map[int]*link     // by interface index
	names   map[string]int    // name -> index
	gen     uint64            // subscription generation
	waiters map[string]map[*waiter]struct{}
	watches map[string]map[*watch]struct{}
}

// link is the view of one interface; names of masters and lower devices
// are resolved when a State is taken, so renames need no bookkeeping.
type link struct {
	State
	gen uint64 // generation that last described it
}

// New subscribes to link updates, loads the current links, and returns
// once the view is complete (or ctx ends).
func New(ctx context.Context, opts Options) (*Watcher, error) {
	if opts.Settle <= 0 {
		opts.Settle = DefaultSettle
	}
	if opts.ReceiveBuffer <= 0 {
		opts.ReceiveBuffer = defaultReceiveBuffer
	}
	w := &Watcher{
		opts:    opts,
		log:     opts.Logger,
		m:       opts.Metrics,
		closed:  make(chan struct{}),
		done:    make(chan struct{}),
		synced:  make(chan struct{}),
		links:   map[int]*link{},
		names:   map[string]int{},
		waiters: map[string]map[*waiter]struct{}{},
		watches: map[string]map[*watch]struct{}{},
	}
	if w.log == nil {
		w.log = zap.NewNop()
	}
	return w, w.start(ctx)
}

func (w *Watcher) start(ctx context.Context) error {
	s, seq, err := w.subscribe()
	if err != nil {
		return err
	}
	go w.run(s, seq)
	select {
	case <-w.synced:
		return nil
	case <-ctx.Done():
		w.Close()
		return fmt.Errorf("portwatch: initial link dump: %w", ctx.Err())
	}
}

// Close ends the subscription. Pending WaitReady calls return ErrClosed
// and Watch channels close.
func (w *Watcher) Close() error {
	w.closeOnce.Do(func() {
		w.mu.Lock()
		close(w.closed)
		if w.sock != nil {
			w.sock.Close()
		}
		w.mu.Unlock()
		<-w.done
		w.mu.Lock()
		for _, set := range w.watches {
			for wa := range set {
				w.endWatch(wa)
			}
		}
		w.mu.Unlock()
	})
	return nil
}

// subscribe opens a subscription to the link group and asks for a dump of
// all links on it, so that the dump and later changes arrive in order on
// one socket. It returns the dump's sequence number. The request is
// addressed to the kernel alone (see sendToKernel), so CAP_NET_RAW without
// CAP_NET_ADMIN is enough.
func (w *Watcher) subscribe() (*nl.NetlinkSocket, uint32, error) {
	ns := netns.None()
	if w.opts.Namespace != nil {
		ns = *w.opts.Namespace
	}
	s, err := nl.SubscribeAt(ns, netns.None(), unix.NETLINK_ROUTE, unix.RTNLGRP_LINK)
	if err != nil {
		return nil, 0, fmt.Errorf("portwatch: subscribe to link updates: %w", err)
	}
	// A forced size needs CAP_NET_ADMIN; without it the kernel caps the
	// buffer at net.core.rmem_max, and overflows are handled by resyncs.
	if err := s.SetReceiveBufferSize(w.opts.ReceiveBuffer, true); err != nil {
		_ = s.SetReceiveBufferSize(w.opts.ReceiveBuffer, false)
	}
	req := nl.NewNetlinkRequest(unix.RTM_GETLINK, unix.NLM_F_DUMP)
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	req.AddData(nl.NewRtAttr(unix.IFLA_EXT_MASK, nl.Uint32Attr(rtextFilterSkipStats)))
	if err := sendToKernel(s, req); err != nil {
		s.Close()
		return nil, 0, fmt.Errorf("portwatch: request link dump: %w", err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	select {
	case <-w.closed:
		s.Close()
		return nil, 0, ErrClosed
	default:
	}
	w.sock = s
	w.gen++
	return s, req.Seq, nil
}

// run reads the subscription until Close, resubscribing (with a fresh dump)
// whenever reading fails: after a receive buffer overflow (ENOBUFS) the
// view may have missed changes.
func (w *Watcher) run(s *nl.NetlinkSocket, seq uint32) {
	defer close(w.done)
	backoff := wait.Backoff{Min: 50 * time.Millisecond, Max: 5 * time.Second}
	for {
		dumped, err := w.read(s, seq)
		s.Close()
		if w.isClosed() {
			return
		}
		w.log.Warn("link updates lost; resubscribing", zap.Error(err))
		w.m.resync(err)
		if dumped {
			backoff.Reset() // that subscription worked: again at once
		} else if !wait.Sleep(w.closed, backoff.Next()) {
			// Its dump never completed (failed, or interrupted again
			// and again): retries are paced, not a busy loop.
			return
		}
		for {
			s, seq, err = w.subscribe()
			if err == nil {
				break
			}
			if w.isClosed() {
				return
			}
			pause := backoff.Next()
			w.log.Error("cannot resubscribe to link updates", zap.Error(err), zap.Duration("retry_in", pause))
			if !wait.Sleep(w.closed, pause) {
				return
			}
		}
	}
}

func (w *Watcher) isClosed() bool { return wait.Closed(w.closed) }

// errDumpInterrupted: the kernel flagged the link dump as interrupted.
var errDumpInterrupted = errors.New("link dump interrupted")

// read applies messages from s until an error; dumped reports whether the
// subscription's dump completed before it.
func (w *Watcher) read(s *nl.NetlinkSocket, seq uint32) (dumped bool, err error) {
	intr := false
	for {
		if w.opts.beforeReceive != nil {
			w.opts.beforeReceive()
		}
		msgs, from, err := s.Receive()
		if err != nil {
			return dumped, err
		}
		if from.Pid != nl.PidKernel {
			continue
		}
		w.mu.Lock()
		for _, msg := range msgs {
			switch msg.Header.Type {
			case unix.NLMSG_DONE:
				if msg.Header.Seq != seq {
					continue
				}
				if intr || msg.Header.Flags&unix.NLM_F_DUMP_INTR != 0 {
					// A link that changed while the kernel dumped
					// sends a change notice, but the dump may have
					// skipped another, unchanged one: pruning by it
					// would drop a live link (a bridge: its taps'
					// masters unresolved, their landings not ready).
					// A fresh subscription dumps again.
					w.mu.Unlock()
					return false, errDumpInterrupted
				}
				w.dumped()
				dumped = true
			case unix.NLMSG_ERROR:
				if msg.Header.Seq == seq && len(msg.Data) >= 4 {
					if errno := -int32(nativeUint32(msg.Data)); errno != 0 {
						w.mu.Unlock()
						return dumped, fmt.Errorf("link dump: %w", syscall.Errno(errno))
					}
				}
			case unix.RTM_NEWLINK, unix.RTM_DELLINK:
				if msg.Header.Seq == seq && msg.Header.Flags&unix.NLM_F_DUMP_INTR != 0 {
					intr = true
				}
				u, err := parseLink(msg.Header.Type, msg.Data)
				if err != nil {
					w.log.Debug("ignoring link message", zap.Error(err))
					continue
				}
				w.m.update()
				w.apply(u)
			}
		}
		w.mu.Unlock()
	}
}

// dumped completes a (re)subscription: links the dump did not mention
// are gone. After a resync every watched port may have changed unseen, so
// each Watch reports it once it is ready (announcing again is harmless;
// missing a change is not).
func (w *Watcher) dumped() {
	for i, l := range w.links {
		if l.gen < w.gen {
			w.remove(i, l)
		}
	}
	select {
	case <-w.synced:
		w.notifyAll(CauseResync)
	default:
		close(w.synced)
	}
}

// apply folds one message into the view and wakes whoever waits on the
// link's old or new name. Called with w.mu held.
func (w *Watcher) apply(u update) {
	l := w.links[u.index]
	if u.del && !u.bridge {
		if l != nil {
			w.remove(u.index, l)
		}
		return
	}
	if l == nil {
		l = &link{State: State{Index: u.index}}
		w.links[u.index] = l
	}
	l.gen = w.gen
	oldName := l.Name
	if u.name != "" && u.name != l.Name {
		if w.names[l.Name] == u.index {
			delete(w.names, l.Name)
		}
		l.Name = u.name
		w.names[l.Name] = u.index
	}
	l.AdminUp, l.Carrier = u.adminUp(), u.carrier()
	if u.hasMaster || !u.bridge {
		// A device message without a master means none; a bridge
		// message is about the port only.
		l.MasterIndex = u.master
	}
	if u.hasOper {
		l.OperState = u.oper
	}
	switch {
	case u.bridge && u.del:
		// The bridge let go of the port; the device notice that it
		// has no master follows.
		l.BridgePort, l.PortState = false, PortDisabled
	case u.bridge:
		if u.hasPortSt {
			l.BridgePort, l.PortState = true, u.portState
		}
	default:
		// Bridge messages lack link info, so kind and lower device
		// come from device messages only.
		if u.hasLinkInf {
			l.Kind = u.kind
		}
		l.LowerIndex = 0
		if u.parent != u.index && !u.parentNS {
			l.LowerIndex = u.parent
		}
		l.BridgePort = u.slaveKind == "bridge"
		if l.BridgePort && u.hasPortSt {
			l.PortState = u.portState
		} else if !l.BridgePort {
			l.PortState = PortDisabled
		}
	}
	if oldName != "" && oldName != l.Name {
		// A rename can change who is attached to a master of that name.
		w.notifyAll(0)
		return
	}
	w.notify(l.Name, 0)
}

// remove deletes a link from the view. Called with w.mu held.
func (w *Watcher) remove(index int, l *link) {
	delete(w.links, index)
	if w.names[l.Name] == index {
		delete(w.names, l.Name)
	}
	// A deleted master or lower device changes its ports' states too.
	w.notifyAll(0)
}

// state returns the current State of the link called name, with master and
// lower device names resolved; ok is false when there is none. Called with
// w.mu held.
func (w *Watcher) state(name string) (State, bool) {
	i, ok := w.names[name]
	if !ok {
		return State{}, false
	}
	l := w.links[i]
	if l == nil {
		return State{}, false
	}
	s := l.State
	if m := w.links[s.MasterIndex]; m != nil {
		s.Master = m.Name
	}
	if lo := w.links[s.LowerIndex]; lo != nil {
		s.Lower = lo.Name
	}
	return s, true
}

// State returns what the watcher currently knows about the link called name.
func (w *Watcher) State(name string) (State, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.state(name)
}

// notify re-checks waits and watches on name; watches add extra to their
// causes. Called with w.mu held.
func (w *Watcher) notify(name string, extra Cause) {
	if len(w.waiters[name]) == 0 && len(w.watches[name]) == 0 {
		return
	}
	s, ok := w.state(name)
	for wt := range w.waiters[name] {
		if ok && s.Missing(wt.master) == None {
			wt.ready <- s // buffered; each waiter is woken once
			w.dropWaiter(name, wt)
		}
	}
	for wa := range w.watches[name] {
		w.check(wa, s, ok, extra)
	}
}

// notifyAll re-checks every wait and watch. Called with w.mu held.
func (w *Watcher) notifyAll(extra Cause) {
	names := make([]string, 0, len(w.waiters)+len(w.watches))
	for name := range w.waiters {
		names = append(names, name)
	}
	for name := range w.watches {
		if _, both := w.waiters[name]; !both {
			names = append(names, name)
		}
	}
	for _, name := range names {
		w.notify(name, extra)
	}
}

// sendToKernel sends req on s addressed to the kernel only (port 0, no
// multicast group). nl.NetlinkSocket.Send addresses it to the socket's own
// bound address, which on a subscribed socket names the subscribed groups:
// the kernel then treats the request as a multicast send as well and
// refuses it with EPERM unless the sender has CAP_NET_ADMIN
// (netlink_sendmsg, NL_CFG_F_NONROOT_SEND; vishvananda/netlink#868).
func sendToKernel(s *nl.NetlinkSocket, req *nl.NetlinkRequest) error {
	b := req.Serialize()
	kernel := &unix.SockaddrNetlink{Family: unix.AF_NETLINK}
	for {
		err := unix.Sendto(s.GetFd(), b, 0, kernel)
		// A request to the kernel is handled inside sendto; EAGAIN only
		// when the kernel could not allocate, EINTR on a signal.
		if err == unix.EINTR || err == unix.EAGAIN {
			time.Sleep(time.Millisecond)
			continue
		}
		return err
	}
}

func nativeUint32(b []byte) uint32 {
	v, _ := u32(b)
	return v
}

// rtextFilterSkipStats (RTEXT_FILTER_SKIP_STATS, linux/rtnetlink.h) keeps
// counters out of the dump: a third of each message, and never needed here.
const rtextFilterSkipStats = 1 << 3
