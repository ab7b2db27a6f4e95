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
