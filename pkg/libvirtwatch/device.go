package libvirtwatch

import (
	"context"
	"sync"

	"github.com/digitalocean/go-libvirt"
)

// DeviceChanged events (Event.Kind) tell that a device was hot-plugged
// into or unplugged from a running domain (libvirt's DEVICE_ADDED and
// DEVICE_REMOVED events): a NIC added or removed changes what the agent
// knows of the domain's NICs. Event and Detail are -1; Device names the
// device by its alias ("net1"), DeviceAdded tells which.

// subscribe runs one event subscription of go-libvirt (LifecycleEvents,
// SubscribeEvents) under the call timeout. stop unsubscribes: it cancels
// go-libvirt's relay and drains its channel until it closes (the relay
// blocks on an unread channel otherwise), then returns; call it before
// Close. A subscription that completes after its call timed out or was
// abandoned is stopped the same way.
func subscribe[T any](ctx context.Context, c *Conn, sub func(ctx context.Context) (<-chan T, error)) (<-chan T, func(), error) {
	subCtx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var ch <-chan T
	abandoned := false
	drain := func(ch <-chan T) {
		cancel()
		for range ch {
		}
	}
	err := c.call(ctx, procRegisterLifecycle, func() error {
		events, err := sub(subCtx)
		mu.Lock()
		defer mu.Unlock()
		if err == nil && abandoned {
			go drain(events)
			return err
		}
		ch = events
		return err
	})
	mu.Lock()
	defer mu.Unlock()
	if err != nil {
		abandoned = true
		if ch != nil {
			go drain(ch)
		}
		cancel()
		return nil, nil, err
	}
	return ch, func() { drain(ch) }, nil
}

// deviceEvents subscribes to DEVICE_ADDED and DEVICE_REMOVED events of
// every domain and merges them into Events of kind DeviceChanged. stop
// ends both subscriptions.
func (c *Conn) deviceEvents(ctx context.Context) (<-chan Event, func(), error) {
	type one struct {
		ch   <-chan any
		stop func()
	}
	var subs []one
	stopAll := func() {
		for _, s := range subs {
			s.stop()
		}
	}
	for _, id := range []libvirt.DomainEventID{libvirt.DomainEventIDDeviceAdded, libvirt.DomainEventIDDeviceRemoved} {
		ch, stop, err := subscribe(ctx, c, func(ctx context.Context) (<-chan any, error) {
			return c.l.SubscribeEvents(ctx, id, libvirt.OptDomain{})
		})
		if err != nil {
			stopAll()
			return nil, nil, err
		}
		subs = append(subs, one{ch, stop})
	}
	out := make(chan Event)
	done := make(chan struct{})
	var wg sync.WaitGroup
	for _, s := range subs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range s.ch {
				ev, ok := deviceEvent(m)
				if !ok {
					continue
				}
				select {
				case out <- ev:
				case <-done:
				}
			}
		}()
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			close(done)
			stopAll()
			wg.Wait()
		})
	}
	return out, stop, nil
}

// deviceEvent reads a DEVICE_ADDED or DEVICE_REMOVED message.
func deviceEvent(m any) (Event, bool) {
	ev := Event{Kind: DeviceChanged, Event: -1, Detail: -1}
	var dom libvirt.Domain
	switch m := m.(type) {
	case *libvirt.DomainEventCallbackDeviceAddedMsg:
		dom, ev.Device, ev.DeviceAdded = m.Dom, m.DevAlias, true
	case *libvirt.DomainEventCallbackDeviceRemovedMsg:
		dom, ev.Device = m.Msg.Dom, m.Msg.DevAlias
	default:
		return Event{}, false
	}
	ev.Domain, ev.DomainID = refOf(dom), dom.ID
	return ev, true
}
