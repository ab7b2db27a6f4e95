package ovs

import (
	"context"
	"testing"
	"time"

	"github.com/rarp-announce/rarp-announce/pkg/announce"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// BenchmarkInject is the cost of injecting one frame into a running OVS
// (userspace datapath) through each Injector: for openflow a packet-out
// and its barrier round trip on the shared connection, for ofctl a whole
// ovs-ofctl process. Both include OVS executing the frame (NORMAL
// flooding to the uplink).
func BenchmarkInject(b *testing.B) {
	tp := newTopo(b)
	f := rarp.Announce(vm, rarp.VLAN{})
	frame, _ := f.MarshalBinary()
	for _, c := range []struct {
		name string
		inj  Injector
	}{
		{InjectOpenFlow, NewOpenFlowInjector(tp.OVS.Dir)},
		{InjectOfctl, OfctlInjector{RunDir: tp.OVS.Dir}},
	} {
		b.Run(c.name, func(b *testing.B) {
			defer c.inj.Close()
			ctx := context.Background()
			if err := c.inj.Inject(ctx, bridge, tp.VMPort, frame); err != nil { // connect outside the loop
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if err := c.inj.Inject(ctx, bridge, tp.VMPort, frame); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkLookup is the cost of one OVSDB lookup (one ovs-vsctl run),
// paid once per announce.
func BenchmarkLookup(b *testing.B) {
	tp := newTopo(b)
	db := DB{DB: tp.OVS.DB}
	for b.Loop() {
		if _, err := db.Lookup(context.Background(), vmPort); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAnnounceFirstFrame is the latency of Announce: lookup, start,
// first frame injected (its barrier reply received).
func BenchmarkAnnounceFirstFrame(b *testing.B) {
	tp := newTopo(b)
	a, err := New(Config{DB: tp.OVS.DB, RunDir: tp.OVS.Dir})
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	one := announce.Schedule{Rounds: 1, Bursts: 1}
	for b.Loop() {
		if err := a.Announce(context.Background(), vmPort, vm, nil, one, time.Now()); err != nil {
			b.Fatal(err)
		}
	}
}
