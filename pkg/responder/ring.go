package responder

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// How requests come in and replies go out, and why (measured with
// test/peer, the side-by-side harness, on a 2-vCPU VM):
//
//   - Receive: a TPACKET_V2 PACKET_RX_RING. The kernel copies each
//     request into a ring shared with us in its softirq (on the sender's
//     CPU over veth) and frees the skb there, so a request costs us no
//     receive syscall, no copy and no skb free. V3 rings were not used:
//     they wake the reader per block or after a timeout counted in
//     milliseconds, which would add milliseconds of latency at low rates.
//   - Filter: a classic BPF program on the socket passes only frames for
//     this host (not PACKET_OTHERHOST/OUTGOING, as rarpd checks
//     sll_pkttype), without a VLAN tag the kernel left on the frame (a
//     request on a VLAN we do not serve) and with op 3, or too short to
//     hold an op (so they are counted as malformed). Other servers' replies
//     never reach user space.
//   - Wait: the Go netpoller (epoll, edge-triggered). A blocking syscall
//     on a thread of its own cost about twice as much per request with
//     GOMAXPROCS=1: the runtime's sysmon retook the P from the blocked
//     thread every 20 µs and woke other threads to hand it back.
//   - Send: sendmmsg on a second packet socket, a batch at a time, without
//     per-message addresses (the socket is bound to the interface and the
//     frame carries its Ethernet header). A separate socket because a
//     socket in the netpoller is woken for write space every time one of
//     its sent skbs is freed: replies sent on the receiving socket woke the
//     waiting thread for nothing. A PACKET_TX_RING was slower over veth
//     (the kernel copies ring pages again when forwarding to the peer), and
//     PACKET_QDISC_BYPASS is not used because it hides the replies from
//     tcpdump on this host.
//   - Coalesce: after a batch of at least 2 requests the loop sleeps for a
//     short window (nanosleep, 100 µs by default) before it drains the ring
//     again, instead of going back to epoll. Under load this turns one
//     wake-up per few requests into one per tens of requests; a wake-up
//     (context switch, idle exit) costs 10-20 µs here, several times the
//     cost of a reply. A lone request (a batch of 1) is answered and the
//     loop waits in epoll at once, so latency at low rates is unchanged.
//
// With these, a reply costs about 2 µs of CPU under load, most of it the
// kernel's transmit path (including the receiving side of the veth, which
// runs in our softirq); rarpd spends about 25 µs.

const (
	frameSize = 128     // ring slot: 32 header + 20 sockaddr_ll + padding + 62 bytes of frame
	blockSize = 1 << 16 // ring block; frames never straddle blocks
	snapLen   = 64      // the BPF program truncates every frame to this
	batchSize = 64      // replies per sendmmsg

	// DefaultRingFrames is the receive ring size in frames (2 MiB): it
	// absorbs 70 ms of requests at the 230k/s a load generator reaches
	// here, longer than the scheduler can keep the loop away (a table
	// reload competing for the only CPU, a GC pause).
	DefaultRingFrames = 16384
)

