package fdb

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// neighConn makes the two requests of a repair on a bridge without VLAN
// filtering, "the entry of this MAC" (RTM_GETNEIGH) and "delete this entry"
// (RTM_DELNEIGH), on one NETLINK_ROUTE socket with one receive buffer it
// keeps. The netlink package receives every reply into a 64 KiB array on
// the caller's stack: each landing's goroutine, started with a small stack,
// grew it to 128 KiB for its repair (morestack and copystack were 7.6% of
// the agent's CPU in the storm benchmark). BenchmarkRepair's -library
// variant keeps that way for comparison. The netlink package still serves
// everything else (dumps, links, VLANs), which is rare or once per bridge.
type neighConn struct {
	mu  sync.Mutex
	f   *os.File // non-blocking, so reads wait in the poller with a deadline
	rc  syscall.RawConn
	seq uint32
	buf []byte
}

// neighTimeout bounds one request: the kernel answers within microseconds,
// so it only matters if a reply is lost, which must not hold a repair (and
// the pool's Repairer) forever.
const neighTimeout = 10 * time.Second

// neighBufSize holds any reply to the two requests: one neighbour message
// (about 100 bytes) or an error echoing the request.
const neighBufSize = 4096

// newNeighConn takes over s, a netlink socket opened (in the right network
// namespace) by the netlink package.
func newNeighConn(s *nl.NetlinkSocket) (*neighConn, error) {
	defer s.Close()
	fd, err := unix.FcntlInt(uintptr(s.GetFd()), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("fdb: netlink: dup: %w", err)
	}
	f := os.NewFile(uintptr(fd), "netlink") // s made it non-blocking: pollable
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("fdb: netlink: %w", err)
	}
	return &neighConn{f: f, rc: rc, buf: make([]byte, neighBufSize)}, nil
}

func (c *neighConn) Close() error { return c.f.Close() }

// get returns the bridge's VLAN 0 entry for mac; none is not an error.
func (c *neighConn) get(bridge int, mac rarp.MAC) ([]netlink.Neigh, error) {
	var out []netlink.Neigh
	err := c.do(getNeighRequest(bridge, mac), func(m syscall.NetlinkMessage) error {
		if m.Header.Type != unix.RTM_NEWNEIGH {
			return nil
		}
		// A copy: the buffer is reused by the next request.
		n, err := netlink.NeighDeserialize(bytes.Clone(m.Data))
		if err != nil {
			return err
		}
		out = append(out, *n)
		return nil
	})
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	return out, err
}

// getNeighRequest asks the bridge with index bridge for its VLAN 0 entry
// for mac (RTM_GETNEIGH for one entry, Linux 4.20+).
func getNeighRequest(bridge int, mac rarp.MAC) *nl.NetlinkRequest {
	req := nl.NewNetlinkRequest(unix.RTM_GETNEIGH, 0)
	req.AddData(&netlink.Ndmsg{Family: unix.AF_BRIDGE})
	req.AddData(nl.NewRtAttr(netlink.NDA_MASTER, nl.Uint32Attr(uint32(bridge))))
	req.AddData(nl.NewRtAttr(netlink.NDA_LLADDR, mac[:]))
	return req
}

// del deletes the entry the bridge (NTF_MASTER: its table, not the port's
// own) holds for n's MAC on n's port in n's VLAN.
func (c *neighConn) del(n netlink.Neigh) error {
	req := nl.NewNetlinkRequest(unix.RTM_DELNEIGH, unix.NLM_F_ACK)
	req.AddData(&netlink.Ndmsg{Family: unix.AF_BRIDGE, Index: uint32(n.LinkIndex), Flags: netlink.NTF_MASTER})
	req.AddData(nl.NewRtAttr(netlink.NDA_LLADDR, n.HardwareAddr))
	if n.Vlan != 0 {
		req.AddData(nl.NewRtAttr(netlink.NDA_VLAN, nl.Uint16Attr(uint16(n.Vlan))))
	}
	return c.do(req, func(syscall.NetlinkMessage) error { return nil })
}

// do sends req and hands each message of its reply to each, until the last
// one: a message without NLM_F_MULTI, or the acknowledgement. A kernel
// error comes back as its errno.
func (c *neighConn) do(req *nl.NetlinkRequest, each func(syscall.NetlinkMessage) error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	req.Seq = c.seq
	msg := req.Serialize()
	deadline := time.Now().Add(neighTimeout)
	if err := c.f.SetDeadline(deadline); err != nil {
		return err
	}
	var opErr error
	kernel := &unix.SockaddrNetlink{Family: unix.AF_NETLINK}
	if err := c.rc.Write(func(fd uintptr) bool {
		opErr = unix.Sendto(int(fd), msg, 0, kernel)
		return opErr != unix.EAGAIN
	}); err != nil {
		return err
	}
	if opErr != nil {
		return opErr
	}
	for {
		var n int
		var from unix.Sockaddr
		if err := c.rc.Read(func(fd uintptr) bool {
			// MSG_TRUNC: n is the datagram's length even if the buffer
			// was shorter, so a truncated reply is an error, not garbage.
			n, from, opErr = unix.Recvfrom(int(fd), c.buf, unix.MSG_TRUNC)
			return opErr != unix.EAGAIN
		}); err != nil {
			return err
		}
		if opErr != nil {
			return opErr
		}
		if n > len(c.buf) {
			return fmt.Errorf("netlink reply of %d bytes truncated to %d", n, len(c.buf))
		}
		if sa, ok := from.(*unix.SockaddrNetlink); !ok || sa.Pid != 0 {
			continue // not from the kernel
		}
		msgs, err := syscall.ParseNetlinkMessage(c.buf[:n])
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if m.Header.Seq != req.Seq {
				continue // the late reply of a request that timed out
			}
			switch m.Header.Type {
			case unix.NLMSG_ERROR:
				if len(m.Data) < 4 {
					return errors.New("netlink: short error message")
				}
				if errno := int32(binary.NativeEndian.Uint32(m.Data[:4])); errno != 0 {
					return syscall.Errno(-errno)
				}
				return nil // the acknowledgement
			case unix.NLMSG_DONE:
				return nil
			}
			if err := each(m); err != nil {
				return err
			}
			if m.Header.Flags&unix.NLM_F_MULTI == 0 {
				return nil
			}
		}
	}
}
