// Package metrictest reads metric values in tests: one gathered series of
// a counter or gauge, picked by name and "label=value" pairs.
package metrictest

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Gathered returns the value of the counter or gauge series of metric name
// whose labels include every "label=value" of labels, from g; found is
// false when there is none.
func Gathered(t testing.TB, g prometheus.Gatherer, name string, labels ...string) (v float64, found bool) {
	t.Helper()
	for _, m := range Series(t, g, name, labels...) {
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		}
	}
	return 0, false
}

// Series returns the gathered series of metric name whose labels include
// every "label=value" of labels.
func Series(t testing.TB, g prometheus.Gatherer, name string, labels ...string) []*dto.Metric {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []*dto.Metric
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				if Matches(m, labels) {
					out = append(out, m)
				}
			}
		}
	}
	return out
}

// Value is Gathered's value from c's own series (c registered alone), and
// fails t when there is no such series.
func Value(t testing.TB, c prometheus.Collector, name string, labels ...string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	v, ok := Gathered(t, reg, name, labels...)
	if !ok {
		t.Fatalf("no series %s%v", name, labels)
	}
	return v
}

// Matches reports whether m has every "label=value" of labels.
func Matches(m *dto.Metric, labels []string) bool {
	have := map[string]string{}
	for _, lp := range m.GetLabel() {
		have[lp.GetName()] = lp.GetValue()
	}
	for _, kv := range labels {
		k, v, _ := strings.Cut(kv, "=")
		if have[k] != v {
			return false
		}
	}
	return true
}
