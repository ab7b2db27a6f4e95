package ovs

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/rarp-announce/rarp-announce/pkg/wait"
)

// OpenFlow message types and constants this client uses. Only what a
// packet-out needs: HELLO (version negotiation), ECHO (keepalive), ERROR,
// PACKET_OUT and BARRIER (to learn that the packet-out was executed, or
// why not).
const (
	ofpHeaderLen = 8

	ofpv10 = 0x01
	ofpv11 = 0x02
	ofpv14 = 0x05

	ofptHello         = 0
	ofptError         = 1
	ofptEchoRequest   = 2
	ofptEchoReply     = 3
	ofptPacketOut     = 13
	ofpt10BarrierReq  = 18
	ofpt10BarrierRepl = 19
	ofpt11BarrierReq  = 20
	ofpt11BarrierRepl = 21

	ofpHelloElemVersionBitmap = 1

	ofpp10Table = 0xfff9     // OFPP_TABLE in OpenFlow 1.0
	ofpp11Table = 0xfffffff9 // OFPP_TABLE in OpenFlow 1.1 and later
	ofpNoBuffer = 0xffffffff

	// maxOFPort is the highest physical port number OVS assigns (OFPP_MAX
	// in OpenFlow 1.0 is 0xff00).
	maxOFPort = 0xfeff
)

// supportedVersions: OpenFlow 1.0 and 1.1-1.4 share the two packet-out
// layouts encoded below; 1.5 moved in_port into a match and is not offered.
// OVS enables 1.0-1.5 on a bridge by default, Neutron and OVN enable 1.3,
// so a common version always exists unless a bridge allows 1.5 alone.
const supportedVersions = 1<<1 | 1<<2 | 1<<3 | 1<<4 | 1<<5

// ofConn is one OpenFlow connection to a bridge's management socket. Many
// goroutines may PacketOut at once: writes are serialized and a reader
// goroutine hands each barrier reply or error to the waiting caller by
// transaction id, and answers the switch's echo requests so the switch
// never drops an idle connection.
type ofConn struct {
	c       net.Conn
	version uint8

	wmu sync.Mutex // serializes writes

	mu      sync.Mutex
	xid     uint32
	waiting map[uint32]chan error
	err     error // set once the connection failed; closed connection
	done    chan struct{}
}

// dialOpenFlow connects to a bridge's management socket (a unix socket,
// "<rundir>/<bridge>.mgmt" for ovs-vswitchd) and negotiates a version.
func dialOpenFlow(ctx context.Context, path string) (*ofConn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("connect %s: %w", path, ErrTimeout)
		}
		return nil, fmt.Errorf("connect %s: %w", path, dialError(err))
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	v, err := hello(c)
	if err != nil {
		c.Close()
		if errors.Is(err, ErrOpenFlow) {
			return nil, fmt.Errorf("openflow handshake on %s: %w", path, err)
		}
		if ctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, fmt.Errorf("openflow handshake on %s: %w", path, ErrTimeout)
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
			return nil, fmt.Errorf("openflow handshake on %s: switch closed the connection: %w", path, ErrNotRunning)
		}
		return nil, fmt.Errorf("openflow handshake on %s: %w", path, dialError(err))
	}
	_ = c.SetDeadline(time.Time{})
	oc := &ofConn{c: c, version: v, waiting: map[uint32]chan error{}, done: make(chan struct{}), xid: 1}
	go oc.read()
	return oc, nil
}

