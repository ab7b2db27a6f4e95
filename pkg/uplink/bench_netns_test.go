package uplink

import (
	"fmt"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rarp-announce/rarp-announce/pkg/announce"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// BenchmarkSendSysTime is the kernel (system) time per announce frame
// written on the bridge's uplink, as Targets says, versus on the bridge
// device, which clones each broadcast to every tap inside sendto:
//
//	go test -run '^$' -bench SendSysTime ./pkg/uplink
//
// The uplink's figure should not depend on the number of taps; the bridge
// device's grows with it.
func BenchmarkSendSysTime(b *testing.B) {
	for _, via := range []string{"uplink", "bridge"} {
		for _, taps := range []int{50, 500} {
			b.Run(fmt.Sprintf("%s/taps=%d", via, taps), func(b *testing.B) {
				h := newHV(b, taps, "uplink0")
				r := h.open(b)
				dev := "br0"
				if via == "uplink" {
					ts, err := r.Targets("br0", "vnet0", nil)
					if err != nil || len(ts) != 1 {
						b.Fatalf("Targets: %v, %v", ts, err)
					}
					dev = ts[0].Uplink.Name
				}
				var s announce.Sender
				if err := h.ns.Do(func() (err error) { s, err = announce.OpenPacket(dev); return }); err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				f := rarp.Announce(rarp.MAC{0x52, 0x54, 0, 0x13, 0xbe, 0x01}, rarp.VLAN{})
				frame, _ := f.MarshalBinary()
				time.Sleep(100 * time.Millisecond) // let the setup's kernel work settle
				var before, after unix.Rusage
				_ = unix.Getrusage(unix.RUSAGE_SELF, &before)
				n := 0
				for b.Loop() {
					if err := s.Send(frame); err != nil {
						b.Fatal(err)
					}
					n++
				}
				_ = unix.Getrusage(unix.RUSAGE_SELF, &after)
				sys := time.Duration(after.Stime.Nano() - before.Stime.Nano())
				b.ReportMetric(float64(sys.Nanoseconds())/float64(n), "sys-ns/frame")
				s.Close()
				h.destroy(b)
			})
		}
	}
}
