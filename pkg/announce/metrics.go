package announce

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rarp-announce/rarp-announce/pkg/metricset"
)

// Metrics counts what an Announcer does. The caller registers it (it is a
// prometheus.Collector); an Announcer without one counts into its own.
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
		framesSent:        metricset.Counter("frames_sent_total", "RARP announce frames written to an interface (or pcap file) without error."),
		failures:          metricset.CounterVec("frame_failures_total", "RARP announce frames that could not be sent, by reason: no_interface, interface_down, write.", "reason"),
		pacingWaits:       metricset.Counter("pacing_waits_total", "Frames that waited for a pacing token because their interface was at its frame rate limit."),
		pacingWaitSeconds: metricset.Counter("pacing_wait_seconds_total", "Total time frames spent waiting for a pacing token."),
		startedTotal:      metricset.Counter("announces_started_total", "Announces started (one per MAC, interface and VLAN request)."),
		supersededTotal:   metricset.Counter("announces_superseded_total", "Running announces replaced by a newer request for the same MAC, interface and VLAN."),
		cancelledTotal:    metricset.Counter("announces_cancelled_total", "Running announces cancelled (domain stopped or suspended, or by request)."),
		skippedTotal:      metricset.Counter("frames_skipped_total", "Queued frames not sent because their announce was cancelled or superseded."),
		running:           metricset.Gauge("announces_running", "Announces in progress."),
		queued:            metricset.Gauge("frames_queued", "Frames due and waiting for their interface (pacing)."),
		firstLag:          metricset.Histogram("first_frame_lag_seconds", "Delay from the trigger of an announce (libvirt event or request) to its first frame on the wire.", []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}),
		failureKinds:      []string{"no_interface", "interface_down", "write"},
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

// The counting methods below need a *Metrics: New gives an announcer
// without one a private, unregistered set.

func (m *Metrics) sent()                  { m.framesSent.Inc() }
func (m *Metrics) failure(err error)      { m.failures.WithLabelValues(FailureReason(err)).Inc() }
func (m *Metrics) finished()              { m.running.Dec() }
func (m *Metrics) superseded()            { m.supersededTotal.Inc() }
func (m *Metrics) cancelled()             { m.cancelledTotal.Inc() }
func (m *Metrics) skipped()               { m.skippedTotal.Inc() }
func (m *Metrics) queuedAdd(n float64)    { m.queued.Add(n) }
func (m *Metrics) lag(d time.Duration)    { m.firstLag.Observe(d.Seconds()) }
func (m *Metrics) started()               { m.startedTotal.Inc(); m.running.Inc() }
func (m *Metrics) waited(d time.Duration) { m.pacingWaits.Inc(); m.pacingWaitSeconds.Add(d.Seconds()) }