// hello exchanges HELLOs and returns the negotiated version: the highest
// both sides' version bitmaps share (OpenFlow 1.3.1+ negotiation; OVS
// always sends a bitmap), or the lower of the two header versions if the
// peer sent none.
func hello(c net.Conn) (uint8, error) {
	msg := make([]byte, 16)
	header(msg, ofpv14, ofptHello, 0)
	binary.BigEndian.PutUint16(msg[8:], ofpHelloElemVersionBitmap)
	binary.BigEndian.PutUint16(msg[10:], 8)
	binary.BigEndian.PutUint32(msg[12:], supportedVersions)
	if _, err := c.Write(msg); err != nil {
		return 0, err
	}
	h, body, err := readMsg(c)
	if err != nil {
		return 0, err
	}
	if h.typ == ofptError {
		return 0, fmt.Errorf("%w: %s", ErrOpenFlow, errorText(body))
	}
	if h.typ != ofptHello {
		return 0, fmt.Errorf("%w: expected HELLO, got message type %d", ErrOpenFlow, h.typ)
	}
	theirs := uint32(0)
	for b := body; len(b) >= 4; {
		typ, n := binary.BigEndian.Uint16(b), int(binary.BigEndian.Uint16(b[2:]))
		if n < 4 || n > len(b) {
			break
		}
		if typ == ofpHelloElemVersionBitmap && n >= 8 {
			theirs = binary.BigEndian.Uint32(b[4:])
		}
		adv := (n + 7) / 8 * 8 // elements are padded to 8 bytes
		if adv > len(b) {
			break
		}
		b = b[adv:]
	}
	if theirs == 0 {
		theirs = 1<<(min(h.version, 31)+1) - 1 // every version up to theirs
	}
	common := theirs & supportedVersions
	for v := 31; v > 0; v-- {
		if common&(1<<v) != 0 {
			return uint8(v), nil
		}
	}
	return 0, fmt.Errorf("%w: no common OpenFlow version (switch offers bitmap %#x; this client speaks 1.0-1.4)", ErrOpenFlow, theirs)
}

type ofHeader struct {
	version, typ uint8
	length       uint16
	xid          uint32
}

func header(b []byte, version, typ uint8, xid uint32) {
	b[0], b[1] = version, typ
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	binary.BigEndian.PutUint32(b[4:], xid)
}

func readMsg(r io.Reader) (ofHeader, []byte, error) {
	var hb [ofpHeaderLen]byte
	if _, err := io.ReadFull(r, hb[:]); err != nil {
		return ofHeader{}, nil, err
	}
	h := ofHeader{version: hb[0], typ: hb[1], length: binary.BigEndian.Uint16(hb[2:]), xid: binary.BigEndian.Uint32(hb[4:])}
	if h.length < ofpHeaderLen {
		return h, nil, fmt.Errorf("%w: message length %d", ErrOpenFlow, h.length)
	}
	body := make([]byte, h.length-ofpHeaderLen)
	if _, err := io.ReadFull(r, body); err != nil {
		return h, nil, err
	}
	return h, body, nil
}

// errorText renders an OFPT_ERROR body: type and code (see the OpenFlow
// spec's ofp_error_type; OVS logs the same pair by name).
func errorText(body []byte) string {
	if len(body) < 4 {
		return "malformed error message"
	}
	return fmt.Sprintf("error type %d code %d", binary.BigEndian.Uint16(body), binary.BigEndian.Uint16(body[2:]))
}

// appendPacketOut encodes an OFPT_PACKET_OUT of frame, entering the
// pipeline at table 0 (output to OFPP_TABLE) as if received on inPort.
func appendPacketOut(b []byte, version uint8, xid uint32, inPort int, frame []byte) []byte {
	start := len(b)
	if version == ofpv10 {
		// header, buffer_id, in_port(16), actions_len, action output(8)
		b = append(b, make([]byte, ofpHeaderLen+8+8)...)
		m := b[start:]
		binary.BigEndian.PutUint32(m[8:], ofpNoBuffer)
		binary.BigEndian.PutUint16(m[12:], uint16(inPort))
		binary.BigEndian.PutUint16(m[14:], 8)
		binary.BigEndian.PutUint16(m[16:], 0) // OFPAT_OUTPUT
		binary.BigEndian.PutUint16(m[18:], 8)
		binary.BigEndian.PutUint16(m[20:], ofpp10Table)
		binary.BigEndian.PutUint16(m[22:], 0) // max_len: only for CONTROLLER
	} else {
		// header, buffer_id, in_port(32), actions_len, pad(6), action output(16)
		b = append(b, make([]byte, ofpHeaderLen+16+16)...)
		m := b[start:]
		binary.BigEndian.PutUint32(m[8:], ofpNoBuffer)
		binary.BigEndian.PutUint32(m[12:], uint32(inPort))
		binary.BigEndian.PutUint16(m[16:], 16)
		binary.BigEndian.PutUint16(m[24:], 0) // OFPAT_OUTPUT
		binary.BigEndian.PutUint16(m[26:], 16)
		binary.BigEndian.PutUint32(m[28:], ofpp11Table)
	}
	b = append(b, frame...)
	header(b[start:], version, ofptPacketOut, xid)
	return b
}

func appendBarrier(b []byte, version uint8, xid uint32) []byte {
	start := len(b)
	b = append(b, make([]byte, ofpHeaderLen)...)
	typ := uint8(ofpt11BarrierReq)
	if version == ofpv10 {
		typ = ofpt10BarrierReq
	}
	header(b[start:], version, typ, xid)
	return b
}

