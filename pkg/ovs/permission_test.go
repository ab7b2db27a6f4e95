package ovs

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/rarp-announce/rarp-announce/internal/caps"
	"github.com/rarp-announce/rarp-announce/internal/netnstest"
)

// A connect refused by the socket's permissions (OVS's sockets are
// root:root 0750; here root without CAP_DAC_OVERRIDE on a 0000 socket) is
// counted as "permission", not "command", so the alert says why.
func TestPermissionDeniedReason(t *testing.T) {
	netnstest.Require(t)
	path := filepath.Join(t.TempDir(), "db.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := os.Chmod(path, 0); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		if err := caps.Restrict(caps.Of(caps.NetRaw, caps.NetAdmin)); err != nil {
			errc <- err
			return
		}
		c, err := net.Dial("unix", path)
		if err == nil {
			c.Close()
			err = errors.New("connected to a mode 0000 socket without CAP_DAC_OVERRIDE")
		}
		errc <- err
	}()
	err = dialError(<-errc)
	if got := Reason(err); got != "permission" {
		t.Fatalf("Reason(%v) = %q, want permission", err, got)
	}
	if got := Reason(errors.New("ovs-vsctl: unix:/run/openvswitch/db.sock: database connection failed (Permission denied)")); got != "permission" {
		t.Fatalf("ovs-vsctl's message: %q", got)
	}
}