// requestFilter is the filter (see above) for a socket bound to ifindex.
// Offsets are in the Ethernet frame; a skip of n jumps over n
// instructions. Its first test matters on the parent of VLAN devices: the
// kernel hands a frame received on eth0.100, untagged, also to the
// protocol handlers bound to eth0 (its orig_dev), with skb->dev eth0.100.
// rarpd drops those by sll_ifindex; this filter drops them in the kernel
// (SKF_AD_IFINDEX), before they take a ring slot, so the parent neither
// answers a request of another VLAN untagged nor counts it.
func requestFilter(ifindex int) []bpf.Instruction {
	return []bpf.Instruction{
		/* 0 */ bpf.LoadExtension{Num: bpf.ExtInterfaceIndex}, // the device that received it
		/* 1 */ bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: uint32(ifindex), SkipTrue: 9}, // another device's frame: drop
		/* 2 */ bpf.LoadExtension{Num: bpf.ExtType}, // sll_pkttype
		/* 3 */ bpf.JumpIf{Cond: bpf.JumpGreaterOrEqual, Val: unix.PACKET_OTHERHOST, SkipTrue: 7}, // OTHERHOST, OUTGOING, LOOPBACK: drop
		/* 4 */ bpf.LoadExtension{Num: bpf.ExtVLANTagPresent},
		/* 5 */ bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 0, SkipTrue: 5}, // a tag for a VLAN not served here: drop
		/* 6 */ bpf.LoadExtension{Num: bpf.ExtLen},
		/* 7 */ bpf.JumpIf{Cond: bpf.JumpLessThan, Val: 22, SkipTrue: 2}, // no room for op: pass, counted as short
		/* 8 */ bpf.LoadAbsolute{Off: 20, Size: 2}, // op
		/* 9 */ bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: uint32(rarp.OpReverseRequest), SkipTrue: 1},
		/* 10 */ bpf.RetConstant{Val: snapLen}, // pass, truncated
		/* 11 */ bpf.RetConstant{Val: 0}, // drop
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// mmsghdr is struct mmsghdr (x/sys has no type for it).
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
	_   [4]byte
}

// packetRing is one interface's receive ring and send socket.
type packetRing struct {
	file   *os.File // the ring socket, in the netpoller
	rc     syscall.RawConn
	mem    []byte
	frames int
	cur    int
	txfd   int

	tx   [batchSize][snapLen]byte
	iov  [batchSize]unix.Iovec
	msgs [batchSize]mmsghdr
	n    int // replies queued in tx
}

// openRing opens the sockets for interface ifindex in the calling
// thread's network namespace.
func openRing(ifindex, frames int) (_ *packetRing, err error) {
	if frames <= 0 {
		frames = DefaultRingFrames
	}
	perBlock := blockSize / frameSize
	blocks := (frames + perBlock - 1) / perBlock
	frames = blocks * perBlock

	// Protocol 0 until the filter and the ring are in place, so no frame
	// is queued before them.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open packet socket: %w (needs CAP_NET_RAW)", err)
	}
	r := &packetRing{txfd: -1}
	defer func() {
		if err != nil {
			if r.mem != nil {
				_ = unix.Munmap(r.mem)
			}
			if r.file != nil {
				r.file.Close()
			} else {
				unix.Close(fd)
			}
			if r.txfd >= 0 {
				unix.Close(r.txfd)
			}
		}
	}()
	prog, err := bpf.Assemble(requestFilter(ifindex))
	if err != nil {
		return nil, err
	}
	raw := make([]unix.SockFilter, len(prog))
	for i, ins := range prog {
		raw[i] = unix.SockFilter{Code: ins.Op, Jt: ins.Jt, Jf: ins.Jf, K: ins.K}
	}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: uint16(len(raw)), Filter: &raw[0]}); err != nil {
		return nil, fmt.Errorf("attach filter: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V2); err != nil {
		return nil, fmt.Errorf("TPACKET_V2: %w", err)
	}
	req := unix.TpacketReq{Block_size: blockSize, Block_nr: uint32(blocks), Frame_size: frameSize, Frame_nr: uint32(frames)}
	if err := unix.SetsockoptTpacketReq(fd, unix.SOL_PACKET, unix.PACKET_RX_RING, &req); err != nil {
		return nil, fmt.Errorf("receive ring: %w", err)
	}
	r.mem, err = unix.Mmap(fd, 0, blocks*blockSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return nil, fmt.Errorf("map receive ring: %w", err)
	}
	r.frames = frames
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(rarp.EtherTypeRARP), Ifindex: ifindex}); err != nil {
		return nil, fmt.Errorf("bind: %w", err)
	}
	r.file = os.NewFile(uintptr(fd), "rarp-ring")
	if r.rc, err = r.file.SyscallConn(); err != nil {
		return nil, err
	}

	// The send socket: protocol 0, so it never receives; the kernel takes
	// the frame's EtherType from its header.
	r.txfd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open packet socket: %w", err)
	}
	if err := unix.Bind(r.txfd, &unix.SockaddrLinklayer{Protocol: 0, Ifindex: ifindex}); err != nil {
		return nil, fmt.Errorf("bind: %w", err)
	}
	// Room for several batches in flight; more needs CAP_NET_ADMIN.
	if unix.SetsockoptInt(r.txfd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 4<<20) != nil {
		_ = unix.SetsockoptInt(r.txfd, unix.SOL_SOCKET, unix.SO_SNDBUF, 4<<20)
	}
	for i := range r.msgs {
		r.iov[i].Base = &r.tx[i][0]
		r.iov[i].SetLen(ReplyLen)
		r.msgs[i].hdr.Iov = &r.iov[i]
		r.msgs[i].hdr.Iovlen = 1
	}
	return r, nil
}

