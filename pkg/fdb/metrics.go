package fdb

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rarp-announce/rarp-announce/pkg/metricset"
)

// Metrics counts what a Repairer does. The caller registers it (it is a
// prometheus.Collector); a nil *Metrics counts nothing.
type Metrics struct {
	repairsTotal  prometheus.Counter
	removedTotal  prometheus.Counter
	failuresTotal *prometheus.CounterVec
	// Set holds every collector above: Metrics is one prometheus.Collector.
	metricset.Set
}

// Failure reasons, the values of the reason label.
const (
	ReasonPermission = "permission" // CAP_NET_ADMIN missing
	ReasonNoBridge   = "no_bridge"  // the bridge does not exist or is not a bridge
	ReasonNetlink    = "netlink"    // any other kernel error
)

// NewMetrics creates the repair metrics; reg (if not nil) registers them.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		repairsTotal: metricset.Counter("fdb_repairs_total",
			"Local bridge MAC table repairs attempted (one per VM MAC and bridge, before announcing)."),
		removedTotal: metricset.Counter("fdb_entries_removed_total",
			"Stale learned MAC table entries removed from local bridges: a landed VM's MAC on a port other than its own."),
		failuresTotal: metricset.CounterOf("fdb_repair_failures_total",
			"Local bridge MAC table repairs that failed, by reason: permission (no CAP_NET_ADMIN), no_bridge, netlink.",
			"reason", ReasonPermission, ReasonNoBridge, ReasonNetlink),
	}
	m.Set = metricset.Set{m.repairsTotal, m.removedTotal, m.failuresTotal}
	return metricset.Register(reg, m)
}

// FailureReason is the label a Repair error is counted under.
func FailureReason(err error) string {
	switch {
	case errors.Is(err, ErrPermission):
		return ReasonPermission
	case errors.Is(err, ErrNoBridge), errors.Is(err, ErrNotBridge):
		return ReasonNoBridge
	}
	return ReasonNetlink
}

func (m *Metrics) repair() {
	if m != nil {
		m.repairsTotal.Inc()
	}
}

func (m *Metrics) removed(n int) {
	if m != nil && n > 0 {
		m.removedTotal.Add(float64(n))
	}
}

func (m *Metrics) failure(reason string) {
	if m != nil {
		m.failuresTotal.WithLabelValues(reason).Inc()
	}
}
