package netnstest

import (
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Tap is the user-space side of a tap device, standing in for QEMU. While
// it is open the tap has carrier (a tap nobody holds is NO-CARRIER and its
// bridge port is "disabled"); frames the kernel sends to the tap can be read
// from it, frames written to it enter the kernel as if the guest sent them.
type Tap struct {
	Name string
	f    *os.File
}

// OpenTap opens tap name inside ns: it attaches to a persistent tap made
// with `ip tuntap add`, or creates a non-persistent one (as libvirt does),
// which disappears when the Tap is closed. It is closed at cleanup.
func OpenTap(t testing.TB, ns *NS, name string) *Tap {
	t.Helper()
	var fd int
	err := ns.Do(func() error {
		// The tap's namespace is the one /dev/net/tun was opened in.
		var err error
		fd, err = unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			return err
		}
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			unix.Close(fd)
			return err
		}
		ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			return fmt.Errorf("TUNSETIFF: %w", err)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s: open tap %s: %v", ns.Name, name, err)
	}
	// A non-blocking descriptor makes os.File use the poller, so reads
	// honour deadlines.
	tap := &Tap{Name: name, f: os.NewFile(uintptr(fd), name)}
	t.Cleanup(func() { tap.Close() })
	return tap
}

// Close releases the tap: a persistent tap loses carrier, a non-persistent
// one is deleted.
func (tap *Tap) Close() error { return tap.f.Close() }

// Write sends one frame into the kernel as if the guest sent it.
func (tap *Tap) Write(frame []byte) error {
	_, err := tap.f.Write(frame)
	return err
}

// ErrNoFrame is returned by Read when no matching frame came in time.
var ErrNoFrame = errors.New("no matching frame")

// Read returns the first frame for which match is true, reading (and
// dropping) other frames until timeout passes.
func (tap *Tap) Read(timeout time.Duration, match func(frame []byte) bool) ([]byte, error) {
	if err := tap.f.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return nil, err
	}
	buf := make([]byte, 65536)
	for {
		n, err := tap.f.Read(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, ErrNoFrame
		}
		if err != nil {
			return nil, err
		}
		if match(buf[:n]) {
			return append([]byte(nil), buf[:n]...), nil
		}
	}
}
