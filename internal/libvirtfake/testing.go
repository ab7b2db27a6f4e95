package libvirtfake

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"
)

// SocketPath returns a short socket path, removed at the end of the test
// (sun_path holds 108 bytes; test temp dirs named after subtests can be
// longer).
func SocketPath(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "lvw")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "sock")
}

// Start starts a fake on a SocketPath, closed at the end of the test.
func Start(t testing.TB) *Server {
	t.Helper()
	return StartAt(t, SocketPath(t))
}

// StartAt starts a fake on path, closed at the end of the test.
func StartAt(t testing.TB, path string) *Server {
	t.Helper()
	s, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestUUID is the UUID of test domain i.
func TestUUID(i int) string { return fmt.Sprintf("6c61622d-766d-4000-8000-%012x", i) }

// TestMAC is the MAC of NIC nic of test domain i.
func TestMAC(i, nic int) string {
	return fmt.Sprintf("52:54:%02x:%02x:%02x:%02x", nic, (i>>16)&0xff, (i>>8)&0xff, i&0xff)
}

// AddTestDomain adds test domain i, named vm<i>, with id i, UUID
// TestUUID(i) and nics NICs (TestMAC, on taps vnet<i*nics+n>), in the
// given state and reason.
func AddTestDomain(t testing.TB, s *Server, i int, state, reason int32, nics int) Domain {
	t.Helper()
	var ns []NIC
	for n := 0; n < nics; n++ {
		ns = append(ns, NIC{MAC: TestMAC(i, n), Target: fmt.Sprintf("vnet%d", i*nics+n)})
	}
	name := fmt.Sprintf("vm%d", i)
	d := Domain{Name: name, UUID: TestUUID(i), ID: int32(i), State: state, Reason: reason,
		XML: LiveXML(name, TestUUID(i), int32(i), ns...)}
	if err := s.AddDomain(d); err != nil {
		t.Fatal(err)
	}
	d, _ = s.Domain(d.Name)
	return d
}

// CheckLeaks fails t if goroutines started during the test outlive it.
func CheckLeaks(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		if err := goleak.Find(ignore); err != nil {
			t.Errorf("goroutines leaked: %v", err)
		}
	})
}
