package ovs

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// fakeSwitch is the switch side of an OpenFlow connection on a unix
// socket: serve runs on each accepted connection after its own checks.
type fakeSwitch struct {
	path  string
	ln    net.Listener
	serve func(c net.Conn)
	wg    sync.WaitGroup
}

func newFakeSwitch(t *testing.T, serve func(c net.Conn)) *fakeSwitch {
	t.Helper()
	dir, err := os.MkdirTemp("", "ofs")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "br0.mgmt")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	fs := &fakeSwitch{path: path, ln: ln, serve: serve}
	fs.wg.Add(1)
	go func() {
		defer fs.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fs.wg.Add(1)
			go func() {
				defer fs.wg.Done()
				defer c.Close()
				fs.serve(c)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); fs.wg.Wait() })
	return fs
}

// switchHello sends a HELLO of version v with bitmap (0: none) and reads
// the client's.
func switchHello(c net.Conn, v uint8, bitmap uint32) error {
	msg := make([]byte, 8)
	if bitmap != 0 {
		msg = make([]byte, 16)
		binary.BigEndian.PutUint16(msg[8:], ofpHelloElemVersionBitmap)
		binary.BigEndian.PutUint16(msg[10:], 8)
		binary.BigEndian.PutUint32(msg[12:], bitmap)
	}
	header(msg, v, ofptHello, 0)
	if _, err := c.Write(msg); err != nil {
		return err
	}
	h, _, err := readMsg(c)
	if err == nil && h.typ != ofptHello {
		err = errors.New("client did not start with HELLO")
	}
	return err
}

