// Package sdnotify tells systemd (Type=notify) how the agent is doing:
// READY=1 once it is subscribed to libvirt's events, so that units ordered
// after it, and "systemctl start", wait until a landing would be seen;
// STATUS= with what it waits for; WATCHDOG=1 at half the unit's
// WatchdogSec=, so a wedged agent is restarted; STOPPING=1 at shutdown.
// Outside systemd (no NOTIFY_SOCKET) it does nothing.
//
// The datagrams are sent by coreos/go-systemd's daemon package.
package sdnotify

import (
	"context"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"go.uber.org/zap"
)

// ReadyFunc reports whether the agent is ready and, either way, why.
type ReadyFunc func() (ready bool, status string)

// Poll is how often the readiness is looked at.
const Poll = 100 * time.Millisecond

// Run notifies systemd until ctx ends. READY=1 is sent once, the first
// time ready says so; later losses of readiness (libvirtd restarting) only
// change STATUS=. The watchdog is fed from this loop, so it stops being
// fed only if the process stops scheduling goroutines.
func Run(ctx context.Context, log *zap.Logger, ready ReadyFunc) {
	send := func(state string) {
		if _, err := daemon.SdNotify(false, state); err != nil {
			log.Warn("systemd notification not sent", zap.String("state", state), zap.Error(err))
		}
	}
	if ok, _ := daemon.SdNotify(false, "STATUS=starting"); !ok {
		return // not started by systemd with Type=notify
	}
	var feed <-chan time.Time
	if every, err := daemon.SdWatchdogEnabled(false); err != nil {
		log.Warn("systemd watchdog settings not understood", zap.Error(err))
	} else if every > 0 {
		t := time.NewTicker(every / 2)
		defer t.Stop()
		feed = t.C
		send("WATCHDOG=1")
	}
	poll := time.NewTicker(Poll)
	defer poll.Stop()
	sentReady, last := false, ""
	check := func() {
		ok, status := ready()
		switch {
		case ok && !sentReady:
			sentReady, last = true, status
			send("READY=1\nSTATUS=" + status)
		case status != last:
			last = status
			send("STATUS=" + status)
		}
	}
	check()
	for {
		select {
		case <-ctx.Done():
			send("STOPPING=1\nSTATUS=stopping")
			return
		case <-feed:
			send("WATCHDOG=1")
		case <-poll.C:
			check()
		}
	}
}
