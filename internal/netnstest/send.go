package netnstest

import (
	"testing"

	"golang.org/x/sys/unix"
)

// Send writes one raw Ethernet frame (destination, source, EtherType,
// payload) out of device dev in ns.
func Send(t testing.TB, ns *NS, dev string, frame []byte) {
	t.Helper()
	SendEach(t, ns, dev, 1, func(int) []byte { return frame })
}

// SendEach writes n raw Ethernet frames, frame(0) to frame(n-1), out of
// device dev in ns through one socket (teaching bridges many MACs fast).
// frame may reuse one buffer.
func SendEach(t testing.TB, ns *NS, dev string, n int, frame func(i int) []byte) {
	t.Helper()
	ifi := ns.Interface(t, dev)
	err := ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		for i := range n {
			f := frame(i)
			sa := &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6}
			copy(sa.Addr[:], f[:6])
			if err := unix.Sendto(fd, f, 0, sa); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s: send on %s: %v", ns.Name, dev, err)
	}
}
