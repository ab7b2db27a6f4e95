package rarptable

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics describes the table in service and its reloads. The caller
// registers it (it is a prometheus.Collector); a nil *Metrics counts
// nothing.
type Metrics struct {
	holder      *Holder
	entries     *prometheus.Desc
	reloads     *prometheus.CounterVec
	loadSeconds prometheus.Gauge
	lastSuccess prometheus.Gauge
}

// NewMetrics creates the table metrics; the entry count is read from h
// at every scrape.
func NewMetrics(h *Holder) *Metrics {
	m := &Metrics{
		holder: h,
		entries: prometheus.NewDesc("rarp_announce_table_entries",
			"MAC to IPv4 mappings in the table the RARP responder answers from.", nil, nil),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rarp_announce_table_reloads_total",
			Help: "Table loads (at start, on SIGHUP, on a file change), by result: ok (swapped in) or error (refused, the previous table stays).",
		}, []string{"result"}),
		loadSeconds: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rarp_announce_table_load_seconds",
			Help: "How long the last successful table load took (read, parse, resolve names, build).",
		}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rarp_announce_table_last_load_timestamp_seconds",
			Help: "Unix time of the last successful table load.",
		}),
	}
	m.reloads.WithLabelValues("ok")
	m.reloads.WithLabelValues("error")
	return m
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.entries
	m.reloads.Describe(ch)
	m.loadSeconds.Describe(ch)
	m.lastSuccess.Describe(ch)
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(m.entries, prometheus.GaugeValue, float64(m.holder.Load().Len()))
	m.reloads.Collect(ch)
	m.loadSeconds.Collect(ch)
	m.lastSuccess.Collect(ch)
}

func (m *Metrics) loaded(r *Result) {
	if m != nil {
		m.reloads.WithLabelValues("ok").Inc()
		m.loadSeconds.Set(r.Duration.Seconds())
		m.lastSuccess.SetToCurrentTime()
	}
}

func (m *Metrics) failed() {
	if m != nil {
		m.reloads.WithLabelValues("error").Inc()
	}
}
