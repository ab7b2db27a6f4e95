package announce

import (
	"encoding/binary"
	"net"
	"slices"
	"testing"
	"time"
	"unsafe"

	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"

	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// vethPair returns two namespaces joined by veth va <-> vb.
func vethPair(b *testing.B) (*netnstest.NS, *netnstest.NS) {
	netnstest.Require(b)
	x, y := netnstest.New(b, "bx"), netnstest.New(b, "by")
	netnstest.Veth(b, x, "va", y, "vb")
	return x, y
}

// BenchmarkPacketSendVeth is the cost of one frame through OpenPacket's
// socket onto a veth (the kernel's delivery to the peer included), side by
// side with the way before (variant "writeto"): packet.Conn.WriteTo, which
// allocated the address and closures for every frame. cpu-ns/op is the
// process's CPU per frame, the collector's share included.
func BenchmarkPacketSendVeth(b *testing.B) {
	f := rarp.Announce(rarp.MAC{0x52, 0x54, 0, 0xaa, 0xbb, 0xcc}, rarp.VLAN{})
	frame, _ := f.MarshalBinary()
	for _, v := range []struct {
		name string
		open func(x *netnstest.NS) Opener
	}{
		{"send", openIn},
		{"writeto", openWriteToIn},
	} {
		b.Run(v.name, func(b *testing.B) {
			x, _ := vethPair(b)
			s, err := v.open(x)("va")
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			b.ReportAllocs()
			cpu0 := processCPU(b)
			for b.Loop() {
				if err := s.Send(frame); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64((processCPU(b)-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
		})
	}
}

// openWriteToIn opens in x the sender as it was before raw sends: each
// frame through packet.Conn.WriteTo to the broadcast address.
func openWriteToIn(x *netnstest.NS) Opener {
	return func(ifname string) (Sender, error) {
		var s Sender
		err := x.Do(func() error {
			ifi, err := CheckInterface(ifname)
			if err != nil {
				return err
			}
			c, err := packet.Listen(ifi, packet.Raw, 0, nil)
			if err != nil {
				return err
			}
			s = writeToSender{c, &packet.Addr{HardwareAddr: net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}}
			return nil
		})
		return s, err
	}
}

type writeToSender struct {
	c   *packet.Conn
	dst *packet.Addr
}

func (w writeToSender) Send(frame []byte) error {
	_, err := w.c.WriteTo(frame, w.dst)
	return err
}

func (w writeToSender) Close() error { return w.c.Close() }

// processCPU is the CPU time (user and system) this process has used.
func processCPU(b *testing.B) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkFirstFrameLatency measures the time from Announce() to the
// first frame arriving at the far end of a veth, stamped by the kernel
// (SO_TIMESTAMPNS) so the receiver's own wake-up does not count. It reports
// p50 and p99 in microseconds.
func BenchmarkFirstFrameLatency(b *testing.B) {
	x, y := vethPair(b)
	var fd int
	err := y.Do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(rarp.EtherTypeRARP)))
		if err != nil {
			return err
		}
		ifi := y.Interface(b, "vb")
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(rarp.EtherTypeRARP), Ifindex: ifi.Index}); err != nil {
			return err
		}
		return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
	})
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(fd)
	tv := unix.Timeval{Sec: 2}
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)

	a := New(Options{Open: openIn(x)}) // default pacing: never waits at this rate
	defer a.Close()
	one := Schedule{Rounds: 1, Bursts: 1}
	buf := make([]byte, 128)
	oob := make([]byte, 128)
	recv := func() time.Time {
		_, oobn, _, _, err := unix.Recvmsg(fd, buf, oob, 0)
		if err != nil {
			b.Fatalf("no frame: %v", err)
		}
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil || len(msgs) == 0 {
			b.Fatalf("no timestamp: %v", err)
		}
		ts := (*unix.Timespec)(unsafe.Pointer(&msgs[0].Data[0]))
		return time.Unix(ts.Unix())
	}
	// Warm up: the link opens its socket on the first frame.
	h := mustAnnounce(b, a, Request{MAC: rarp.MAC{2, 0, 0, 0, 0, 1}, Interface: "va", Schedule: one})
	recv()
	<-h.Done()

	var lat []time.Duration
	i := 0
	for b.Loop() {
		i++
		mac := rarp.MAC{2, 0, 0, byte(i >> 16), byte(i >> 8), byte(i)}
		t0 := time.Now()
		h := mustAnnounce(b, a, Request{MAC: mac, Interface: "va", Schedule: one})
		t1 := recv()
		lat = append(lat, t1.Sub(t0))
		<-h.Done()
	}
	slices.Sort(lat)
	pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Nanoseconds()) / 1e3 }
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
}

func htons(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return *(*uint16)(unsafe.Pointer(&b[0]))
}
