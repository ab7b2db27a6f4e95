package sdnotify

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rarp-announce/rarp-announce/internal/libvirtfake"
	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/internal/testbin"
)

var binary string

func TestMain(m *testing.M) {
	path, cleanup, err := testbin.Build("../../cmd/rarp-announce", "rarp-announce")
	if err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		os.Exit(1)
	}
	binary = path
	code := m.Run()
	cleanup()
	os.Exit(code)
}

// The real agent, started as systemd starts a Type=notify unit, sends
// READY=1 only after it registered its libvirt event callback: while the
// (fake) libvirtd does not answer the registration, no READY=1; once it
// does, READY=1 follows, and WATCHDOG=1 keeps coming.
func TestAgentReadyAfterLibvirtSubscription(t *testing.T) {
	netnstest.Require(t) // root: the default config needs CAP_NET_RAW and CAP_NET_ADMIN
	msgs := listen(t)
	srv := libvirtfake.StartAt(t, filepath.Join(t.TempDir(), "libvirt-sock"))
	srv.Hang(libvirtfake.ProgramRemote, libvirtfake.ProcConnectDomainEventCallbackRegisterAny, true)

	cmd := exec.Command(binary, "run", "--libvirt-socket", srv.Path(), "--metrics-address", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), "WATCHDOG_USEC=200000")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("agent's log:\n%s", stderr.String())
		}
	}()

	// While the registration hangs: watchdog and status, no READY=1.
	var watchdogs int
	hung := time.After(1500 * time.Millisecond)
waiting:
	for {
		select {
		case m := <-msgs:
			if strings.HasPrefix(m, "READY=1") {
				t.Fatalf("READY=1 before libvirt answered the event registration: %q", m)
			}
			if m == "WATCHDOG=1" {
				watchdogs++
			}
		case <-hung:
			break waiting
		}
	}
	if watchdogs < 3 {
		t.Fatalf("%d WATCHDOG=1 in 1.5 s with WatchdogSec=200ms", watchdogs)
	}
	srv.Hang(libvirtfake.ProgramRemote, libvirtfake.ProcConnectDomainEventCallbackRegisterAny, false)
	// go-libvirt retries nothing: the hung call times out (rpc_timeout 5s)
	// and the watcher reconnects and registers again.
	deadline := time.After(15 * time.Second)
	for {
		select {
		case m := <-msgs:
			if !strings.HasPrefix(m, "READY=1") {
				continue
			}
			if srv.Subscribers() < 1 {
				t.Fatalf("READY=1 with no event callback registered: %q", m)
			}
			watchdogs = 0
			after := time.After(time.Second)
			for {
				select {
				case m := <-msgs:
					if m == "WATCHDOG=1" {
						watchdogs++
					}
				case <-after:
					if watchdogs < 3 {
						t.Fatalf("%d WATCHDOG=1 in the second after READY=1 (WatchdogSec=200ms)", watchdogs)
					}
					return
				}
			}
		case <-deadline:
			t.Fatal("no READY=1 within 15 s of libvirt answering")
		}
	}
}
