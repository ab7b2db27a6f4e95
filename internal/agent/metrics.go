package agent

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rarp-announce/rarp-announce/pkg/metricset"
)

// Metrics counts the agent's decisions; a nil *Metrics counts nothing.
type Metrics struct {
	nics          *prometheus.CounterVec
	landingErrors *prometheus.CounterVec
	reannounces   prometheus.Counter
	// Set holds every collector above: Metrics is one prometheus.Collector.
	metricset.Set
}

// Strategies and results, pre-created so dashboards see zeros, not gaps.
var (
	metricStrategies = []string{"host", "qemu", "ovs", "skip"}
	metricResults    = []string{ResultStarted, ResultFailed, ResultNotReady, ResultSkipped, ResultNotHandled, ResultCancelled, ResultInvalid}
)

// NewMetrics creates the agent's metrics, registered with reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		nics:          metricset.CounterVec("nic_announces_total", "NICs of landed domains by strategy (host, qemu, ovs, skip) and result (started, failed, not_ready, skipped, not_handled, cancelled, invalid: its live XML entry is unusable).", "strategy", "result"),
		landingErrors: metricset.CounterVec("landing_errors_total", "Landed domains not announced at all because their live XML could not be read (xml) or parsed (parse).", "reason"),
		reannounces:   metricset.Counter("port_change_reannounces_total", "Announces repeated because a VM's port was re-attached or went down and up within the watch window."),
	}
	for _, s := range metricStrategies {
		for _, r := range metricResults {
			m.nics.WithLabelValues(s, r)
		}
	}
	for _, r := range []string{"xml", "parse"} {
		m.landingErrors.WithLabelValues(r)
	}
	m.Set = metricset.Set{m.nics, m.landingErrors, m.reannounces}
	return metricset.Register(reg, m)
}

func (m *Metrics) nic(strategy, result string) {
	if m != nil && strategy != "" {
		m.nics.WithLabelValues(strategy, result).Inc()
	}
}

func (m *Metrics) landingError(reason string) {
	if m != nil {
		m.landingErrors.WithLabelValues(reason).Inc()
	}
}

func (m *Metrics) reannounce() {
	if m != nil {
		m.reannounces.Inc()
	}
}
