package announce

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"

	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"
)

// Sender puts frames on one interface (or into a file).
type Sender interface {
	Send(frame []byte) error
	Close() error
}

// Opener opens the Sender for an interface name.
type Opener func(ifname string) (Sender, error)

// Interface errors, so callers can tell an operator which case it is.
var (
	ErrNoInterface   = errors.New("no such interface")
	ErrInterfaceDown = errors.New("interface is down")
)

// CheckInterface returns the named interface (name, index and flags) if it
// exists and is administratively up; the error names the interface.
//
// It asks the kernel about this one interface (SIOCGIFINDEX, SIOCGIFFLAGS)
// instead of using net.InterfaceByName, which dumps every interface of the
// host with its addresses: on a hypervisor with 2,000 taps that took 80 to
// 140 ms, paid by the first frame on an interface (and again after an idle
// link is reopened).
func CheckInterface(name string) (*net.Interface, error) {
	// Any socket serves for interface ioctls; the kernel answers for the
	// socket's network namespace.
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, ErrNoInterface) // name too long: no such interface
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFINDEX, ifr); err != nil {
		if errors.Is(err, unix.ENODEV) {
			return nil, fmt.Errorf("%s: %w", name, ErrNoInterface)
		}
		return nil, fmt.Errorf("%s: interface index: %w", name, err)
	}
	ifi := &net.Interface{Index: int(ifr.Uint32()), Name: name}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		if errors.Is(err, unix.ENODEV) {
			return nil, fmt.Errorf("%s: %w", name, ErrNoInterface)
		}
		return nil, fmt.Errorf("%s: interface flags: %w", name, err)
	}
	if ifr.Uint16()&unix.IFF_UP == 0 {
		return nil, fmt.Errorf("%s: %w", name, ErrInterfaceDown)
	}
	ifi.Flags = net.FlagUp
	return ifi, nil
}

// OpenPacket opens an AF_PACKET raw socket for sending on ifname. Raw, not
// Datagram: the frame carries its own Ethernet header, whose source is the
// VM's MAC, not the interface's. It binds protocol 0, so the kernel never
// queues received frames on it, and the kernel reads skb->protocol from the
// frame itself, which keeps 802.1Q-tagged frames correct.
func OpenPacket(ifname string) (Sender, error) {
	ifi, err := CheckInterface(ifname)
	if err != nil {
		return nil, err
	}
	c, err := packet.Listen(ifi, packet.Raw, 0, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: open packet socket: %w", ifname, err)
	}
	rc, err := c.SyscallConn()
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("%s: open packet socket: %w", ifname, err)
	}
	s := &packetSender{c: c, rc: rc, ifname: ifname}
	s.sendFn = s.sendOnce
	return s, nil
}

// Marked wraps open so that every packet socket it opens marks its frames
// (SO_MARK: skb->mark, which never leaves the host) with mark, and the
// agent's own packet sockets can tell its frames from those a bridge
// forwards: the premature-move watch on an uplink
// (reconverge.Shared.OwnMark) drops them in its kernel filter instead of
// waking for each. Linux allows SO_MARK with CAP_NET_RAW from 5.17, only
// with CAP_NET_ADMIN before; where it is refused the socket sends
// unmarked, as before, and refused (if set) gets the error. Mark 0: open
// itself.
func Marked(open Opener, mark uint32, refused func(error)) Opener {
	if mark == 0 {
		return open
	}
	return func(ifname string) (Sender, error) {
		s, err := open(ifname)
		if err != nil {
			return s, err
		}
		if p, ok := s.(*packetSender); ok {
			if err := p.setMark(mark); err != nil && refused != nil {
				refused(err)
			}
		}
		return s, nil
	}
}

func (s *packetSender) setMark(mark uint32) error {
	var serr error
	if err := s.rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark))
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("%s: set socket mark %#x: %w", s.ifname, mark, serr)
	}
	return nil
}

type packetSender struct {
	c      *packet.Conn
	rc     syscall.RawConn
	ifname string

	mu     sync.Mutex // one frame at a time through sendFn
	frame  []byte
	errno  syscall.Errno
	sendFn func(fd uintptr) bool // s.sendOnce, bound once: nothing allocated per frame
}

// Send writes frame on the interface the socket is bound to: send(2)
// under the socket's write lock, the poller waiting if the queue is full.
// Nothing is allocated per frame; packet.Conn.WriteTo (kept as a variant
// of BenchmarkPacketSendVeth) allocated 9 times, 372 bytes, for the
// address and the closures around the system call: in a storm of 10,000
// frames, garbage for the collector to chase.
func (s *packetSender) Send(frame []byte) error {
	if len(frame) == 0 {
		return fmt.Errorf("%s: empty frame", s.ifname)
	}
	s.mu.Lock()
	s.frame, s.errno = frame, 0
	err := s.rc.Write(s.sendFn)
	errno := s.errno
	s.frame = nil
	s.mu.Unlock()
	if err == nil && errno != 0 {
		err = os.NewSyscallError("sendto", errno)
	}
	return s.sendErr(err)
}

// sendOnce is the body of Send: false asks the poller to wait until the
// socket can take the frame.
func (s *packetSender) sendOnce(fd uintptr) bool {
	for {
		_, _, e := unix.Syscall6(unix.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&s.frame[0])), uintptr(len(s.frame)), 0, 0, 0)
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		s.errno = e
		return true
	}
}

// sendErr names the interface in a send's error, and says which case it
// is when the interface went down or away.
func (s *packetSender) sendErr(err error) error {
	if err != nil {
		if errors.Is(err, unix.ENETDOWN) {
			return fmt.Errorf("%s: %w", s.ifname, ErrInterfaceDown)
		}
		if errors.Is(err, unix.ENXIO) || errors.Is(err, unix.ENODEV) {
			return fmt.Errorf("%s: %w", s.ifname, ErrNoInterface)
		}
		return fmt.Errorf("%s: %w", s.ifname, err)
	}
	return nil
}

func (s *packetSender) Close() error { return s.c.Close() }
