package libvirtconn

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

// Metrics counts the RPCs of every Conn made with the same Config: errors,
// timeouts and durations, by procedure. The caller registers it (it is a
// prometheus.Collector); the config's defaults give a private, unregistered
// set to a Conn without one.
type Metrics struct {
	rpcErrors   *prometheus.CounterVec
	rpcTimeouts *prometheus.CounterVec
	rpcSeconds  *prometheus.HistogramVec
	// Set holds every collector above: Metrics is one prometheus.Collector.
	metricset.Set
}

// NewMetrics creates the libvirt RPC metrics, registered with reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		rpcErrors:   metricset.CounterVec("libvirt_rpc_errors_total", "libvirt RPCs that failed (error reply or connection lost, timeouts excluded), by procedure. 'Domain not found' answers are not counted.", "procedure"),
		rpcTimeouts: metricset.CounterVec("libvirt_rpc_timeouts_total", "libvirt RPCs not answered within the RPC timeout, by procedure; each closes the connection.", "procedure"),
		rpcSeconds:  metricset.HistogramVec("libvirt_rpc_duration_seconds", "Time libvirt took to answer an RPC, by procedure.", []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}, "procedure"),
	}
	for _, p := range procedures {
		m.rpcErrors.WithLabelValues(p)
		m.rpcTimeouts.WithLabelValues(p)
	}
	m.Set = metricset.Set{m.rpcErrors, m.rpcTimeouts, m.rpcSeconds}
	return metricset.Register(reg, m)
}

func (m *Metrics) rpcTimedOut(proc string) { m.rpcTimeouts.WithLabelValues(proc).Inc() }

func (m *Metrics) rpcDone(proc string, d time.Duration, failed bool) {
	m.rpcSeconds.WithLabelValues(proc).Observe(d.Seconds())
	if failed {
		m.rpcErrors.WithLabelValues(proc).Inc()
	}
}
