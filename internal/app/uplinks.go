package app

import (
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
	"go.uber.org/zap"

	"github.com/rarp-announce/rarp-announce/internal/agent"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
	"github.com/rarp-announce/rarp-announce/pkg/uplink"
)

// openUplinks follows the bridges' uplinks in ns (nil: the caller's
// namespace). If the topology cannot be read, bridge NICs still go out on
// their bridge device: the agent logs and counts each such fallback
// (reason unreadable), so the failure never silences an announce.
func openUplinks(ns *netns.NsHandle, log *zap.Logger) agent.Uplinks {
	onErr := func(err error) { log.Warn("following the bridges' uplinks", zap.Error(err)) }
	r, err := openResolverIn(ns, uplink.Options{OnError: onErr})
	if err != nil {
		log.Error("cannot read the bridges' uplinks: bridge NICs are announced on the bridge device", zap.Error(err))
		return unreadable{err}
	}
	return r
}

// openResolverIn opens the resolver in ns: its netlink sockets belong to
// the namespace of the thread that creates them, and keep it.
func openResolverIn(ns *netns.NsHandle, o uplink.Options) (*uplink.Resolver, error) {
	if ns == nil {
		return uplink.Open(o)
	}
	type result struct {
		r   *uplink.Resolver
		err error
	}
	c := make(chan result, 1)
	go func() {
		// The thread is left in ns: it ends with the goroutine (no
		// UnlockOSThread), so no other goroutine runs there.
		runtime.LockOSThread()
		if err := netns.Set(*ns); err != nil {
			c <- result{nil, fmt.Errorf("enter network namespace: %w", err)}
			return
		}
		r, err := uplink.Open(o)
		c <- result{r, err}
	}()
	res := <-c
	return res.r, res.err
}

// unreadable answers every bridge with a fallback to the bridge device.
type unreadable struct{ err error }

func (u unreadable) Targets(bridge, vmPort string, _ []rarp.VLAN) ([]uplink.Target, error) {
	return nil, &uplink.FallbackError{Bridge: bridge, Port: vmPort, Reason: uplink.Unreadable, Err: u.err}
}
