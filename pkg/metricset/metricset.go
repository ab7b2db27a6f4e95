// Package metricset makes a package's metrics one prometheus.Collector:
// each package keeps its metrics in a struct that embeds a Set of them, and
// the caller registers that struct once, with Register.
package metricset

import "github.com/prometheus/client_golang/prometheus"

// Namespace prefixes every metric of the agent (the prometheus namespace):
// packages name their metrics without it.
const Namespace = "rarp_announce"

// Set is a list of collectors that describes and collects as one.
type Set []prometheus.Collector

// Describe implements prometheus.Collector.
func (s Set) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range s {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (s Set) Collect(ch chan<- prometheus.Metric) {
	for _, c := range s {
		c.Collect(ch)
	}
}

// Register registers c with reg unless reg is nil (metrics then count but
// are not exported, as in tests and one-shot commands) and returns c, so a
// constructor can end with `return metricset.Register(reg, m)`.
func Register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if reg != nil {
		reg.MustRegister(c)
	}
	return c
}

// Counter, CounterVec, Gauge, Histogram and HistogramVec create a metric
// named Namespace_name: one line per metric instead of an options block.
func Counter(name, help string) prometheus.Counter {
	return prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: name, Help: help})
}

func CounterVec(name, help string, labels ...string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: name, Help: help}, labels)
}

// CounterOf is a CounterVec with one label whose values are known: every
// series exists at 0 from the start, so a dashboard or an alert sees it
// before the first event.
func CounterOf(name, help, label string, values ...string) *prometheus.CounterVec {
	v := CounterVec(name, help, label)
	for _, x := range values {
		v.WithLabelValues(x)
	}
	return v
}

func Gauge(name, help string) prometheus.Gauge {
	return prometheus.NewGauge(prometheus.GaugeOpts{Namespace: Namespace, Name: name, Help: help})
}

func Histogram(name, help string, buckets []float64) prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: Namespace, Name: name, Help: help, Buckets: buckets})
}

func HistogramVec(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	return prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Name: name, Help: help, Buckets: buckets}, labels)
}
