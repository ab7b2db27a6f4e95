package agent

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rarp-announce/rarp-announce/pkg/ipannounce"
	"github.com/rarp-announce/rarp-announce/pkg/ipsource"
	"github.com/rarp-announce/rarp-announce/pkg/metricset"
)

// IPMetrics counts the IP-layer follow-up of landed NICs. NewIPFollower
// makes an unregistered one when IPOptions has none.
type IPMetrics struct {
	addresses *prometheus.CounterVec
	skipped   *prometheus.CounterVec
	frames    *prometheus.CounterVec
	guests    *prometheus.CounterVec
	carries   *prometheus.CounterVec
	metricset.Set
}

// Label values, pre-created so dashboards see zeros, not gaps.
var (
	ipSources     = []ipsource.Source{ipsource.SourceNova, ipsource.SourceStatic, ipsource.SourceLearned, ipsource.SourceCarried, ipsource.SourceLeases}
	ipSkipReasons = []string{string(ipsource.ReasonClaimed), string(ipsource.ReasonLimit), "invalid", "source_error"}
	ipFrameKinds  = []ipannounce.Kind{ipannounce.GARPRequest, ipannounce.GARPReply, ipannounce.GatewayARP, ipannounce.UnsolicitedNA, ipannounce.GatewayNS}
)

// NewIPMetrics creates the IP-layer metrics, registered with reg (nil: not
// registered).
func NewIPMetrics(reg prometheus.Registerer) *IPMetrics {
	m := &IPMetrics{
		addresses: metricset.CounterVec("ip_addresses_total", "IP addresses of landed NICs that will follow their MAC, by source (nova, static, learned, carried, leases).", "source"),
		skipped:   metricset.CounterVec("ip_addresses_skipped_total", "IP addresses of landed NICs not announced, by reason (claimed_by_other_nic, per_nic_limit, invalid; source_error counts NICs with an unusable source entry).", "reason"),
		guests:    metricset.CounterVec("ip_guest_announces_total", "QMP announce-self calls asking a landed virtio guest to announce its own addresses (ip_announce.guest_announce), by result (ok, failed).", "result"),
		carries:   metricset.CounterVec("ip_metadata_writes_total", "Writes of learned addresses into a running domain's live XML (our <metadata>, ip_announce.carry_learned), so they travel with it, by result (ok, error, denied: libvirt refused, read-only socket; carrying then stops).", "result"),
		frames:    metricset.CounterVec("ip_frames_total", "IP-layer frames after the RARPs, by kind (garp_request, garp_reply, gateway_arp, unsolicited_na, gateway_ns) and result (sent, failed).", "kind", "result"),
	}
	for _, s := range ipSources {
		m.addresses.WithLabelValues(string(s))
	}
	for _, r := range ipSkipReasons {
		m.skipped.WithLabelValues(r)
	}
	for _, k := range ipFrameKinds {
		for _, r := range []string{"sent", "failed"} {
			m.frames.WithLabelValues(k.String(), r)
		}
	}
	for _, r := range []string{"ok", "failed"} {
		m.guests.WithLabelValues(r)
	}
	for _, r := range []string{"ok", "error", "denied"} {
		m.carries.WithLabelValues(r)
	}
	m.Set = metricset.Set{m.addresses, m.skipped, m.frames, m.guests, m.carries}
	return metricset.Register(reg, m)
}

func (m *IPMetrics) address(source string) { m.addresses.WithLabelValues(source).Inc() }

func (m *IPMetrics) skip(reason string) { m.skipped.WithLabelValues(reason).Inc() }

func (m *IPMetrics) frame(k ipannounce.Kind, result string) {
	m.frames.WithLabelValues(k.String(), result).Inc()
}

func (m *IPMetrics) guest(result string) { m.guests.WithLabelValues(result).Inc() }

func (m *IPMetrics) carry(result string) { m.carries.WithLabelValues(result).Inc() }
