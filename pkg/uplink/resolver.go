package uplink

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/rarp-announce/rarp-announce/pkg/rarp"
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
	dump *nl.SocketHandle  // requests only; never subscribed
	sub  *nl.NetlinkSocket // RTNLGRP_LINK notifications; never sends
	done chan struct{}
	wg   sync.WaitGroup

	mu       sync.RWMutex
	t        table
	ix       atomic.Pointer[index] // r.t indexed; nil after a change
	err      error                 // set when the reader stopped for good
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
	sub, err := nl.Subscribe(unix.NETLINK_ROUTE, unix.RTNLGRP_LINK)
	if err != nil {
		return nil, fmt.Errorf("uplink: subscribe to link changes: %w", err)
	}
	// SO_RCVBUFFORCE needs CAP_NET_ADMIN; without it the plain option,
	// capped by net.core.rmem_max, is the best there is.
	if sub.SetReceiveBufferSize(opts.ReceiveBuffer, true) != nil {
		_ = sub.SetReceiveBufferSize(opts.ReceiveBuffer, false)
	}
	ds, err := nl.GetNetlinkSocketAt(netns.None(), netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		sub.Close()
		return nil, fmt.Errorf("uplink: netlink: %w", err)
	}
	r := &Resolver{opts: opts, dump: &nl.SocketHandle{Socket: ds}, sub: sub, done: make(chan struct{})}
	t, err := r.read()
	if err != nil {
		sub.Close()
		ds.Close()
		return nil, err
	}
	r.t = t
	r.wg.Add(1)
	go r.run()
	return r, nil
}

// read dumps every link, then every bridge port's VLAN table
// (RTEXT_FILTER_BRVLAN), through the same parser as the notifications.
func (r *Resolver) read() (table, error) {
	t := table{}
	interrupted := false
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
			return nil, fmt.Errorf("uplink: dump links (family %d): %w", fam, err)
		}
		for _, m := range msgs {
			msg := syscall.NetlinkMessage{Header: syscall.NlMsghdr{Type: unix.RTM_NEWLINK}, Data: m}
			if _, _, _, err := t.apply(msg); err != nil {
				return nil, fmt.Errorf("uplink: dump: %w", err)
			}
		}
	}
	if interrupted {
		// Something changed during the dump; its notification is
		// queued on the subscription and fixes the table.
		r.report(fmt.Errorf("uplink: dump interrupted, relying on notifications"))
	}
	// A bridge port without VLAN entries is in no bridge dump entry's
	// table: its table is known to be empty.
	for _, l := range t {
		if m := t[l.Master]; m != nil && m.Kind == "bridge" {
			l.VLANsKnown = true
		}
	}
	return t, nil
}

func (r *Resolver) report(err error) {
	if r.opts.OnError != nil {
		r.opts.OnError(err)
	}
}

func (r *Resolver) run() {
	defer r.wg.Done()
	for {
		msgs, from, err := r.sub.Receive()
		select {
		case <-r.done:
			return
		default:
		}
		if errors.Is(err, unix.ENOBUFS) {
			// Notifications were lost: read everything again and
			// report the differences as changes.
			r.report(fmt.Errorf("uplink: notifications overflowed, re-reading"))
			r.resync()
			continue
		}
		if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
			continue
		}
		if err != nil {
			r.mu.Lock()
			r.err = fmt.Errorf("uplink: reading link changes: %w", err)
			r.mu.Unlock()
			r.report(r.err)
			return
		}
		if from.Pid != nl.PidKernel {
			continue
		}
		r.handle(msgs)
	}
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

func (r *Resolver) resync() {
	t, err := r.read()
	if err != nil {
		r.report(err)
		return
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
	r.sub.Close()
	r.wg.Wait()
	r.dump.Socket.Close()
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
