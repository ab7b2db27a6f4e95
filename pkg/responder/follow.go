package responder

import (
	"context"
	"fmt"
	"runtime"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/rarp-announce/rarp-announce/pkg/wait"
)

// Following the served interfaces: a link and an address subscription tell
// when an interface's MAC or addresses change, or when it is deleted (its
// ring is then closed and reopened once an interface of that name is back).
//
// A subscription ends on its first receive error, typically ENOBUFS when a
// burst of link messages (hundreds of taps created at once) overflows the
// socket. The follower then subscribes again and resyncs: it reads each
// served interface anew, and reopens one whose index changed or that is
// gone, since its deletion may have been among the lost messages. Without
// that, a bridge re-created after an overflow would never be served again.
//
// Nothing here needs more than CAP_NET_RAW: the subscriptions send no
// request (no dump on a subscribed socket, which the kernel treats as a
// multicast send needing CAP_NET_ADMIN), the resync reads links on the
// responder's unsubscribed handle, and sockets are opened without setns
// (CAP_SYS_ADMIN) unless the calling thread is in another namespace than
// the responder's, which only happens in tests and embedders.

// subscription is one pair of link and address subscriptions; closing done
// ends both.
type subscription struct {
	links chan netlink.LinkUpdate
	addrs chan netlink.AddrUpdate
	done  chan struct{}
}

// end closes the subscription's sockets and drains its channels, so that a
// reader blocked on a full channel can see the close and exit.
func (s *subscription) end() {
	select {
	case <-s.done:
	default:
		close(s.done)
	}
	go func() {
		for range s.links {
		}
	}()
	go func() {
		for range s.addrs {
		}
	}()
}

// subscribe opens the link and address subscriptions in the responder's
// namespace.
func (r *Responder) subscribe() (*subscription, error) {
	s := &subscription{
		links: make(chan netlink.LinkUpdate, 64),
		addrs: make(chan netlink.AddrUpdate, 64),
		done:  make(chan struct{}),
	}
	onErr := func(err error) {
		// Closing done ends the subscription with a failed receive:
		// that is a shutdown or a resubscription, not news.
		select {
		case <-s.done:
			return
		default:
		}
		r.log.Warn("netlink updates lost; subscribing again", zap.Error(err))
	}
	err := r.inNamespace(func() error {
		if err := netlink.LinkSubscribeWithOptions(s.links, s.done, netlink.LinkSubscribeOptions{
			ErrorCallback: onErr, ReceiveBufferSize: r.cfg.receiveBuffer}); err != nil {
			return fmt.Errorf("watch interfaces: %w", err)
		}
		if err := netlink.AddrSubscribeWithOptions(s.addrs, s.done, netlink.AddrSubscribeOptions{
			ErrorCallback: onErr, ReceiveBufferSize: r.cfg.receiveBuffer}); err != nil {
			return fmt.Errorf("watch addresses: %w", err)
		}
		return nil
	})
	if err != nil {
		s.end()
		return nil, err
	}
	return s, nil
}

// inNamespace runs fn on a thread in the responder's namespace. A thread
// that is already there (the agent: everything runs in the host's
// namespace) is used as it is, because setns needs CAP_SYS_ADMIN even to
// enter one's own namespace. A thread switched into it is never switched
// back: it ends with the goroutine (LockOSThread without Unlock).
func (r *Responder) inNamespace(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		cur, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		same := cur.Equal(r.ns)
		cur.Close()
		if same {
			defer runtime.UnlockOSThread()
		} else if err := netns.Set(r.ns); err != nil {
			errc <- fmt.Errorf("enter the responder's network namespace: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// track follows the interfaces until ctx ends: a new MAC or address is
// used from the next batch on; an interface that disappears is reopened
// when a link of the same name comes back.
func (r *Responder) track(ctx context.Context) {
	sub := r.sub
	for {
		if r.cfg.beforeUpdate != nil {
			r.cfg.beforeUpdate()
		}
		select {
		case <-ctx.Done():
			return
		case u, ok := <-sub.links:
			if !ok {
				if sub = r.resubscribe(ctx, sub); sub == nil {
					return
				}
				continue
			}
			r.linkChanged(u)
		case u, ok := <-sub.addrs:
			if !ok {
				if sub = r.resubscribe(ctx, sub); sub == nil {
					return
				}
				continue
			}
			if l := r.byIndex(u.LinkIndex); l != nil {
				r.refresh(l)
			}
		}
	}
}

// linkChanged applies one link message.
func (r *Responder) linkChanged(u netlink.LinkUpdate) {
	l := r.byIndex(int(u.Index))
	if l == nil {
		// Perhaps a served interface that was deleted is back: wake its
		// loop now rather than at its next once-a-second try.
		if u.Header.Type == unix.RTM_NEWLINK && u.Link != nil {
			for _, l := range r.links {
				// Whether or not its loop has closed the old ring yet:
				// the wake waits in the channel.
				if l.name == u.Link.Attrs().Name {
					wait.Wake(l.back)
				}
			}
		}
		return
	}
	// An AF_BRIDGE RTM_DELLINK says a port left its bridge, not that the
	// device is gone: the device is still there to be served.
	if u.Header.Type == unix.RTM_DELLINK && u.Family != unix.AF_BRIDGE {
		r.log.Error("interface deleted; waiting for it to come back", zap.String("interface", l.name))
		l.halt()
		return
	}
	r.refresh(l)
}

// resubscribe replaces the ended subscription old, retrying with a growing
// back-off, then resyncs. It returns nil when ctx ends first.
func (r *Responder) resubscribe(ctx context.Context, old *subscription) *subscription {
	old.end()
	backoff := wait.Backoff{Min: 50 * time.Millisecond, Max: 5 * time.Second}
	for pause := backoff.Next(); wait.Sleep(ctx.Done(), pause); {
		s, err := r.subscribe()
		if err == nil {
			r.subMu.Lock()
			r.sub = s
			r.subMu.Unlock()
			r.resyncs.Add(1)
			r.resync()
			return s
		}
		pause = backoff.Next()
		r.log.Error("cannot subscribe to interface updates", zap.Error(err), zap.Duration("retry_in", pause))
	}
	return nil
}

// resync reads every served interface again after updates were lost: one
// that is gone or has another index now was deleted meanwhile, so its ring
// is reopened (when it is back); the others get their MAC and addresses
// read again.
func (r *Responder) resync() {
	for _, l := range r.links {
		nl, err := r.nl.LinkByName(l.name)
		if err != nil || nl.Attrs().Index != int(l.index.Load()) {
			if l.ring.Load() != nil {
				r.log.Warn("interface was replaced while updates were lost; reopening it", zap.String("interface", l.name))
				l.halt()
			}
			continue
		}
		r.refresh(l)
	}
}

func (r *Responder) byIndex(i int) *link {
	for _, l := range r.links {
		if int(l.index.Load()) == i {
			return l
		}
	}
	return nil
}

// refresh reads an interface's MAC and addresses again.
func (r *Responder) refresh(l *link) {
	nl, err := r.nl.LinkByIndex(int(l.index.Load()))
	if err != nil {
		return
	}
	st, err := r.readState(nl)
	if err != nil {
		r.log.Warn("interface state not read", zap.String("interface", l.name), zap.Error(err))
		return
	}
	l.state.Store(st)
	r.log.Info("interface changed", zap.String("interface", l.name), zap.Stringer("mac", st.mac), zap.Strings("ipv4", st.addrStrings()))
}
