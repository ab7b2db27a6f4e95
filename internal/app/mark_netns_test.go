package app

import (
	"testing"
	"time"

	"github.com/mdlayher/packet"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/rarp-announce/rarp-announce/internal/config"
	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/pkg/announce"
)

// The host strategy's sockets, as Build wraps them (markedOpen), mark
// every frame with host.frame_mark; 0 leaves them unmarked. The proof is
// the kernel's: a packet socket on the interface whose filter keeps only
// frames carrying the mark.
func TestHostFramesCarryTheFrameMark(t *testing.T) {
	netnstest.Require(t)
	ns, peer := netnstest.New(t, "mark"), netnstest.New(t, "markpeer")
	netnstest.Veth(t, ns, "upl", peer, "sw")
	ifi := ns.Interface(t, "upl")
	for _, mark := range []uint32{config.DefaultFrameMark, 0} {
		prog, err := bpf.Assemble([]bpf.Instruction{
			bpf.LoadExtension{Num: bpf.ExtMark},
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: config.DefaultFrameMark, SkipFalse: 1},
			bpf.RetConstant{Val: 1 << 16},
			bpf.RetConstant{Val: 0},
		})
		if err != nil {
			t.Fatal(err)
		}
		var c *packet.Conn
		if err := ns.Do(func() (err error) {
			c, err = packet.Listen(ifi, packet.Raw, unix.ETH_P_ALL, &packet.Config{Filter: prog})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		open := markedOpen(netnstest.OpenIn(ns, announce.OpenPacket), mark, zap.NewNop())
		s, err := open("upl")
		if err != nil {
			t.Fatal(err)
		}
		frame := make([]byte, 60)
		copy(frame, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x52, 0x54, 0, 0, 0, 1, 0x80, 0x35})
		if err := s.Send(frame); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		_, _, rerr := c.ReadFrom(make([]byte, 128))
		if marked := rerr == nil; marked != (mark != 0) {
			t.Errorf("frame_mark %#x: frame seen with the mark: %v (read: %v)", mark, marked, rerr)
		}
		s.Close()
		c.Close()
	}
}

// A socket that refuses the mark (here: closed before it is marked, as a
// kernel before 5.17 refuses SO_MARK without CAP_NET_ADMIN) still sends
// unmarked, and the agent says so once, in the words the lab's as-shipped
// runs (test/lab/lab-privileges.sh, lab-image.sh) look for.
func TestRefusedFrameMarkIsLoggedOnce(t *testing.T) {
	netnstest.Require(t)
	ns, peer := netnstest.New(t, "markno"), netnstest.New(t, "marknopeer")
	netnstest.Veth(t, ns, "upl", peer, "sw")
	open := netnstest.OpenIn(ns, announce.OpenPacket)
	closedFirst := func(ifname string) (announce.Sender, error) {
		s, err := open(ifname)
		if err == nil {
			s.Close()
		}
		return s, err
	}
	core, logs := observer.New(zap.WarnLevel)
	marked := markedOpen(closedFirst, config.DefaultFrameMark, zap.New(core))
	for range 2 {
		if _, err := marked("upl"); err != nil {
			t.Fatalf("a refused mark failed the open: %v", err)
		}
	}
	got := logs.FilterMessageSnippet("frames sent unmarked").All()
	if len(got) != 1 {
		t.Fatalf("%d warnings about unmarked frames, want 1: %v", len(got), logs.All())
	}
}
