package app

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rarp-announce/rarp-announce/internal/config"
	"github.com/rarp-announce/rarp-announce/pkg/plan"
)

// Build wires what the config asks for, registers every part's metrics
// once (a pedantic registry refuses duplicates and inconsistent ones) and
// hands the agent its parts.
func TestBuildWiresWhatTheConfigAsks(t *testing.T) {
	for _, c := range []struct {
		name       string
		tweak      func(*config.Config)
		monitor    bool
		strategies []plan.Strategy
		fdb        bool
	}{
		{"defaults", nil, true, []plan.Strategy{plan.OVS, plan.QEMU}, true},
		{"no ovs, no qmp, no fdb", func(c *config.Config) {
			c.Strategies.OpenVSwitch = config.StrategySkip
			c.FDBRepair = false
		}, false, nil, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := config.Default()
			if c.tweak != nil {
				c.tweak(cfg)
			}
			reg := prometheus.NewPedanticRegistry()
			o := Options{Registerer: reg}
			if c.monitor {
				o.Monitor = func(context.Context, string, string) (string, error) { return `{"return":{}}`, nil }
			}
			a, err := Build(context.Background(), cfg, o)
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			d := a.Deps(nil, nil)
			if len(d.Strategies) != len(c.strategies) {
				t.Errorf("strategies %v, want %v", d.Strategies, c.strategies)
			}
			for _, s := range c.strategies {
				if d.Strategies[s] == nil {
					t.Errorf("no %s strategy", s)
				}
			}
			if (d.FDB != nil) != c.fdb || d.Announcer == nil || d.Ports == nil || d.Metrics == nil {
				t.Errorf("deps %+v", d)
			}
			if n, err := testutil.GatherAndCount(reg); err != nil || n == 0 {
				t.Errorf("metrics: %d, %v", n, err)
			}
		})
	}
}
