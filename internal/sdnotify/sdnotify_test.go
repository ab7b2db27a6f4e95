package sdnotify

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
)

// listen stands in for systemd: a unixgram socket as NOTIFY_SOCKET, its
// datagrams on the returned channel.
func listen(t *testing.T) <-chan string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	ch := make(chan string, 256)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if err != nil {
				close(ch)
				return
			}
			ch <- string(buf[:n])
		}
	}()
	return ch
}

// READY=1 comes only once the ready function says so (libvirt subscribed),
// STATUS= tells what is waited for, WATCHDOG=1 keeps coming at half the
// interval, and STOPPING=1 ends it.
func TestProtocol(t *testing.T) {
	msgs := listen(t)
	t.Setenv("WATCHDOG_USEC", "100000") // 100 ms: fed every 50 ms
	var isReady atomic.Bool
	var readyAt atomic.Int64
	ready := func() (bool, string) {
		if isReady.Load() {
			return true, "subscribed to libvirt events"
		}
		return false, "waiting for libvirt"
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		Run(ctx, zaptest.NewLogger(t), ready)
		close(done)
	}()
	time.AfterFunc(400*time.Millisecond, func() {
		readyAt.Store(time.Now().UnixNano())
		isReady.Store(true)
	})

	var watchdogs, readies, watchdogsAfterReady int
	var sawWaiting bool
	deadline := time.After(1200 * time.Millisecond)
loop:
	for {
		select {
		case m := <-msgs:
			switch {
			case m == "WATCHDOG=1":
				watchdogs++
				if readies > 0 {
					watchdogsAfterReady++
				}
			case strings.HasPrefix(m, "READY=1"):
				readies++
				at := readyAt.Load()
				if at == 0 || time.Now().UnixNano() < at {
					t.Fatalf("READY=1 before the agent was ready: %q", m)
				}
				if !strings.Contains(m, "STATUS=subscribed to libvirt events") {
					t.Errorf("READY=1 without the status: %q", m)
				}
			case m == "STATUS=waiting for libvirt":
				sawWaiting = true
			}
		case <-deadline:
			break loop
		}
	}
	cancel()
	<-done
	if readies != 1 {
		t.Errorf("READY=1 sent %d times, want once", readies)
	}
	if !sawWaiting {
		t.Error("no STATUS= saying what is waited for")
	}
	// 1.2 s at one every 50 ms: about 24; a stalled feeder would send few.
	if watchdogs < 12 || watchdogsAfterReady < 6 {
		t.Errorf("WATCHDOG=1 sent %d times (%d after READY=1) in 1.2 s with WatchdogSec=100ms", watchdogs, watchdogsAfterReady)
	}
	select {
	case m := <-msgs:
		for strings.HasPrefix(m, "WATCHDOG") {
			m = <-msgs
		}
		if !strings.HasPrefix(m, "STOPPING=1") {
			t.Errorf("last message %q, want STOPPING=1", m)
		}
	case <-time.After(time.Second):
		t.Error("no STOPPING=1")
	}
}

// Without NOTIFY_SOCKET, Run returns at once.
func TestNotUnderSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	done := make(chan struct{})
	go func() {
		Run(context.Background(), zaptest.NewLogger(t), func() (bool, string) { return true, "" })
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(time.Second):
		t.Fatal("Run waited without NOTIFY_SOCKET")
	}
}
