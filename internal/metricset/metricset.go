// Package metricset makes a package's metrics one prometheus.Collector:
// each package keeps its metrics in a struct that embeds a Set of them, and
// the caller registers that struct once.
package metricset

import "github.com/prometheus/client_golang/prometheus"

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
