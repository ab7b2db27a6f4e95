package netnstest

import (
	"encoding/binary"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Sniffer records the frames crossing a device in both directions through
// a packet socket, with the 802.1Q tags the kernel took off (it hands them
// to packet sockets beside the frame, PACKET_AUXDATA) put back in place: a
// capture without tcpdump, which the kernel rig (test/kernel) lacks.
type Sniffer struct {
	fd     int
	mu     sync.Mutex
	frames [][]byte
	stop   chan struct{}
	done   chan struct{}
}

// Sniff starts recording on ifname in ns; Stop returns what it saw. It is
// stopped at cleanup.
func Sniff(t testing.TB, ns *NS, ifname string) *Sniffer {
	t.Helper()
	ifi := ns.Interface(t, ifname)
	s := &Sniffer{stop: make(chan struct{}), done: make(chan struct{})}
	err := ns.Do(func() error {
		proto := int(htons(unix.ETH_P_ALL))
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
		if err != nil {
			return err
		}
		s.fd = fd
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_AUXDATA, 1); err != nil {
			return err
		}
		tv := unix.NsecToTimeval((50 * time.Millisecond).Nanoseconds())
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index})
	})
	if err != nil {
		if s.fd > 0 {
			unix.Close(s.fd)
		}
		t.Fatalf("%s: sniff %s: %v", ns.Name, ifname, err)
	}
	go s.run()
	t.Cleanup(func() { s.Stop() })
	return s
}

func (s *Sniffer) run() {
	defer close(s.done)
	buf := make([]byte, 65536)
	oob := make([]byte, unix.CmsgSpace(int(unsafe.Sizeof(unix.TpacketAuxdata{}))))
	for {
		select {
		case <-s.stop:
			return
		default:
		}
		n, oobn, _, _, err := unix.Recvmsg(s.fd, buf, oob, 0)
		if err != nil || n < 14 {
			continue
		}
		frame := append([]byte(nil), buf[:n]...)
		if tag, ok := vlanTag(oob[:oobn]); ok {
			frame = append(frame[:12:12], append(tag, frame[12:]...)...)
		}
		s.mu.Lock()
		s.frames = append(s.frames, frame)
		s.mu.Unlock()
	}
}

// vlanTag returns the 802.1Q tag (TPID and TCI) the kernel reports for a
// frame in its auxiliary data, if it had one.
func vlanTag(oob []byte) ([]byte, bool) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, false
	}
	for _, m := range msgs {
		if m.Header.Level != unix.SOL_PACKET || m.Header.Type != unix.PACKET_AUXDATA ||
			len(m.Data) < int(unsafe.Sizeof(unix.TpacketAuxdata{})) {
			continue
		}
		aux := (*unix.TpacketAuxdata)(unsafe.Pointer(&m.Data[0]))
		if aux.Status&unix.TP_STATUS_VLAN_VALID == 0 {
			return nil, false
		}
		tpid := aux.Vlan_tpid
		if aux.Status&unix.TP_STATUS_VLAN_TPID_VALID == 0 || tpid == 0 {
			tpid = unix.ETH_P_8021Q
		}
		tag := make([]byte, 4)
		binary.BigEndian.PutUint16(tag, tpid)
		binary.BigEndian.PutUint16(tag[2:], aux.Vlan_tci)
		return tag, true
	}
	return nil, false
}

// Stop ends the capture and returns the frames seen, in order. It may be
// called more than once.
func (s *Sniffer) Stop() [][]byte {
	// Give frames in flight a moment to reach the socket.
	time.Sleep(50 * time.Millisecond)
	select {
	case <-s.stop:
	default:
		close(s.stop)
		<-s.done
		unix.Close(s.fd)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.frames
}

// VLANOf returns the VLAN ID of an 802.1Q-tagged frame and its inner
// EtherType; ok is false for an untagged frame.
func VLANOf(frame []byte) (vid, etherType uint16, ok bool) {
	if len(frame) < 18 || binary.BigEndian.Uint16(frame[12:]) != unix.ETH_P_8021Q {
		return 0, 0, false
	}
	return binary.BigEndian.Uint16(frame[14:]) & 0x0fff, binary.BigEndian.Uint16(frame[16:]), true
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
