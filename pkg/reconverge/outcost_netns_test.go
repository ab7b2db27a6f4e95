package reconverge_test

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/pkg/announce"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
	"github.com/rarp-announce/rarp-announce/pkg/reconverge"
)

// BenchmarkUplinkSendWhileWatched is what a watch on an uplink costs the
// host's own traffic: each op sends one frame out of the uplink (from a
// MAC nobody watches, as a running VM's traffic is) while the uplink has
// no watch, a To watch (PACKET_IGNORE_OUTGOING: outgoing frames never
// reach it), or an Out watch (the premature-move watch of incoming
// domains: every outgoing frame is cloned to it and runs its filter),
// exact (a few MACs) or by buckets (a storm's hundreds). Side by side in
// one run: 'go test -run ^$ -bench UplinkSendWhileWatched ./pkg/reconverge'.
// cpu-ns/op is the process's CPU per frame, the watch readers' included.
func BenchmarkUplinkSendWhileWatched(b *testing.B) {
	host, _ := watchRig(b)
	watched := func(n int) []rarp.MAC {
		var ms []rarp.MAC
		for i := range n {
			ms = append(ms, rarp.MAC{0x52, 0x54, 0x00, 0x30, byte(i >> 8), byte(i)})
		}
		return ms
	}
	f := frame(rarp.MAC{0x02, 0, 0, 0, 0, 0x99}, rarp.MAC{0x52, 0x54, 0x00, 0x77, 0x77, 0x77})
	for _, v := range []struct {
		name string
		dir  reconverge.Direction
		macs int
	}{
		{"none", reconverge.To, 0},
		{"to-watch", reconverge.To, 200},
		{"out-watch-exact", reconverge.Out, 4},
		{"out-watch-buckets", reconverge.Out, 200},
	} {
		b.Run(v.name, func(b *testing.B) {
			var s reconverge.Shared
			for _, m := range watched(v.macs) {
				openShared(b, &s, host, "upl", v.dir, m)
			}
			b.ResetTimer()
			cpu0 := processCPU(b)
			netnstest.SendEach(b, host, "upl", b.N, func(int) []byte { return f })
			b.ReportMetric(float64(processCPU(b)-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
	// The agent's own announces for a MAC in a watched bucket (a domain
	// landed, while others still migrate in), sent by the announcer's
	// socket unmarked (before host.frame_mark) or marked: each unmarked
	// one passes the filter and wakes the reader, which drops it.
	const mark = 0x52415250
	own := frame(rarp.Broadcast, rarp.MAC{0x52, 0x54, 0x00, 0x31, 0x00, 0x05}) // watched(5)'s bucket
	for _, v := range []struct {
		name string
		open announce.Opener
	}{
		{"out-watch-buckets-own-frames-unmarked", announce.OpenPacket},
		{"out-watch-buckets-own-frames-marked", announce.Marked(announce.OpenPacket, mark, func(err error) { b.Fatal(err) })},
	} {
		b.Run(v.name, func(b *testing.B) {
			s := reconverge.Shared{OwnMark: mark}
			for _, m := range watched(200) {
				openShared(b, &s, host, "upl", reconverge.Out, m)
			}
			snd, err := netnstest.OpenIn(host, v.open)("upl")
			if err != nil {
				b.Fatal(err)
			}
			defer snd.Close()
			b.ResetTimer()
			cpu0 := processCPU(b)
			for range b.N {
				if err := snd.Send(own); err != nil {
					b.Fatal(err)
				}
			}
			time.Sleep(10 * time.Millisecond) // the reader's backlog
			b.ReportMetric(float64(processCPU(b)-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}

// processCPU is the test process's CPU time so far (user and system, every
// thread: the sender's and the watch readers'), in nanoseconds.
func processCPU(b *testing.B) int64 {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
