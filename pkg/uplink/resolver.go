package uplink

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/rarp-announce/rarp-announce/pkg/rarp"
	"github.com/rarp-announce/rarp-announce/pkg/wait"
)

// Options configure a Resolver. The zero value is usable.
type Options struct {
	// IsVMPort tells VM ports from uplinks; nil means DefaultIsVMPort.
	IsVMPort IsVMPort
	// ReceiveBuffer is the subscription socket's buffer in bytes (default
	// 4 MiB): a host creating hundreds of taps at once sends a burst of
	// notifications. An overflow costs a full re-read, not correctness.
	ReceiveBuffer int
	// OnError, if set, hears errors the background reader recovers from.
	OnError func(error)
	// OnRecovered, if set, hears that the reader follows the topology
	// again after an error that made Targets fall back (Unreadable).
	OnRecovered func()
}

// change is one link's state before and after a notification (or a
// re-read), with the IFLA_EVENT the kernel attached.
type change struct {
	old, cur *Link
	event    uint32
}

// Resolver keeps the namespace's links, bridge ports and bridge VLAN tables
// current from netlink, and answers Targets from memory: a storm of
// announces costs no netlink round trip per frame.
type Resolver struct {
	opts Options
	dump *nl.SocketHandle // requests only; never subscribed
	ns   netns.NsHandle   // the namespace followed (none: unknown)
	done chan struct{}
	wg   sync.WaitGroup

	// sub receives the RTNLGRP_LINK notifications (it never sends). The
	// reader replaces it after an error; Close closes the current one.
	subMu sync.Mutex
	sub   *nl.NetlinkSocket

	mu       sync.RWMutex
	t        table
	ix       atomic.Pointer[index] // r.t indexed; nil after a change
	err      error                 // set while the table may miss changes (recover)
	watchers map[int]func([]change)
	nextW    int
}

// Open reads the topology of the calling thread's network namespace and
// follows it until Close.
func Open(opts Options) (*Resolver, error) {
	if opts.IsVMPort == nil {
		opts.IsVMPort = DefaultIsVMPort
	}
	if opts.ReceiveBuffer == 0 {
		opts.ReceiveBuffer = 4 << 20
	}
	// Subscribe before the first dump, so no change between the two is
	// lost: queued notifications are applied on top of the dump.
	ns, err := netns.Get() // where the reader subscribes again (recover)
	if err != nil {
		ns = netns.None()
	}
	sub, err := openSubscription(ns, opts.ReceiveBuffer)
	if err != nil {
		ns.Close()
		return nil, err
	}
	ds, err := nl.GetNetlinkSocketAt(netns.None(), netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		sub.Close()
		ns.Close()
		return nil, fmt.Errorf("uplink: netlink: %w", err)
	}
	r := &Resolver{opts: opts, dump: &nl.SocketHandle{Socket: ds}, sub: sub, ns: ns, done: make(chan struct{})}
	t, err := r.read()
	if err != nil {
		sub.Close()
		ds.Close()
		ns.Close()
		return nil, err
	}
	r.t = t
	r.wg.Add(1)
	go r.run()
	return r, nil
}

// openSubscription opens a subscription to the link notifications of ns
// (the namespace Open ran in; none: the calling thread's) with a receive
// buffer of size bytes. The reader reopens it from its own goroutine, on
// any thread: only a thread in another namespace enters ns (setns, which
// needs CAP_SYS_ADMIN: tests only; the agent runs in the host's).
func openSubscription(ns netns.NsHandle, size int) (*nl.NetlinkSocket, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	subscribe := func() (*nl.NetlinkSocket, error) { return nl.Subscribe(unix.NETLINK_ROUTE, unix.RTNLGRP_LINK) }
	if cur, err := netns.Get(); err == nil {
		defer cur.Close()
		if ns.IsOpen() && !ns.Equal(cur) {
			subscribe = func() (*nl.NetlinkSocket, error) {
				return nl.SubscribeAt(ns, cur, unix.NETLINK_ROUTE, unix.RTNLGRP_LINK)
			}
		}
	}
	sub, err := subscribe()
	if err != nil {
		return nil, fmt.Errorf("uplink: subscribe to link changes: %w", err)
	}
	// SO_RCVBUFFORCE needs CAP_NET_ADMIN; without it the plain option,
	// capped by net.core.rmem_max, is the best there is.
	if sub.SetReceiveBufferSize(size, true) != nil {
		_ = sub.SetReceiveBufferSize(size, false)
	}
	return sub, nil
}

// dumpTries bounds the dumps read tries when the kernel says one was
// interrupted (a link changed while it ran, as pkg/fdb does).
const dumpTries = 3

