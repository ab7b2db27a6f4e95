package rarptable

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rarp-announce/rarp-announce/pkg/metricset"
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
// at every scrape. reg (if not nil) registers them.
func NewMetrics(h *Holder, reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		holder: h,
		entries: prometheus.NewDesc(prometheus.BuildFQName(metricset.Namespace, "", "table_entries"),
			"MAC to IPv4 mappings in the table the RARP responder answers from.", nil, nil),
		reloads: metricset.CounterOf("table_reloads_total",
			"Table loads (at start, on SIGHUP, on a file change), by result: ok (swapped in) or error (refused, the previous table stays).",
			"result", "ok", "error"),
		loadSeconds: metricset.Gauge("table_load_seconds",
			"How long the last successful table load took (read, parse, resolve names, build)."),
		lastSuccess: metricset.Gauge("table_last_load_timestamp_seconds",
			"Unix time of the last successful table load."),
	}
	return metricset.Register(reg, m)
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
