package config

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rarp-announce/rarp-announce/pkg/metricset"
)

// ReloadMetrics tell whether the configuration in service is the one in
// the file: a SIGHUP with a broken file keeps the old configuration and
// only logs, which nobody reads at 3 a.m. The names follow Prometheus's
// own prometheus_config_last_reload_successful, so the same alert works.
type ReloadMetrics struct {
	metricset.Set
	successful prometheus.Gauge
	timestamp  prometheus.Gauge
	reloads    *prometheus.CounterVec
	now        func() time.Time
}

// NewReloadMetrics returns the metrics of a configuration that loaded at
// start (a start with a broken file never gets this far): successful, at
// the current time. Both reload results exist from the start at 0.
func NewReloadMetrics() *ReloadMetrics {
	m := &ReloadMetrics{
		successful: metricset.Gauge("config_last_reload_successful",
			"1 if the last load of the configuration file (at start or on SIGHUP) succeeded, 0 if it was refused and the previous configuration is still in service."),
		timestamp: metricset.Gauge("config_last_reload_success_timestamp_seconds",
			"Unix time of the last successful load of the configuration file."),
		reloads: metricset.CounterOf("config_reloads_total",
			"Configuration reloads (SIGHUP) by result: ok, error (refused: the previous configuration stays).", "result", "ok", "error"),
		now: time.Now,
	}
	m.Set = metricset.Set{m.successful, m.timestamp, m.reloads}
	m.successful.Set(1)
	m.timestamp.Set(float64(m.now().UnixNano()) / 1e9)
	return m
}

// Observe records the result of a reload: err is what loading the file
// returned (nil: the new configuration is in service).
func (m *ReloadMetrics) Observe(err error) {
	if m == nil {
		return
	}
	if err != nil {
		m.successful.Set(0)
		m.reloads.WithLabelValues("error").Inc()
		return
	}
	m.successful.Set(1)
	m.timestamp.Set(float64(m.now().UnixNano()) / 1e9)
	m.reloads.WithLabelValues("ok").Inc()
}
