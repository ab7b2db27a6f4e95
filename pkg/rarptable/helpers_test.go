package rarptable

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// counterValue gathers c and returns the value of metric name whose only
// label value is label ("" for an unlabelled metric).
func counterValue(t testing.TB, c prometheus.Collector, name, label string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			got := ""
			if len(m.GetLabel()) > 0 {
				got = m.GetLabel()[0].GetValue()
			}
			if got != label {
				continue
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			}
		}
	}
	t.Fatalf("no metric %s{%q}", name, label)
	return 0
}