// PacketOut injects frame as if it arrived on OpenFlow port inPort and
// returns once the switch has executed it (its barrier reply came back),
// or with the switch's OpenFlow error, or at ctx's deadline.
func (oc *ofConn) PacketOut(ctx context.Context, inPort int, frame []byte) error {
	if inPort <= 0 || inPort > maxOFPort {
		return fmt.Errorf("in_port %d: %w", inPort, ErrNoOFPort)
	}
	return oc.packetOut(ctx, inPort, frame)
}

// packetOut is PacketOut without the port check (tests use it to provoke
// the switch's errors).
func (oc *ofConn) packetOut(ctx context.Context, inPort int, frame []byte) error {
	ch := make(chan error, 1)
	oc.mu.Lock()
	if oc.err != nil {
		err := oc.err
		oc.mu.Unlock()
		return err
	}
	poXID, barXID := oc.xid, oc.xid+1
	oc.xid += 2
	// An error for the packet-out carries the packet-out's xid; the barrier
	// reply comes after it. Both resolve the same wait.
	oc.waiting[poXID] = ch
	oc.waiting[barXID] = ch
	oc.mu.Unlock()
	defer func() {
		oc.mu.Lock()
		delete(oc.waiting, poXID)
		delete(oc.waiting, barXID)
		oc.mu.Unlock()
	}()

	msg := make([]byte, 0, ofpHeaderLen+32+len(frame)+ofpHeaderLen)
	msg = appendPacketOut(msg, oc.version, poXID, inPort, frame)
	msg = appendBarrier(msg, oc.version, barXID)
	oc.wmu.Lock()
	if dl, ok := ctx.Deadline(); ok {
		_ = oc.c.SetWriteDeadline(dl)
	} else {
		_ = oc.c.SetWriteDeadline(time.Time{})
	}
	_, err := oc.c.Write(msg)
	oc.wmu.Unlock()
	if err != nil {
		if ctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded) {
			return fmt.Errorf("packet-out: %w", ErrTimeout)
		}
		oc.fail(fmt.Errorf("packet-out: %w", dialError(err)))
		return oc.failure()
	}
	select {
	case err := <-ch:
		return err
	case <-oc.done:
		return oc.failure()
	case <-ctx.Done():
		return fmt.Errorf("packet-out: no barrier reply: %w", ErrTimeout)
	}
}

// read dispatches the switch's messages until the connection fails.
func (oc *ofConn) read() {
	for {
		h, body, err := readMsg(oc.c)
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) {
				err = fmt.Errorf("switch closed the OpenFlow connection: %w", ErrNotRunning)
			}
			oc.fail(err)
			return
		}
		switch h.typ {
		case ofptEchoRequest:
			reply := make([]byte, ofpHeaderLen+len(body))
			copy(reply[ofpHeaderLen:], body)
			header(reply, oc.version, ofptEchoReply, h.xid)
			oc.wmu.Lock()
			_ = oc.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			_, err := oc.c.Write(reply)
			oc.wmu.Unlock()
			if err != nil {
				oc.fail(err)
				return
			}
		case ofptError:
			oc.resolve(h.xid, fmt.Errorf("%w: %s", ErrOpenFlow, errorText(body)))
		case ofpt10BarrierRepl, ofpt11BarrierRepl:
			oc.resolve(h.xid, nil)
		}
		// Anything else (port status and the like) is not ours to handle.
	}
}

func (oc *ofConn) resolve(xid uint32, err error) {
	oc.mu.Lock()
	ch := oc.waiting[xid]
	oc.mu.Unlock()
	if ch != nil {
		select {
		case ch <- err:
		default: // already resolved (error, then barrier reply)
		}
	}
}

func (oc *ofConn) fail(err error) {
	oc.mu.Lock()
	defer oc.mu.Unlock()
	if oc.err == nil {
		oc.err = err
		close(oc.done)
		oc.c.Close()
	}
}

func (oc *ofConn) failure() error {
	oc.mu.Lock()
	defer oc.mu.Unlock()
	return oc.err
}

// broken reports whether the connection has failed.
func (oc *ofConn) broken() bool { return wait.Closed(oc.done) }

// Close closes the connection.
func (oc *ofConn) Close() error {
	oc.fail(errors.New("openflow connection closed"))
	return nil
}
