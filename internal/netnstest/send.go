package netnstest

import (
	"testing"

	"golang.org/x/sys/unix"
)

// Send writes one raw Ethernet frame (destination, source, EtherType,
// payload) out of device dev in ns.
func Send(t testing.TB, ns *NS, dev string, frame []byte) {
	t.Helper()
	ifi := ns.Interface(t, dev)
	err := ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		sa := &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6}
		copy(sa.Addr[:], frame[:6])
		return unix.Sendto(fd, frame, 0, sa)
	})
	if err != nil {
		t.Fatalf("%s: send on %s: %v", ns.Name, dev, err)
	}
}
