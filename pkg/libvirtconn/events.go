package libvirtconn

import (
	"context"
	"sync"

	"github.com/digitalocean/go-libvirt"
)

// DeviceEvent is libvirt's DEVICE_ADDED or DEVICE_REMOVED event of a
// running domain: a device was hot-plugged into it or unplugged from it.
type DeviceEvent struct {
	Domain   DomainRef
	DomainID int32
	Alias    string // the device's alias, e.g. "net1"
	Added    bool   // false: removed
}

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

// DeviceEvents subscribes to DEVICE_ADDED and DEVICE_REMOVED events of
// every domain and merges them into one channel. stop ends both
// subscriptions; call it before Close.
func (c *Conn) DeviceEvents(ctx context.Context) (<-chan DeviceEvent, func(), error) {
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
	out := make(chan DeviceEvent)
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
func deviceEvent(m any) (DeviceEvent, bool) {
	var ev DeviceEvent
	var dom libvirt.Domain
	switch m := m.(type) {
	case *libvirt.DomainEventCallbackDeviceAddedMsg:
		dom, ev.Alias, ev.Added = m.Dom, m.DevAlias, true
	case *libvirt.DomainEventCallbackDeviceRemovedMsg:
		dom, ev.Alias = m.Msg.Dom, m.Msg.DevAlias
	default:
		return DeviceEvent{}, false
	}
	ev.Domain, ev.DomainID = DomainRefOf(dom), dom.ID
	return ev, true
}
