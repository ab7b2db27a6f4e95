package ovs

import (
	"context"
	"sync"
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
		inj  func() Injector
	}{
		{InjectOpenFlow, func() Injector { return NewOpenFlowInjector(tp.OVS.Dir) }},
		{InjectOfctl, func() Injector { return OfctlInjector{RunDir: tp.OVS.Dir} }},
	} {
		b.Run(c.name, func(b *testing.B) {
			inj := c.inj()
			defer inj.Close()
			ctx := context.Background()
			if err := inj.Inject(ctx, bridge, tp.VMPort, frame); err != nil { // connect outside the loop
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if err := inj.Inject(ctx, bridge, tp.VMPort, frame); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkLookup is the cost of one OVSDB lookup, paid once per
// announce: two JSON-RPC round trips on a kept connection (ovsdb), or one
// ovs-vsctl run (vsctl).
func BenchmarkLookup(b *testing.B) {
	tp := newTopo(b)
	for _, c := range []struct {
		name string
		db   func() Lookuper
	}{
		{LookupOVSDB, func() Lookuper { return &OVSDB{Socket: tp.OVS.DB} }},
		{LookupVsctl, func() Lookuper { return DB{DB: tp.OVS.DB} }},
	} {
		b.Run(c.name, func(b *testing.B) {
			db := c.db()
			if cl, ok := db.(interface{ Close() error }); ok {
				defer cl.Close()
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := db.Lookup(context.Background(), vmPort); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkAnnounceFirstFrame is the latency of Announce with the
// defaults: lookup, start, first frame injected (its barrier reply
// received).
func BenchmarkAnnounceFirstFrame(b *testing.B) {
	tp := newTopo(b)
	a, err := New(Config{DB: tp.OVS.DB, RunDir: tp.OVS.Dir})
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	one := announce.Schedule{Rounds: 1, Bursts: 1}
	for b.Loop() {
		if _, err := a.Announce(context.Background(), vmPort, vm, nil, one, time.Now()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAnnounce100Concurrent is a mass landing: 100 announces started
// at once (distinct MACs, one port), timed until every Announce returned,
// i.e. every first frame is out, with each lookup method.
func BenchmarkAnnounce100Concurrent(b *testing.B) {
	tp := newTopo(b)
	for _, lookup := range []string{LookupOVSDB, LookupVsctl} {
		b.Run(lookup, func(b *testing.B) {
			a, err := New(Config{DB: tp.OVS.DB, RunDir: tp.OVS.Dir, Lookup: lookup})
			if err != nil {
				b.Fatal(err)
			}
			defer a.Close()
			one := announce.Schedule{Rounds: 1, Bursts: 1}
			for b.Loop() {
				var wg sync.WaitGroup
				errs := make(chan error, 100)
				for i := range 100 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						m := rarp.MAC{0x52, 0x54, 0, 0, 3, byte(i)}
						if _, err := a.Announce(context.Background(), vmPort, m, nil, one, time.Now()); err != nil {
							errs <- err
						}
					}()
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					b.Fatal(err)
				}
			}
		})
	}
}
