package metrictest

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestValue(t *testing.T) {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "x_total", Help: "x"}, []string{"a", "b"})
	c.WithLabelValues("1", "2").Add(3)
	c.WithLabelValues("1", "3").Add(5)
	if got := Value(t, c, "x_total", "a=1", "b=3"); got != 5 {
		t.Errorf("x_total{a=1,b=3} = %v, want 5", got)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	if _, ok := Gathered(t, reg, "x_total", "b=9"); ok {
		t.Error("found a series with b=9")
	}
	if _, ok := Gathered(t, reg, "y_total"); ok {
		t.Error("found a metric that does not exist")
	}
}
