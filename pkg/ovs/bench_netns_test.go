package ovs

import (
	"context"
	"testing"

	"github.com/rarp-announce/rarp-announce/internal/ovstest"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// BenchmarkInject is the cost of injecting one frame into a running OVS
// (userspace datapath) through each Injector: for openflow a packet-out
// and its barrier round trip on the shared connection, for ofctl a whole
// ovs-ofctl process. Both include OVS executing the frame (NORMAL
// flooding to the uplink).
func BenchmarkInject(b *testing.B) {
	tp := ovstest.NewTopo(b)
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
	tp := ovstest.NewTopo(b)
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
