package responder

import (
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rarp-announce/rarp-announce/pkg/metricset"
)

// counters are one interface's tallies. The receive loop adds to them once
// per batch; the collector reads them at scrape time, so counting costs
// the hot path a few uncontended atomic adds and no allocation.
type counters struct {
	requests    atomic.Uint64
	replies     atomic.Uint64
	unknown     atomic.Uint64
	offLink     atomic.Uint64
	notBootable atomic.Uint64
	sendErrors  atomic.Uint64
	ringDrops   atomic.Uint64
	malformed   [numMalformed]atomic.Uint64 // by malformedReasons
}

// batchCounts is what one batch adds to counters.
type batchCounts struct {
	requests, replies, unknown, offLink, notBootable, sendErrors uint64
	malformed                                                    [numMalformed]uint64
}

func (c *counters) add(b *batchCounts) {
	if b.requests != 0 {
		c.requests.Add(b.requests)
	}
	if b.replies != 0 {
		c.replies.Add(b.replies)
	}
	if b.unknown != 0 {
		c.unknown.Add(b.unknown)
	}
	if b.offLink != 0 {
		c.offLink.Add(b.offLink)
	}
	if b.notBootable != 0 {
		c.notBootable.Add(b.notBootable)
	}
	if b.sendErrors != 0 {
		c.sendErrors.Add(b.sendErrors)
	}
	for i, n := range b.malformed {
		if n != 0 {
			c.malformed[i].Add(n)
		}
	}
	*b = batchCounts{}
}

// Stats is a snapshot of one interface's counters.
type Stats struct {
	Requests, Replies, Unknown, OffLink, NotBootable, SendErrors, RingDrops uint64
	Malformed                                                               map[string]uint64
}

func (c *counters) snapshot() Stats {
	s := Stats{
		Requests: c.requests.Load(), Replies: c.replies.Load(), Unknown: c.unknown.Load(),
		OffLink: c.offLink.Load(), NotBootable: c.notBootable.Load(), SendErrors: c.sendErrors.Load(),
		RingDrops: c.ringDrops.Load(), Malformed: map[string]uint64{},
	}
	for i, r := range malformedReasons {
		s.Malformed[r] = c.malformed[i].Load()
	}
	return s
}

// Metrics exposes what responders answer, per interface. The caller
// registers it (it is a prometheus.Collector) and passes it in Config;
// several responders may share one. A nil *Metrics counts nothing
// outside the responder (Responder.Stats still works).
type Metrics struct {
	mu    sync.Mutex
	links map[string]*counters

	requests, replies, unknown, malformed, offLink, notBootable, sendErrors, ringDrops *prometheus.Desc
}

// NewMetrics creates the responder metrics; reg (if not nil) registers
// them.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	l := []string{"interface"}
	return metricset.Register(reg, &Metrics{
		links: map[string]*counters{},
		requests: prometheus.NewDesc(name("responder_requests_total"),
			"Well-formed RARP requests (op 3, Ethernet source = sender hardware address) received, answered or not.", l, nil),
		replies: prometheus.NewDesc(name("responder_replies_total"),
			"RARP replies sent (op 4, unicast to the requester), one per answered request.", l, nil),
		unknown: prometheus.NewDesc(name("responder_unknown_requests_total"),
			"RARP requests for a MAC that is not in the table (not answered).", l, nil),
		malformed: prometheus.NewDesc(name("responder_malformed_frames_total"),
			"RARP frames with op 3 that are not valid requests, by reason: short_frame, htype, ptype, hlen, plen, sender_mismatch (Ethernet source differs from the sender hardware address, which rarpd also refuses), bad_source (Ethernet source broadcast, multicast or zero: no reply, which would be flooded), other.",
			[]string{"interface", "reason"}, nil),
		offLink: prometheus.NewDesc(name("responder_offlink_refusals_total"),
			"RARP requests not answered because the mapped IPv4 address is not on the interface's subnet (allow with --off-link).", l, nil),
		notBootable: prometheus.NewDesc(name("responder_unbootable_refusals_total"),
			"RARP requests not answered because the boot directory has no file for the mapped address.", l, nil),
		sendErrors: prometheus.NewDesc(name("responder_send_errors_total"),
			"RARP replies that could not be sent (interface down, send buffer full).", l, nil),
		ringDrops: prometheus.NewDesc(name("responder_ring_drops_total"),
			"RARP requests the kernel dropped because the receive ring was full.", l, nil),
	})
}

// name is a metric's full name under metricset.Namespace.
func name(n string) string { return prometheus.BuildFQName(metricset.Namespace, "", n) }

// link returns the counters for an interface, creating them once: a
// responder restarted on the same interface keeps counting on.
func (m *Metrics) link(name string) *counters {
	if m == nil {
		return &counters{}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.links[name]
	if c == nil {
		c = &counters{}
		m.links[name] = c
	}
	return c
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.requests, m.replies, m.unknown, m.malformed, m.offLink, m.notBootable, m.sendErrors, m.ringDrops} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	links := make(map[string]*counters, len(m.links))
	for k, v := range m.links {
		links[k] = v
	}
	m.mu.Unlock()
	for name, c := range links {
		s := c.snapshot()
		put := func(d *prometheus.Desc, v uint64, labels ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), append([]string{name}, labels...)...)
		}
		put(m.requests, s.Requests)
		put(m.replies, s.Replies)
		put(m.unknown, s.Unknown)
		put(m.offLink, s.OffLink)
		put(m.notBootable, s.NotBootable)
		put(m.sendErrors, s.SendErrors)
		put(m.ringDrops, s.RingDrops)
		for _, r := range malformedReasons {
			put(m.malformed, s.Malformed[r], r)
		}
	}
}
