package reconverge_test

import (
	"testing"

	"github.com/rarp-announce/rarp-announce/internal/netnstest"
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
			netnstest.SendEach(b, host, "upl", b.N, func(int) []byte { return f })
		})
	}
}
