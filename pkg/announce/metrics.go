package announce

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rarp-announce/rarp-announce/pkg/metricset"
)

// Metrics counts what an Announcer does. The caller registers it (it is a
// prometheus.Collector); a nil *Metrics counts nothing.
type Metrics struct {
	framesSent        prometheus.Counter
	failures          *prometheus.CounterVec
	pacingWaits       prometheus.Counter
	pacingWaitSeconds prometheus.Counter
	startedTotal      prometheus.Counter
	supersededTotal   prometheus.Counter
	cancelledTotal    prometheus.Counter
	skippedTotal      prometheus.Counter
	running           prometheus.Gauge
	queued            prometheus.Gauge
	firstLag          prometheus.Histogram
	// Set holds every collector above: Metrics is one prometheus.Collector.
	metricset.Set
	failureKinds []string
}

// NewMetrics creates the announcer's metrics, registered with reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		framesSent: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: metricset.Namespace,
			Name:      "frames_sent_total",
			Help:      "RARP announce frames written to an interface (or pcap file) without error.",
		}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricset.Namespace,
			Name:      "frame_failures_total",
			Help:      "RARP announce frames that could not be sent, by reason: no_interface, interface_down, write.",
		}, []string{"reason"}),
		pacingWaits: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: metricset.Namespace,
			Name:      "pacing_waits_total",
			Help:      "Frames that waited for a pacing token because their interface was at its frame rate limit.",
		}),
		pacingWaitSeconds: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: metricset.Namespace,
			Name:      "pacing_wait_seconds_total",
			Help:      "Total time frames spent waiting for a pacing token.",
		}),
		startedTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: metricset.Namespace,
			Name:      "announces_started_total",
			Help:      "Announces started (one per MAC, interface and VLAN request).",
		}),
		supersededTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: metricset.Namespace,
			Name:      "announces_superseded_total",
			Help:      "Running announces replaced by a newer request for the same MAC, interface and VLAN.",
		}),
		cancelledTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: metricset.Namespace,
			Name:      "announces_cancelled_total",
			Help:      "Running announces cancelled (domain stopped or suspended, or by request).",
		}),
		skippedTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: metricset.Namespace,
			Name:      "frames_skipped_total",
			Help:      "Queued frames not sent because their announce was cancelled or superseded.",
		}),
		running: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: metricset.Namespace,
			Name:      "announces_running",
			Help:      "Announces in progress.",
		}),
		queued: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: metricset.Namespace,
			Name:      "frames_queued",
			Help:      "Frames due and waiting for their interface (pacing).",
		}),
		firstLag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: metricset.Namespace,
			Name:      "first_frame_lag_seconds",
			Help:      "Delay from the trigger of an announce (libvirt event or request) to its first frame on the wire.",
			Buckets:   []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}),
		failureKinds: []string{"no_interface", "interface_down", "write"},
	}
	for _, k := range m.failureKinds {
		m.failures.WithLabelValues(k)
	}
	m.Set = metricset.Set{m.framesSent, m.failures, m.pacingWaits, m.pacingWaitSeconds, m.startedTotal,
		m.supersededTotal, m.cancelledTotal, m.skippedTotal, m.running, m.queued, m.firstLag}
	return metricset.Register(reg, m)
}

// FailureReason is the label a send error is counted under.
func FailureReason(err error) string {
	switch {
	case errors.Is(err, ErrNoInterface):
		return "no_interface"
	case errors.Is(err, ErrInterfaceDown):
		return "interface_down"
	}
	return "write"
}

func (m *Metrics) sent() {
	if m != nil {
		m.framesSent.Inc()
	}
}

func (m *Metrics) failure(err error) {
	if m != nil {
		m.failures.WithLabelValues(FailureReason(err)).Inc()
	}
}

func (m *Metrics) waited(d time.Duration) {
	if m != nil {
		m.pacingWaits.Inc()
		m.pacingWaitSeconds.Add(d.Seconds())
	}
}

func (m *Metrics) started() {
	if m != nil {
		m.startedTotal.Inc()
		m.running.Inc()
	}
}

func (m *Metrics) finished() {
	if m != nil {
		m.running.Dec()
	}
}

func (m *Metrics) superseded() {
	if m != nil {
		m.supersededTotal.Inc()
	}
}

func (m *Metrics) cancelled() {
	if m != nil {
		m.cancelledTotal.Inc()
	}
}

func (m *Metrics) skipped() {
	if m != nil {
		m.skippedTotal.Inc()
	}
}

func (m *Metrics) queuedAdd(n float64) {
	if m != nil {
		m.queued.Add(n)
	}
}

func (m *Metrics) lag(d time.Duration) {
	if m != nil {
		m.firstLag.Observe(d.Seconds())
	}
}
