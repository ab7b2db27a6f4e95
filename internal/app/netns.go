package app

import (
	"runtime"

	"github.com/vishvananda/netns"
)

// inNetns runs fn on a thread switched into ns; the thread is discarded
// afterwards (never unlocked), so no goroutine runs in the wrong namespace.
func inNetns(ns *netns.NsHandle, fn func() error) error {
	if ns == nil {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := netns.Set(*ns); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}