// answerBarriers replies to every barrier; packet-outs go to seen.
func answerBarriers(c net.Conn, v uint8, seen func(h ofHeader, body []byte) []byte) {
	for {
		h, body, err := readMsg(c)
		if err != nil {
			return
		}
		var out []byte
		switch h.typ {
		case ofptPacketOut:
			if seen != nil {
				out = seen(h, body)
			}
		case ofpt10BarrierReq, ofpt11BarrierReq:
			r := make([]byte, 8)
			typ := uint8(ofpt11BarrierRepl)
			if v == ofpv10 {
				typ = ofpt10BarrierRepl
			}
			header(r, v, typ, h.xid)
			out = r
		}
		if out != nil {
			if _, err := c.Write(out); err != nil {
				return
			}
		}
	}
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestHelloNegotiation(t *testing.T) {
	for _, c := range []struct {
		name    string
		version uint8
		bitmap  uint32
		want    uint8
		err     error
	}{
		{"1.0 only, no bitmap", 1, 0, 1, nil},
		{"1.3, no bitmap: every version up to it", 4, 0, 4, nil},
		{"OVS default 1.0-1.5", 6, 1<<1 | 1<<2 | 1<<3 | 1<<4 | 1<<5 | 1<<6, 5, nil},
		{"1.0 and 1.3", 4, 1<<1 | 1<<4, 4, nil},
		{"1.5 only", 6, 1 << 6, 0, ErrOpenFlow},
	} {
		t.Run(c.name, func(t *testing.T) {
			fs := newFakeSwitch(t, func(conn net.Conn) {
				if switchHello(conn, c.version, c.bitmap) == nil {
					answerBarriers(conn, c.want, nil)
				}
			})
			oc, err := dialOpenFlow(ctxTimeout(t, 2*time.Second), fs.path)
			if c.err != nil {
				if !errors.Is(err, c.err) {
					t.Fatalf("err %v, want %v", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer oc.Close()
			if oc.version != c.want {
				t.Fatalf("version %d, want %d", oc.version, c.want)
			}
			if err := oc.PacketOut(ctxTimeout(t, 2*time.Second), 3, []byte{1, 2, 3}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestHandshakeFailures(t *testing.T) {
	for _, c := range []struct {
		name  string
		serve func(net.Conn)
		want  error
	}{
		{"switch silent", func(conn net.Conn) { time.Sleep(time.Second) }, ErrTimeout},
		{"switch hangs up", func(conn net.Conn) {}, ErrNotRunning},
		{"switch sends an error", func(conn net.Conn) {
			readMsg(conn)
			msg := make([]byte, 12)
			header(msg, 1, ofptError, 0)
			binary.BigEndian.PutUint16(msg[8:], 0) // OFPET_HELLO_FAILED
			binary.BigEndian.PutUint16(msg[10:], 0)
			conn.Write(msg)
		}, ErrOpenFlow},
		{"switch sends garbage", func(conn net.Conn) { readMsg(conn); conn.Write([]byte{1, 0, 0, 2, 0, 0, 0, 0}) }, ErrOpenFlow},
	} {
		t.Run(c.name, func(t *testing.T) {
			fs := newFakeSwitch(t, c.serve)
			start := time.Now()
			_, err := dialOpenFlow(ctxTimeout(t, 200*time.Millisecond), fs.path)
			if !errors.Is(err, c.want) {
				t.Fatalf("err %v, want %v", err, c.want)
			}
			if d := time.Since(start); d > time.Second {
				t.Fatalf("took %v", d)
			}
		})
	}
	_, err := dialOpenFlow(ctxTimeout(t, time.Second), filepath.Join(t.TempDir(), "none.mgmt"))
	if !errors.Is(err, ErrNotRunning) {
		t.Fatalf("missing socket: %v", err)
	}
}

// TestPacketOutWire checks the bytes on the wire for both layouts.
func TestPacketOutWire(t *testing.T) {
	f := rarp.Announce(rarp.MAC{0x52, 0x54, 0, 0xaa, 0xbb, 0xcc}, rarp.VLAN{})
	frame, _ := f.MarshalBinary()
	for _, c := range []struct {
		version uint8
		want    string // header..actions, then the frame
	}{
		{1, "010d0054" + "00000001" + "ffffffff" + "0007" + "0008" + "0000" + "0008" + "fff9" + "0000"},
		{4, "040d0064" + "00000001" + "ffffffff" + "00000007" + "0010" + "000000000000" + "0000" + "0010" + "fffffff9" + "0000" + "000000000000"},
	} {
		got := appendPacketOut(nil, c.version, 1, 7, frame)
		want, _ := hex.DecodeString(c.want)
		want = append(want, frame...)
		if !bytes.Equal(got, want) {
			t.Errorf("version %d:\n got %x\nwant %x", c.version, got, want)
		}
		bar := appendBarrier(nil, c.version, 2)
		wantType := byte(ofpt11BarrierReq)
		if c.version == 1 {
			wantType = ofpt10BarrierReq
		}
		if !bytes.Equal(bar, []byte{c.version, wantType, 0, 8, 0, 0, 0, 2}) {
			t.Errorf("barrier %x", bar)
		}
	}
}

// TestPacketOutDecodedByOVS has ovs-ofctl decode what this package
// encodes: the reference decoder, not a second opinion of ours.
func TestPacketOutDecodedByOVS(t *testing.T) {
	netnstest.Require(t, "ovs-ofctl")
	f := rarp.Announce(rarp.MAC{0x52, 0x54, 0, 0xaa, 0xbb, 0xcc}, rarp.VLAN{ID: 100})
	frame, _ := f.MarshalBinary()
	for _, v := range []uint8{1, 2, 3, 4, 5} {
		out, err := exec.Command("ovs-ofctl", "ofp-print", hex.EncodeToString(appendPacketOut(nil, v, 9, 7, frame))).CombinedOutput()
		if err != nil {
			t.Fatalf("version %d: %v\n%s", v, err, out)
		}
		s := string(out)
		for _, want := range []string{"OFPT_PACKET_OUT", "xid=0x9", "in_port=7", "actions=TABLE", "data_len=64", "rarp,dl_vlan=100,", "dl_src=52:54:00:aa:bb:cc", "arp_op=3"} {
			if !strings.Contains(s, want) {
				t.Fatalf("version %d: ovs-ofctl decodes\n%s\nwithout %q", v, s, want)
			}
		}
	}
}

// TestPacketOutErrorAndEcho: the switch's error for a packet-out is
// returned as ErrOpenFlow with its type and code, and the connection stays
// usable; an echo request in between does not disturb anything
// (TestEchoRequestAnswered checks the reply).
func TestPacketOutErrorAndEcho(t *testing.T) {
	fs := newFakeSwitch(t, func(conn net.Conn) {
		if switchHello(conn, 4, 1<<4) != nil {
			return
		}
		echo := []byte{4, ofptEchoRequest, 0, 12, 0, 0, 0x12, 0x34, 'p', 'i', 'n', 'g'}
		conn.Write(echo)
		answerBarriers(conn, 4, func(h ofHeader, body []byte) []byte {
			if binary.BigEndian.Uint32(body[4:]) != 0xff01 {
				return nil
			}
			e := make([]byte, 12)
			header(e, 4, ofptError, h.xid)
			binary.BigEndian.PutUint16(e[8:], 1)  // OFPET_BAD_REQUEST
			binary.BigEndian.PutUint16(e[10:], 4) // any type and code: the client only reports them
			return e
		})
	})
	oc, err := dialOpenFlow(ctxTimeout(t, 2*time.Second), fs.path)
	if err != nil {
		t.Fatal(err)
	}
	defer oc.Close()
	if err := oc.PacketOut(ctxTimeout(t, 2*time.Second), 3, []byte{1}); err != nil {
		t.Fatalf("good packet-out: %v", err)
	}
	err = oc.packetOut(ctxTimeout(t, 2*time.Second), 0xff01, []byte{1})
	if !errors.Is(err, ErrOpenFlow) || !strings.Contains(err.Error(), "error type 1 code 4") {
		t.Fatalf("err %v, want the switch's error", err)
	}
	if err := oc.PacketOut(ctxTimeout(t, 2*time.Second), 3, []byte{1}); err != nil {
		t.Fatalf("the connection must survive an OpenFlow error: %v", err)
	}
	if err := oc.PacketOut(ctxTimeout(t, time.Second), 0, []byte{1}); !errors.Is(err, ErrNoOFPort) {
		t.Fatalf("in_port 0: %v", err)
	}
}

func TestEchoRequestAnswered(t *testing.T) {
	got := make(chan []byte, 1)
	fs := newFakeSwitch(t, func(conn net.Conn) {
		if switchHello(conn, 1, 0) != nil {
			return
		}
		conn.Write([]byte{1, ofptEchoRequest, 0, 12, 0, 0, 0x12, 0x34, 'p', 'i', 'n', 'g'})
		h, body, err := readMsg(conn)
		if err == nil {
			got <- append([]byte{h.version, h.typ, byte(h.xid >> 8), byte(h.xid)}, body...)
		}
	})
	oc, err := dialOpenFlow(ctxTimeout(t, 2*time.Second), fs.path)
	if err != nil {
		t.Fatal(err)
	}
	defer oc.Close()
	select {
	case b := <-got:
		if !bytes.Equal(b, []byte{1, ofptEchoReply, 0x12, 0x34, 'p', 'i', 'n', 'g'}) {
			t.Fatalf("echo reply %q", b)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("no echo reply")
	}
}

// TestPacketOutTimeoutAndHangup: no barrier reply ends in ErrTimeout at
// the deadline; a switch that hangs up makes the waiting call and later
// ones fail with ErrNotRunning.
func TestPacketOutTimeoutAndHangup(t *testing.T) {
	hangup := make(chan struct{})
	fs := newFakeSwitch(t, func(conn net.Conn) {
		if switchHello(conn, 1, 0) != nil {
			return
		}
		readMsg(conn) // the packet-out; its barrier is never answered
		<-hangup
	})
	oc, err := dialOpenFlow(ctxTimeout(t, 2*time.Second), fs.path)
	if err != nil {
		t.Fatal(err)
	}
	defer oc.Close()
	start := time.Now()
	if err := oc.PacketOut(ctxTimeout(t, 100*time.Millisecond), 3, []byte{1}); !errors.Is(err, ErrTimeout) {
		t.Fatalf("err %v, want ErrTimeout", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("timeout took %v", d)
	}
	errc := make(chan error, 1)
	go func() { errc <- oc.PacketOut(ctxTimeout(t, 5*time.Second), 3, []byte{1}) }()
	time.Sleep(50 * time.Millisecond)
	close(hangup)
	if err := <-errc; !errors.Is(err, ErrNotRunning) {
		t.Fatalf("after hangup: %v", err)
	}
	if !oc.broken() {
		t.Fatal("connection not marked broken")
	}
}

// TestConcurrentPacketOuts: many senders share one connection; each gets
// its own barrier reply.
func TestConcurrentPacketOuts(t *testing.T) {
	var mu sync.Mutex
	ports := map[uint16]int{}
	fs := newFakeSwitch(t, func(conn net.Conn) {
		if switchHello(conn, 1, 0) != nil {
			return
		}
		answerBarriers(conn, 1, func(h ofHeader, body []byte) []byte {
			mu.Lock()
			ports[binary.BigEndian.Uint16(body[4:])]++
			mu.Unlock()
			return nil
		})
	})
	oc, err := dialOpenFlow(ctxTimeout(t, 2*time.Second), fs.path)
	if err != nil {
		t.Fatal(err)
	}
	defer oc.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := 1; i <= 32; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				if err := oc.PacketOut(ctxTimeout(t, 5*time.Second), i, []byte{byte(i)}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for i := 1; i <= 32; i++ {
		if ports[uint16(i)] != 10 {
			t.Fatalf("in_port %d: %d packet-outs, want 10", i, ports[uint16(i)])
		}
	}
}