// next returns the next frame the kernel has filled, or nil. The caller
// must release it before calling next again.
func (r *packetRing) next() []byte {
	off := r.cur * frameSize
	h := (*unix.Tpacket2Hdr)(unsafe.Pointer(&r.mem[off]))
	if atomic.LoadUint32(&h.Status)&unix.TP_STATUS_USER == 0 {
		return nil
	}
	start := off + int(h.Mac)
	end := start + int(h.Snaplen)
	if end > off+frameSize || start < off {
		return r.mem[off:off] // cannot happen with our ring; treated as a short frame
	}
	return r.mem[start:end]
}

// release hands the current frame back to the kernel.
func (r *packetRing) release() {
	h := (*unix.Tpacket2Hdr)(unsafe.Pointer(&r.mem[r.cur*frameSize]))
	atomic.StoreUint32(&h.Status, unix.TP_STATUS_KERNEL)
	r.cur++
	if r.cur == r.frames {
		r.cur = 0
	}
}

// slot returns the buffer for the next reply.
func (r *packetRing) slot() []byte { return r.tx[r.n][:] }

// flush sends the queued replies. It returns how many went out and the
// error that stopped the rest.
func (r *packetRing) flush() (sent int, err error) {
	retries := 0
	for sent < r.n {
		// RawSyscall: sendmmsg with MSG_DONTWAIT does not block, so the
		// runtime need not be told (entersyscall/exitsyscall).
		n, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, uintptr(r.txfd), uintptr(unsafe.Pointer(&r.msgs[sent])), uintptr(r.n-sent), unix.MSG_DONTWAIT, 0, 0)
		if e == 0 {
			sent += int(n)
			continue
		}
		if (e == unix.EAGAIN || e == unix.ENOBUFS) && retries < 3 {
			// The send buffer is full of replies the peer has not taken
			// yet: give it a moment rather than drop.
			retries++
			pfd := []unix.PollFd{{Fd: int32(r.txfd), Events: unix.POLLOUT}}
			_, _ = unix.Poll(pfd, 2)
			continue
		}
		if e == unix.EINTR {
			continue
		}
		err = e
		break
	}
	r.n = 0
	return sent, err
}

// drops reads and resets the kernel's count of requests dropped because
// the ring was full.
func (r *packetRing) drops() uint64 {
	var n uint64
	_ = r.rc.Control(func(fd uintptr) {
		st, err := unix.GetsockoptTpacketStats(int(fd), unix.SOL_PACKET, unix.PACKET_STATISTICS)
		if err == nil {
			n = uint64(st.Drops)
		}
	})
	return n
}

// close releases the sockets and the ring. The serving loop must have
// returned.
func (r *packetRing) close() error {
	err := r.file.Close()
	if r.txfd >= 0 {
		unix.Close(r.txfd)
		r.txfd = -1
	}
	if r.mem != nil {
		_ = unix.Munmap(r.mem)
		r.mem = nil
	}
	if errors.Is(err, os.ErrClosed) {
		err = nil
	}
	return err
}
