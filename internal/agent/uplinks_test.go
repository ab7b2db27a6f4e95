package agent

import (
	"errors"
	"reflect"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/rarp-announce/rarp-announce/pkg/announce"
	"github.com/rarp-announce/rarp-announce/pkg/domxml"
	"github.com/rarp-announce/rarp-announce/pkg/plan"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
	"github.com/rarp-announce/rarp-announce/pkg/uplink"
)

// fixedUplinks answers every Targets call with ts, err and records the
// XML VLANs it was given.
type fixedUplinks struct {
	ts   []uplink.Target
	err  error
	xml  []rarp.VLAN
	asks int
}

func (f *fixedUplinks) Targets(_, _ string, xml []rarp.VLAN) ([]uplink.Target, error) {
	f.asks++
	f.xml = xml
	return f.ts, f.err
}

func TestHostSends(t *testing.T) {
	eth0 := uplink.Port{Index: 2, Name: "eth0"}
	eth1 := uplink.Port{Index: 3, Name: "eth1"}
	two := []uplink.Target{{Uplink: eth0, VLAN: rarp.VLAN{ID: 100}}, {Uplink: eth1}}
	bridgeNIC := plan.Target{Strategy: plan.Host, Kind: plan.KindBridge, Device: "br0", Master: "br0", Port: "vnet0", VLANs: []rarp.VLAN{{}}}
	onBridge := []send{{announce.HostPort("br0"), rarp.VLAN{}}}
	restricted := bridgeNIC
	restricted.Uplinks = []string{"eth1"}
	gone := bridgeNIC
	gone.Uplinks = []string{"bond9"}
	macvtap := plan.Target{Strategy: plan.Host, Kind: plan.KindDirect, Device: "macvtap0", Port: "macvtap0", VLANs: []rarp.VLAN{{}}}
	tagged := bridgeNIC
	tagged.NIC = domxml.Interface{VLANs: []domxml.VLANTag{{ID: 42}}}
	tagged.VLANs = []rarp.VLAN{{ID: 42}}

	cases := []struct {
		name     string
		t        plan.Target
		up       *fixedUplinks
		want     []send
		wantErr  error
		unsent   string
		fallback string
		xml      []rarp.VLAN
	}{
		{"each uplink with its tag", bridgeNIC, &fixedUplinks{ts: two},
			[]send{{announce.HostPort("eth0"), rarp.VLAN{ID: 100}}, {announce.HostPort("eth1"), rarp.VLAN{}}}, nil, "", "", nil},
		{"restricted to one uplink", restricted, &fixedUplinks{ts: two},
			[]send{{announce.HostPort("eth1"), rarp.VLAN{}}}, nil, "", "", nil},
		{"restricted to an uplink gone", gone, &fixedUplinks{ts: two}, nil, errNoUplink, unsentRestricted, "", nil},
		{"isolated", bridgeNIC, &fixedUplinks{err: &uplink.NoUplinkError{Bridge: "br0", Port: "vnet0", Reason: uplink.Isolated}},
			nil, errNoUplink, "isolated", "", nil},
		{"vlan not carried", bridgeNIC, &fixedUplinks{err: &uplink.NoUplinkError{Bridge: "br0", Port: "vnet0", Reason: uplink.VLANNotCarried}},
			nil, errNoUplink, "vlan_not_carried", "", nil},
		{"vlans unknown: the bridge device", bridgeNIC, &fixedUplinks{err: &uplink.FallbackError{Bridge: "br0", Port: "vnet0", Reason: uplink.VLANsUnknown}},
			onBridge, nil, "", "vlans_unknown", nil},
		{"some other error: the bridge device", bridgeNIC, &fixedUplinks{err: errors.New("boom")},
			onBridge, nil, "", "unreadable", nil},
		{"XML VLANs passed on", tagged, &fixedUplinks{ts: two[:1]},
			[]send{{announce.HostPort("eth0"), rarp.VLAN{ID: 100}}}, nil, "", "", []rarp.VLAN{{ID: 42}}},
		{"macvtap: its own device, no topology asked", macvtap, &fixedUplinks{ts: two},
			[]send{{announce.HostPort("macvtap0"), rarp.VLAN{}}}, nil, "", "", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := NewMetrics(nil)
			floods := 0
			a := &Agent{d: Deps{Uplinks: c.up, Flood: func() { floods++ }}, m: m}
			got, err := a.hostSends(c.t, zap.NewNop())
			if !errors.Is(err, c.wantErr) || (c.wantErr == nil && err != nil) {
				t.Fatalf("err %v, want %v", err, c.wantErr)
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("sends %v, want %v", got, c.want)
			}
			// Flood goes with the frames on the bridge device, and only
			// with them.
			if want := b2i(reflect.DeepEqual(c.want, onBridge)); floods != want {
				t.Errorf("Flood called %d times, want %d", floods, want)
			}
			if c.t.Kind == plan.KindDirect && c.up.asks != 0 {
				t.Errorf("the topology was asked about a macvtap NIC")
			}
			if !reflect.DeepEqual(c.up.xml, c.xml) {
				t.Errorf("XML VLANs given %v, want %v", c.up.xml, c.xml)
			}
			for reason, want := range map[string]string{"unsent": c.unsent, "fallback": c.fallback} {
				vec := m.unsents
				if reason == "fallback" {
					vec = m.fallbacks
				}
				total := 0.0
				for _, l := range []string{"isolated", "uplinks_down", "vlan_not_carried", "port_without_vlan", unsentRestricted, "unreadable", "not_a_bridge", "not_a_port", "vlans_unknown"} {
					if v, err := vec.GetMetricWithLabelValues(l); err == nil {
						total += testutil.ToFloat64(v)
					}
				}
				wantTotal := 0.0
				if want != "" {
					wantTotal = 1
					if got := testutil.ToFloat64(vec.WithLabelValues(want)); got != 1 {
						t.Errorf("%s{reason=%s} = %v, want 1", reason, want, got)
					}
				}
				if total != wantTotal {
					t.Errorf("%s total = %v, want %v", reason, total, wantTotal)
				}
			}
		})
	}

	t.Run("send_on bridge: no topology", func(t *testing.T) {
		floods := 0
		a := &Agent{d: Deps{Flood: func() { floods++ }}}
		got, err := a.hostSends(bridgeNIC, zap.NewNop())
		if err != nil || !reflect.DeepEqual(got, onBridge) {
			t.Errorf("got %v, %v; want %v", got, err, onBridge)
		}
		if floods != 1 {
			t.Errorf("Flood called %d times, want 1", floods)
		}
		if got, _ := a.hostSends(macvtap, zap.NewNop()); len(got) != 1 || floods != 1 {
			t.Errorf("a macvtap NIC (sends %v) called Flood: %d calls in all, want 1", got, floods)
		}
	})
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
