package ovs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// streamConn is a net.Conn whose reads come from a fixed byte stream (the
// switch's side, fuzzed) and whose writes are recorded.
type streamConn struct {
	net.Conn // nil: only the methods below are used
	r        io.Reader
	mu       sync.Mutex
	wrote    bytes.Buffer
	closed   bool
}

func (c *streamConn) Read(p []byte) (int, error) { return c.r.Read(p) }
func (c *streamConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.wrote.Write(p)
}
func (c *streamConn) Close() error                     { c.closed = true; return nil }
func (c *streamConn) SetDeadline(time.Time) error      { return nil }
func (c *streamConn) SetWriteDeadline(time.Time) error { return nil }
func (c *streamConn) SetReadDeadline(time.Time) error  { return nil }

// FuzzOpenFlowReader feeds arbitrary bytes as what the switch sends: the
// HELLO negotiation and then the reader that dispatches the switch's
// messages (echo, error, barrier replies, anything else). Neither may
// panic or hang; the version negotiated is one this client speaks; the
// reader ends with the connection failed (never silently), answers every
// ECHO_REQUEST with a well-formed ECHO_REPLY of the same xid and payload,
// and resolves a waiting barrier only with nil or an OpenFlow error.
func FuzzOpenFlowReader(f *testing.F) {
	msg := func(v, typ uint8, xid uint32, body ...byte) []byte {
		b := make([]byte, ofpHeaderLen+len(body))
		copy(b[ofpHeaderLen:], body)
		header(b, v, typ, xid)
		return b
	}
	bitmap := []byte{0, ofpHelloElemVersionBitmap, 0, 8, 0, 0, 0, 0x32}
	f.Add(msg(ofpv14, ofptHello, 0, bitmap...), msg(ofpv14, ofptEchoRequest, 7, 1, 2, 3))
	f.Add(msg(ofpv10, ofptHello, 0), msg(ofpv10, ofpt10BarrierRepl, 1))
	f.Add(msg(ofpv14, ofptError, 0, 0, 1, 0, 2), msg(ofpv14, ofptError, 1, 0, 4, 0, 9))
	f.Add(msg(0x06, ofptHello, 0, 0, 1, 0, 8, 0, 0, 0, 0x40), []byte{1, 2, 3})
	f.Add(msg(ofpv14, ofptHello, 0, 0, 1, 0, 3, 0xff), msg(ofpv14, ofpt11BarrierRepl, 1, 0xff))
	f.Add([]byte{5, 0, 0, 4, 0, 0, 0, 0}, []byte{})
	f.Fuzz(func(t *testing.T, handshake, stream []byte) {
		hc := &streamConn{r: bytes.NewReader(handshake)}
		v, err := hello(hc)
		if err == nil && (v > 31 || supportedVersions&(1<<v) == 0) {
			t.Fatalf("negotiated version %d, which this client does not speak", v)
		}
		if err == nil {
			v = ofpv14
		}

		c := &streamConn{r: bytes.NewReader(stream)}
		oc := &ofConn{c: c, version: v, waiting: map[uint32]chan error{}, done: make(chan struct{}), xid: 1}
		barrier := make(chan error, 1)
		oc.waiting[1] = barrier
		finished := make(chan struct{})
		go func() { oc.read(); close(finished) }()
		select {
		case <-finished:
		case <-time.After(5 * time.Second):
			t.Fatal("reader did not end on a finite stream")
		}
		if !oc.broken() || oc.failure() == nil || !c.closed {
			t.Fatalf("reader ended without failing the connection (err %v, closed %v)", oc.failure(), c.closed)
		}
		select {
		case err := <-barrier:
			if err != nil && !errors.Is(err, ErrOpenFlow) {
				t.Fatalf("barrier resolved with %v, want nil or an OpenFlow error", err)
			}
		default:
		}
		// Every reply written is an ECHO_REPLY echoing a request of the
		// stream, in order.
		var echoes [][]byte
		for r := bytes.NewReader(stream); ; {
			h, body, err := readMsg(r)
			if err != nil {
				break
			}
			if h.typ == ofptEchoRequest {
				e := make([]byte, ofpHeaderLen+len(body))
				copy(e[ofpHeaderLen:], body)
				header(e, v, ofptEchoReply, h.xid)
				echoes = append(echoes, e)
			}
		}
		if want := bytes.Join(echoes, nil); !bytes.Equal(c.wrote.Bytes(), want) {
			t.Fatalf("replies written %x, want %x", c.wrote.Bytes(), want)
		}
		for w := c.wrote.Bytes(); len(w) > 0; {
			if len(w) < ofpHeaderLen || int(binary.BigEndian.Uint16(w[2:])) > len(w) {
				t.Fatalf("malformed reply %x", w)
			}
			w = w[binary.BigEndian.Uint16(w[2:]):]
		}
	})
}
