package ipannounce

import (
	"context"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/packet"

	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// TestSendOnTheWire sends a NIC's schedule (GARP request and reply, NA;
// two rounds) out of a real veth and checks, in tshark's reading of a
// capture on the far side, that every frame arrived with its fields and
// that each frame's repeat came >= 1.1 s after it.
func TestSendOnTheWire(t *testing.T) {
	netnstest.Require(t, "tcpdump", "tshark")
	host := netnstest.New(t, "ghost")
	sw := netnstest.New(t, "gsw")
	netnstest.Veth(t, host, "up0", sw, "down0")
	capture := netnstest.StartCapture(t, sw, "down0", "arp or ip6")

	ifi := host.Interface(t, "up0")
	var conn *packet.Conn
	if err := host.Do(func() (err error) { conn, err = packet.Listen(ifi, packet.Raw, 0, nil); return err }); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	w := WriterFunc(func(b []byte) error {
		_, err := conn.WriteTo(b, &packet.Addr{HardwareAddr: b[0:6]})
		return err
	})

	frames, err := Plan(vmMAC, rarp.VLAN{}, []netip.Addr{vm4, vm6}, nil, true)
	if err != nil {
		t.Fatal(err)
	}
	capper, _ := NewUplinkCap(100)
	slots, err := Schedule{Count: 2, Interval: MinInterval}.Slots(time.Now(), frames, capper, "up0")
	if err != nil {
		t.Fatal(err)
	}
	sent, err := Send(context.Background(), w, slots)
	if err != nil || sent != 6 {
		t.Fatalf("sent %d: %v", sent, err)
	}
	lines := netnstest.Tshark(t, capture.Stop(), "frame.time_relative", "arp.opcode", "arp.isgratuitous", "icmpv6.type", "icmpv6.nd.na.flag.o", "ipv6.hlim")
	if len(lines) != 6 {
		t.Fatalf("captured %d frames, want 6: %q", len(lines), lines)
	}
	first := map[string]float64{}
	for _, l := range lines {
		f := strings.Split(l, "|")
		at, _ := strconv.ParseFloat(f[0], 64)
		kind := strings.Join(f[1:], "|")
		switch kind {
		case "1|1|||", "2|1|||", "||136|1|255", "||136|True|255":
		default:
			t.Errorf("unexpected frame %q", l)
		}
		if p, ok := first[kind]; ok {
			// 1 ms for the capture's timestamps, taken after the write.
			if gap := at - p; gap < MinInterval.Seconds()-0.001 {
				t.Errorf("%q repeated after %.3f s, want >= 1.1 s", kind, gap)
			}
			continue
		}
		first[kind] = at
	}
	if len(first) != 3 {
		t.Fatalf("kinds seen: %v", first)
	}
}
