package rarptable

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rarp-announce/rarp-announce/internal/metrictest"
)

// counterValue gathers c and returns the value of metric name with
// result=label ("" for an unlabelled metric).
func counterValue(t testing.TB, c prometheus.Collector, name, label string) float64 {
	t.Helper()
	if label == "" {
		return metrictest.Value(t, c, name)
	}
	return metrictest.Value(t, c, name, "result="+label)
}
