package libvirtwatch

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rarp-announce/rarp-announce/pkg/libvirtconn"
	"github.com/rarp-announce/rarp-announce/pkg/metricset"
)

// Metrics counts what a Watcher sees of libvirt, its connections' RPCs
// included (RPC). The caller registers it (it is a prometheus.Collector); a
// nil *Metrics counts nothing.
type Metrics struct {
	events, landings, cancels            *prometheus.CounterVec
	connected                            prometheus.Gauge
	reconnects, connectFailures, resyncs prometheus.Counter
	// RPC counts the calls of the Watcher's connections; give it to the
	// Config of other connections to the same libvirt to count theirs.
	RPC *libvirtconn.Metrics
	// Set holds every collector above: Metrics is one prometheus.Collector.
	metricset.Set
}

// NewMetrics creates the libvirt watcher's metrics, registered with reg (nil:
// not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		events:          metricset.CounterVec("libvirt_events_total", "Domain lifecycle events received from libvirt, by event and detail (e.g. resumed, migrated).", "event", "detail"),
		landings:        metricset.CounterVec("landings_total", "Domains found to have landed here after a migration (one per migration), by source: event (a lifecycle event) or resync (running with reason migrated/postcopy at (re)connect).", "source"),
		cancels:         metricset.CounterVec("landing_cancels_total", "Domains whose pending announces were cancelled because they stopped, paused, crashed or left, by source: event or resync.", "source"),
		connected:       metricset.Gauge("libvirt_connected", "1 while connected to libvirt and subscribed to lifecycle events, else 0."),
		reconnects:      metricset.Counter("libvirt_reconnects_total", "Connections to libvirt re-established (and re-subscribed) after the previous one was lost."),
		connectFailures: metricset.Counter("libvirt_connect_failures_total", "Attempts to connect to libvirt and subscribe to its events that failed."),
		resyncs:         metricset.Counter("libvirt_resyncs_total", "Resynchronizations with libvirt's list of running domains (one per connection)."),
		RPC:             libvirtconn.NewMetrics(nil),
	}
	// Every known event and detail from the start: a dashboard or alert on
	// resumed/migrated must see 0, not nothing, before the first landing.
	for ev, details := range detailNames {
		for _, d := range details {
			m.events.WithLabelValues(eventNames[ev], d)
		}
	}
	for _, s := range []string{"event", "resync"} {
		m.landings.WithLabelValues(s)
		m.cancels.WithLabelValues(s)
	}
	m.Set = metricset.Set{m.events, m.landings, m.cancels, m.connected, m.reconnects,
		m.connectFailures, m.resyncs, m.RPC}
	return metricset.Register(reg, m)
}

// The counting methods need a *Metrics: the config's defaults give a
// private, unregistered set to a Watcher without one.

func (m *Metrics) event(ev, detail int32) {
	m.events.WithLabelValues(EventName(ev), DetailName(ev, detail)).Inc()
}

func (m *Metrics) decision(k EventKind, resync bool) {
	src := "event"
	if resync {
		src = "resync"
	}
	switch k {
	case Landed:
		m.landings.WithLabelValues(src).Inc()
	case Cancel:
		m.cancels.WithLabelValues(src).Inc()
	}
}

func (m *Metrics) setConnected(up bool) {
	v := 0.0
	if up {
		v = 1
	}
	m.connected.Set(v)
}

func (m *Metrics) reconnected()   { m.reconnects.Inc() }
func (m *Metrics) connectFailed() { m.connectFailures.Inc() }
func (m *Metrics) resynced()      { m.resyncs.Inc() }