// read dumps the topology (dumpOnce), again if the kernel interrupted the
// dump: a link deleted while a dump runs can make it skip another link,
// which no notification would bring back (that one did not change).
func (r *Resolver) read() (table, error) {
	for try := 1; ; try++ {
		t, interrupted, err := r.dumpOnce()
		if err != nil || !interrupted {
			return t, err
		}
		if try == dumpTries {
			// Rare (links changing on every try): the changes' own
			// notifications are queued on the subscription.
			r.report(fmt.Errorf("uplink: dump interrupted %d times, relying on notifications", dumpTries))
			return t, nil
		}
	}
}

// dumpOnce dumps every link, then every bridge port's VLAN table
// (RTEXT_FILTER_BRVLAN), through the same parser as the notifications.
func (r *Resolver) dumpOnce() (t table, interrupted bool, err error) {
	t = table{}
	for _, fam := range []uint8{unix.AF_UNSPEC, unix.AF_BRIDGE} {
		req := nl.NewNetlinkRequest(unix.RTM_GETLINK, unix.NLM_F_DUMP)
		req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: r.dump}
		req.AddData(nl.NewIfInfomsg(int(fam)))
		if fam == unix.AF_BRIDGE {
			req.AddData(nl.NewRtAttr(unix.IFLA_EXT_MASK, nl.Uint32Attr(uint32(nl.RTEXT_FILTER_BRVLAN))))
		}
		msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWLINK)
		if errors.Is(err, netlink.ErrDumpInterrupted) || errors.Is(err, nl.ErrDumpInterrupted) {
			interrupted = true
		} else if err != nil {
			return nil, false, fmt.Errorf("uplink: dump links (family %d): %w", fam, err)
		}
		for _, m := range msgs {
			msg := syscall.NetlinkMessage{Header: syscall.NlMsghdr{Type: unix.RTM_NEWLINK}, Data: m}
			if _, _, _, err := t.apply(msg); err != nil {
				return nil, false, fmt.Errorf("uplink: dump: %w", err)
			}
		}
	}
	// Every bridge port has an entry in the bridge dump, one in no VLAN
	// too (TestRigDumpReportsPortsWithoutVLANs): a port without one was
	// skipped (a dump runs by position, and links deleted meanwhile shift
	// it), and its VLANs stay unknown: its NICs fall back to the bridge
	// device rather than count as in no VLAN until it changes.
	return t, interrupted, nil
}

func (r *Resolver) report(err error) {
	if r.opts.OnError != nil {
		r.opts.OnError(err)
	}
}

func (r *Resolver) run() {
	defer r.wg.Done()
	retry := wait.Backoff{Min: recoverMin, Max: recoverMax}
	for {
		msgs, from, err := r.sub.Receive()
		select {
		case <-r.done:
			return
		default:
		}
		switch {
		case errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN):
			continue
		case errors.Is(err, unix.ENOBUFS):
			// Notifications were lost: read everything again and
			// report the differences as changes.
			r.report(fmt.Errorf("uplink: notifications overflowed, re-reading"))
			if err := r.resync(); err != nil {
				err = fmt.Errorf("uplink: re-reading after an overflow: %w", err)
				if !r.recover(err, &retry) {
					return
				}
			}
			continue
		case err != nil:
			if !r.recover(fmt.Errorf("uplink: reading link changes: %w", err), &retry) {
				return
			}
			continue
		}
		if from.Pid != nl.PidKernel {
			continue
		}
		r.handle(msgs)
	}
}

// The waits between tries to follow the topology again (recover).
const (
	recoverMin = 100 * time.Millisecond
	recoverMax = 10 * time.Second
)

// recover follows the topology again after the subscription failed or a
// re-read after an overflow did: the table may miss changes, so Targets
// falls back (Unreadable) and Uplinks fails until a new subscription and
// a complete re-read succeed, tried with backoff. It returns false if the
// resolver was closed first.
func (r *Resolver) recover(cause error, retry *wait.Backoff) bool {
	r.mu.Lock()
	r.err = cause
	r.mu.Unlock()
	r.report(cause)
	for {
		if !wait.Sleep(r.done, retry.Next()) {
			return false
		}
		err := r.resubscribe()
		if err == nil {
			err = r.resync()
		}
		if errors.Is(err, errClosed) {
			return false
		}
		if err != nil {
			r.report(err)
			continue
		}
		r.mu.Lock()
		r.err = nil
		r.mu.Unlock()
		retry.Reset()
		if r.opts.OnRecovered != nil {
			r.opts.OnRecovered()
		}
		return true
	}
}

var errClosed = errors.New("uplink: resolver closed")

// resubscribe replaces the subscription (before a re-read, so no change
// after the re-read is lost).
func (r *Resolver) resubscribe() error {
	sub, err := openSubscription(r.ns, r.opts.ReceiveBuffer)
	if err != nil {
		return err
	}
	r.subMu.Lock()
	defer r.subMu.Unlock()
	select {
	case <-r.done:
		sub.Close()
		return errClosed
	default:
	}
	r.sub.Close()
	r.sub = sub
	return nil
}

