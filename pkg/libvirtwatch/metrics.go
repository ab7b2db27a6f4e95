package libvirtwatch

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rarp-announce/rarp-announce/pkg/metricset"
)

// Procedures named in the RPC metrics' procedure label (libvirt's names,
// without the REMOTE_PROC_ prefix).
var procedures = []string{
	procConnectOpen, procConnectClose, procRegisterLifecycle, procListAllDomains, procGetAllDomainStats,
	procGetState, procLookupByName, procLookupByUUID, procGetXMLDesc, procMonitorCommand, procGetLibVersion,
	procSetMetadata, procNetworkLookupByName, procNetworkGetDHCPLeases,
}

const (
	procConnectOpen          = "connect_open"
	procConnectClose         = "connect_close"
	procRegisterLifecycle    = "connect_domain_event_callback_register_any"
	procListAllDomains       = "connect_list_all_domains"
	procGetState             = "domain_get_state"
	procGetAllDomainStats    = "connect_get_all_domain_stats"
	procLookupByName         = "domain_lookup_by_name"
	procLookupByUUID         = "domain_lookup_by_uuid"
	procGetXMLDesc           = "domain_get_xml_desc"
	procMonitorCommand       = "domain_qemu_monitor_command"
	procGetLibVersion        = "connect_get_lib_version"
	procSetMetadata          = "domain_set_metadata"
	procNetworkLookupByName  = "network_lookup_by_name"
	procNetworkGetDHCPLeases = "network_get_dhcp_leases"
)

// Metrics counts what a Watcher (and every Conn made with the same Config)
// sees of libvirt. The caller registers it (it is a prometheus.Collector); a
// nil *Metrics counts nothing.
type Metrics struct {
	events          *prometheus.CounterVec
	landings        *prometheus.CounterVec
	cancels         *prometheus.CounterVec
	connected       prometheus.Gauge
	reconnects      prometheus.Counter
	connectFailures prometheus.Counter
	resyncs         prometheus.Counter
	rpcErrors       *prometheus.CounterVec
	rpcTimeouts     *prometheus.CounterVec
	rpcSeconds      *prometheus.HistogramVec
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
		rpcErrors:       metricset.CounterVec("libvirt_rpc_errors_total", "libvirt RPCs that failed (error reply or connection lost, timeouts excluded), by procedure. 'Domain not found' answers are not counted.", "procedure"),
		rpcTimeouts:     metricset.CounterVec("libvirt_rpc_timeouts_total", "libvirt RPCs not answered within the RPC timeout, by procedure; each closes the connection.", "procedure"),
		rpcSeconds:      metricset.HistogramVec("libvirt_rpc_duration_seconds", "Time libvirt took to answer an RPC, by procedure.", []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}, "procedure"),
	}
	for _, p := range procedures {
		m.rpcErrors.WithLabelValues(p)
		m.rpcTimeouts.WithLabelValues(p)
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
		m.connectFailures, m.resyncs, m.rpcErrors, m.rpcTimeouts, m.rpcSeconds}
	return metricset.Register(reg, m)
}

// The counting methods need a *Metrics: the config's defaults give a
// private, unregistered set to a Watcher or Conn without one.

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

func (m *Metrics) reconnected()            { m.reconnects.Inc() }
func (m *Metrics) connectFailed()          { m.connectFailures.Inc() }
func (m *Metrics) resynced()               { m.resyncs.Inc() }
func (m *Metrics) rpcTimedOut(proc string) { m.rpcTimeouts.WithLabelValues(proc).Inc() }

func (m *Metrics) rpcDone(proc string, d time.Duration, failed bool) {
	m.rpcSeconds.WithLabelValues(proc).Observe(d.Seconds())
	if failed {
		m.rpcErrors.WithLabelValues(proc).Inc()
	}
}
