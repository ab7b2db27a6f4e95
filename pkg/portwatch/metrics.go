package portwatch

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rarp-announce/rarp-announce/pkg/metricset"
	"golang.org/x/sys/unix"
)

// Metrics counts what a Watcher does. The caller registers it (it is a
// prometheus.Collector); a nil *Metrics counts nothing.
type Metrics struct {
	waits       *prometheus.CounterVec
	waitSeconds prometheus.Histogram
	changes     *prometheus.CounterVec
	updates     prometheus.Counter
	resyncs     *prometheus.CounterVec
	// Set holds every collector above: Metrics is one prometheus.Collector.
	metricset.Set
}

// Results of a readiness wait, the values of the result label.
const (
	resultReady     = "ready"
	resultTimeout   = "timeout"
	resultCancelled = "cancelled"
)

// NewMetrics creates the watcher's metrics; reg (if not nil) registers
// them.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	causes := make([]string, len(causeNames))
	for i, n := range causeNames {
		causes[i] = n.name
	}
	m := &Metrics{
		waits: metricset.CounterOf("readiness_waits_total",
			"Waits for a VM's port to be ready (exists, attached, up, forwarding), by result: ready, timeout, cancelled (context ended or watcher closed).",
			"result", resultReady, resultTimeout, resultCancelled),
		waitSeconds: metricset.Histogram("readiness_wait_seconds",
			"Time from the start of a readiness wait until the port was ready (0 when it already was); waits that failed are not observed.",
			[]float64{.0001, .001, .005, .01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}),
		changes: metricset.CounterOf("port_changes_total",
			"Changes of a watched port after it landed that call for a new announce, by cause (a change may have several): reattached, restarted, recreated, resync.",
			"cause", causes...),
		updates: metricset.Counter("link_updates_total",
			"Netlink link messages (RTM_NEWLINK, RTM_DELLINK, dumps included) applied to the port watcher's view."),
		resyncs: metricset.CounterOf("link_resyncs_total",
			"Times the port watcher lost its link subscription and rebuilt its view from a dump, by reason: overflow (receive buffer full), interrupted (links changed while the kernel dumped them: dumped again), error.",
			"reason", "overflow", "interrupted", "error"),
	}
	m.Set = metricset.Set{m.waits, m.waitSeconds, m.changes, m.updates, m.resyncs}
	return metricset.Register(reg, m)
}

func (m *Metrics) waited(result string, d time.Duration) {
	if m == nil {
		return
	}
	m.waits.WithLabelValues(result).Inc()
	if result == resultReady {
		m.waitSeconds.Observe(d.Seconds())
	}
}

func (m *Metrics) changed(c Cause) {
	if m == nil {
		return
	}
	for _, n := range causeNames {
		if c&n.c != 0 {
			m.changes.WithLabelValues(n.name).Inc()
		}
	}
}

func (m *Metrics) update() {
	if m != nil {
		m.updates.Inc()
	}
}

func (m *Metrics) resync(err error) {
	if m == nil {
		return
	}
	reason := "error"
	switch {
	case errors.Is(err, unix.ENOBUFS):
		reason = "overflow"
	case errors.Is(err, errDumpInterrupted):
		reason = "interrupted"
	}
	m.resyncs.WithLabelValues(reason).Inc()
}