func (r *Resolver) handle(msgs []syscall.NetlinkMessage) {
	var changes []change
	r.mu.Lock()
	for _, m := range msgs {
		old, cur, ev, err := r.t.apply(m)
		if err != nil {
			r.report(fmt.Errorf("uplink: notification: %w", err))
			continue
		}
		if old != nil || cur != nil {
			changes = append(changes, change{old: old, cur: cur, event: ev})
		}
	}
	r.ix.Store(nil)
	ws := r.watcherList()
	r.mu.Unlock()
	if len(changes) > 0 {
		for _, w := range ws {
			w(changes)
		}
	}
}

// resync reads the whole topology again and reports the differences to
// the table as changes.
func (r *Resolver) resync() error {
	t, err := r.read()
	if err != nil {
		return err
	}
	r.mu.Lock()
	old := r.t
	r.t = t
	r.ix.Store(nil)
	ws := r.watcherList()
	r.mu.Unlock()
	var changes []change
	for idx, cur := range t {
		c := *cur
		changes = append(changes, change{old: old[idx], cur: &c})
	}
	for idx, o := range old {
		if t[idx] == nil {
			changes = append(changes, change{old: o})
		}
	}
	for _, w := range ws {
		w(changes)
	}
	return nil
}

// subscribe registers fn to hear every batch of changes, in order, on the
// reader goroutine (fn must not block for long), until the returned
// function is called.
func (r *Resolver) subscribe(fn func([]change)) (stop func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.watchers == nil {
		r.watchers = map[int]func([]change){}
	}
	id := r.nextW
	r.nextW++
	r.watchers[id] = fn
	return func() {
		r.mu.Lock()
		delete(r.watchers, id)
		r.mu.Unlock()
	}
}

// Close stops following the topology.
func (r *Resolver) Close() error {
	select {
	case <-r.done:
		return nil
	default:
	}
	close(r.done)
	r.subMu.Lock()
	r.sub.Close()
	r.subMu.Unlock()
	r.wg.Wait()
	r.dump.Socket.Close()
	r.ns.Close()
	return nil
}

// Targets says where to write the announce for the VM on port vmPort of
// bridge, and with which tag. xmlVLANs are the NIC's VLANs from the
// domain's XML where libvirt has them; they override the bridge's VLAN
// table. Errors are *NoUplinkError (announce nothing) or *FallbackError
// (send on the bridge device).
func (r *Resolver) Targets(bridge, vmPort string, xmlVLANs []rarp.VLAN) ([]Target, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.err != nil {
		return nil, &FallbackError{Bridge: bridge, Port: vmPort, Reason: Unreadable, Err: r.err}
	}
	return r.indexed().resolve(bridge, vmPort, xmlVLANs)
}

// indexed returns the table's index, building it if a change dropped it.
// Called with r.mu held for reading: readers build it under the read lock
// (two may build it at once; either result is right), a writer, which
// holds the write lock, drops it after each change.
func (r *Resolver) indexed() *index {
	ix := r.ix.Load()
	if ix == nil {
		ix = r.t.index(r.opts.IsVMPort)
		r.ix.Store(ix)
	}
	return ix
}

// Uplinks returns bridge's uplink ports, up or not, by index.
func (r *Resolver) Uplinks(bridge string) ([]Port, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.err != nil {
		return nil, r.err
	}
	ix := r.indexed()
	br := ix.byName(bridge)
	if br == nil || br.Kind != "bridge" {
		return nil, fmt.Errorf("uplink: %s: not a bridge", bridge)
	}
	ups := ix.ups[br.Index]
	out := make([]Port, 0, len(ups))
	for _, l := range ups {
		out = append(out, l.Port)
	}
	return out, nil
}

// Link returns what the topology knows about the named device.
func (r *Resolver) Link(name string) (Link, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	l := r.indexed().byName(name)
	if l == nil {
		return Link{}, false
	}
	return *l, true
}

// LinkByIndex returns what the topology knows about the device with
// ifindex i (a bridge port's master, a macvtap's lower device).
func (r *Resolver) LinkByIndex(i int) (Link, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	l := r.t[i]
	if l == nil {
		return Link{}, false
	}
	return *l, true
}

// Describe lists targets for a log line: "eth0 vlan 100, eth1 untagged".
func Describe(ts []Target) string { return describe(ts) }

// watcherList copies the watchers; called with r.mu held.
func (r *Resolver) watcherList() []func([]change) {
	ws := make([]func([]change), 0, len(r.watchers))
	for _, w := range r.watchers {
		ws = append(ws, w)
	}
	return ws
}
