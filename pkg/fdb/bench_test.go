package fdb

import (
	"fmt"
	"testing"
	"time"

	"github.com/rarp-announce/rarp-announce/internal/netnstest"
)

// BenchmarkRepair measures one Repair (find the VM's entries, delete the
// stale one) while br0 holds the VM's stale entry among `entries` other
// learned MACs: the cost per landed VM on a busy bridge, for both lookups
// (get: one hash lookup in the kernel; dump: every table, which VLAN
// filtering needs), with the links looked up by netlink (the way before,
// three RTM_GETLINK per repair) or from a view (-view: an uplink.Resolver,
// as in the agent). get-view-library is get-view through the netlink
// package's own request path, the way before neighConn: its Receive keeps a
// 64 KiB buffer on the caller's stack, which a fresh landing goroutine pays
// for in stack growth (morestack/copystack in the storm profile) on top of
// what ns/op shows here.
//
//	go test -run '^$' -bench Repair ./pkg/fdb/
func BenchmarkRepair(b *testing.B) {
	for _, l := range lookups {
		for _, entries := range []int{0, 1000, 8000} {
			b.Run(fmt.Sprintf("%s/entries=%d", l.name, entries), func(b *testing.B) { benchRepair(b, entries, l) })
		}
	}
}

func benchRepair(b *testing.B, entries int, l lookup) {
	netnstest.Require(b)
	rig := netnstest.NewRig(b)
	learnMany(b, rig.Old, netnstest.RigOldPort, entries)
	deadline := time.Now().Add(10 * time.Second)
	for len(rig.Host.FDB(b, netnstest.RigHostBridge)) < entries {
		if time.Now().After(deadline) {
			b.Fatalf("br0 learned %d of %d MACs", len(rig.Host.FDB(b, netnstest.RigHostBridge)), entries)
		}
		time.Sleep(50 * time.Millisecond)
	}
	r := repairer(b, rig.Host, nil, l)
	for b.Loop() {
		b.StopTimer()
		netnstest.Learn(b, rig.Old, netnstest.RigOldPort, vmMAC)
		if got := rig.Host.WaitFDB(b, netnstest.RigHostBridge, vmMAC, netnstest.RigHostUplink, 2*time.Second); got != netnstest.RigHostUplink {
			b.Fatalf("stale entry not learned (%q)", got)
		}
		b.StartTimer()
		removed, err := r.Repair(netnstest.RigHostBridge, vm, vmPort)
		if err != nil || len(removed) != 1 {
			b.Fatalf("removed %+v, %v", removed, err)
		}
	}
}

// learnMany makes the bridges behind dev learn n distinct MACs
// (02:00:xx:xx:xx:xx) with one broadcast frame each.
func learnMany(b *testing.B, ns *netnstest.NS, dev string, n int) {
	b.Helper()
	frame := make([]byte, 60)
	copy(frame, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	frame[12], frame[13] = 0x88, 0xb5
	netnstest.SendEach(b, ns, dev, n, func(i int) []byte {
		copy(frame[6:], []byte{0x02, 0, byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)})
		return frame
	})
}
