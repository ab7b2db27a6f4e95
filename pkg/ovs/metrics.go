package ovs

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rarp-announce/rarp-announce/pkg/metricset"
)

// Metrics counts the ovs strategy's failures by reason. The caller
// registers it (it is a prometheus.Collector); a nil *Metrics counts
// nothing. Frames sent, lag and the like are the announce package's
// metrics.
type Metrics struct {
	failures *prometheus.CounterVec
}

// NewMetrics creates the metrics with every reason at zero, so a dashboard
// sees the series before the first failure; reg (if not nil) registers them.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{failures: metricset.CounterOf("ovs_failures_total",
		"Open vSwitch announce failures, by reason: timeout (ovsdb-server or ovs-vswitchd did not answer in time), "+
			"not_running (OVSDB or bridge socket missing), port_not_found, no_ofport (port has no OpenFlow number), "+
			"port_not_wired (tag 4095), vlan_not_carried, openflow_error, permission (a socket the agent may not use), command (anything else). "+
			"A lookup failure counts once per announce, a send failure once per frame.",
		"reason", Reasons...)}
	return metricset.Register(reg, m)
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) { m.failures.Describe(ch) }

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) { m.failures.Collect(ch) }

// Failure counts err under its Reason.
func (m *Metrics) Failure(err error) {
	if m != nil {
		m.failures.WithLabelValues(Reason(err)).Inc()
	}
}
