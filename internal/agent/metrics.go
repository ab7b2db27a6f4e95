package agent

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rarp-announce/rarp-announce/pkg/metricset"
	"github.com/rarp-announce/rarp-announce/pkg/uplink"
)

// Metrics counts the agent's decisions. New makes an unregistered one
// when Deps has none, so the agent never checks for nil.
type Metrics struct {
	nics          *prometheus.CounterVec
	landingErrors *prometheus.CounterVec
	reannounces   prometheus.Counter
	unsents       *prometheus.CounterVec
	fallbacks     *prometheus.CounterVec
	repairLags    prometheus.Histogram
	uplinkEvents  *prometheus.CounterVec
	uplinkNICs    *prometheus.CounterVec
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
		unsents:       metricset.CounterVec("uplink_unsent_total", "Bridge NICs not announced because no uplink of the bridge should carry their frames, by reason (isolated, uplinks_down, vlan_not_carried, port_without_vlan, restricted_uplinks_gone).", "reason"),
		fallbacks:     metricset.CounterVec("uplink_fallbacks_total", "Bridge NICs announced on the bridge device because the bridge's uplinks could not be read, by reason (unreadable, not_a_bridge, not_a_port, vlans_unknown).", "reason"),
		repairLags: metricset.Histogram("fdb_repair_after_first_frame_seconds", "How long after a bridge NIC's first frame its FDB repair ended (0: the repair ended first); the two run side by side.",
			[]float64{0, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25}),
		uplinkEvents: metricset.CounterVec("uplink_reannounces_total", "Uplink events acted on, by reason (bond_failover, carrier_up, port_added) and result (ok: the running domains behind the uplink were re-announced, possibly none; error: libvirt could not list them).", "reason", "result"),
		uplinkNICs:   metricset.CounterVec("uplink_reannounce_nics_total", "NICs of running local domains re-announced after an uplink event, by reason.", "reason"),
	}
	for _, s := range metricStrategies {
		for _, r := range metricResults {
			m.nics.WithLabelValues(s, r)
		}
	}
	for _, r := range []string{"xml", "parse"} {
		m.landingErrors.WithLabelValues(r)
	}
	for _, r := range uplink.NoUplinkReasons {
		m.unsents.WithLabelValues(r.String())
	}
	m.unsents.WithLabelValues(unsentRestricted)
	for _, r := range uplink.FallbackReasons {
		m.fallbacks.WithLabelValues(r.String())
	}
	for _, r := range uplink.Reasons {
		m.uplinkEvents.WithLabelValues(r.String(), "ok")
		m.uplinkEvents.WithLabelValues(r.String(), "error")
		m.uplinkNICs.WithLabelValues(r.String())
	}
	m.Set = metricset.Set{m.nics, m.landingErrors, m.reannounces, m.unsents, m.fallbacks, m.repairLags, m.uplinkEvents, m.uplinkNICs}
	return metricset.Register(reg, m)
}

func (m *Metrics) nic(strategy, result string) {
	if strategy != "" {
		m.nics.WithLabelValues(strategy, result).Inc()
	}
}

func (m *Metrics) landingError(reason string) { m.landingErrors.WithLabelValues(reason).Inc() }

func (m *Metrics) reannounce() { m.reannounces.Inc() }

func (m *Metrics) unsent(reason string) { m.unsents.WithLabelValues(reason).Inc() }

func (m *Metrics) fallback(reason string) { m.fallbacks.WithLabelValues(reason).Inc() }

func (m *Metrics) repairLag(d time.Duration) { m.repairLags.Observe(max(d, 0).Seconds()) }

func (m *Metrics) uplinkReannounce(reason string, nics int, err error) {
	if err != nil {
		m.uplinkEvents.WithLabelValues(reason, "error").Inc()
		return
	}
	m.uplinkEvents.WithLabelValues(reason, "ok").Inc()
	m.uplinkNICs.WithLabelValues(reason).Add(float64(nics))
}
