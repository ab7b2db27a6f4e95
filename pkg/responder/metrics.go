package responder

import (
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rarp-announce/rarp-announce/pkg/metricset"
)

// tally is one of an interface's counts: the index of counters.n,
// batchCounts.n and Metrics.descs.
type tally int

const (
	tRequests tally = iota
	tReplies
	tUnknown
	tOffLink
	tNotBootable
	tSendErrors
	tRingDrops // counted from the ring's statistics, not per batch
	numTallies
)

// counters are one interface's tallies. The receive loop adds to them once
// per batch; the collector reads them at scrape time, so counting costs
// the hot path a few uncontended atomic adds and no allocation.
type counters struct {
	n         [numTallies]atomic.Uint64
	malformed [numMalformed]atomic.Uint64 // by malformedReasons
}

// batchCounts is what one batch adds to counters.
type batchCounts struct {
	n         [numTallies]uint64
	malformed [numMalformed]uint64
}

func (c *counters) add(b *batchCounts) {
	addNonZero(c.n[:], b.n[:])
	addNonZero(c.malformed[:], b.malformed[:])
	*b = batchCounts{}
}

// addNonZero adds from to to, skipping the zeros (most of a batch's
// tallies): an atomic add is not free.
func addNonZero(to []atomic.Uint64, from []uint64) {
	for i, n := range from {
		if n != 0 {
			to[i].Add(n)
		}
	}
}

// Stats is a snapshot of one interface's counters.
type Stats struct {
	Requests, Replies, Unknown, OffLink, NotBootable, SendErrors, RingDrops uint64
	Malformed                                                               map[string]uint64
}

func (c *counters) snapshot() Stats {
	s := Stats{
		Requests: c.n[tRequests].Load(), Replies: c.n[tReplies].Load(), Unknown: c.n[tUnknown].Load(),
		OffLink: c.n[tOffLink].Load(), NotBootable: c.n[tNotBootable].Load(), SendErrors: c.n[tSendErrors].Load(),
		RingDrops: c.n[tRingDrops].Load(), Malformed: map[string]uint64{},
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

	descs     [numTallies]*prometheus.Desc
	malformed *prometheus.Desc
}

// tallyMetrics names and explains each tally's counter.
var tallyMetrics = [numTallies]struct{ name, help string }{
	tRequests:    {"responder_requests_total", "Well-formed RARP requests (op 3, Ethernet source = sender hardware address) received, answered or not."},
	tReplies:     {"responder_replies_total", "RARP replies sent (op 4, unicast to the requester), one per answered request."},
	tUnknown:     {"responder_unknown_requests_total", "RARP requests for a MAC that is not in the table (not answered)."},
	tOffLink:     {"responder_offlink_refusals_total", "RARP requests not answered because the mapped IPv4 address is not on the interface's subnet (allow with --off-link)."},
	tNotBootable: {"responder_unbootable_refusals_total", "RARP requests not answered because the boot directory has no file for the mapped address."},
	tSendErrors:  {"responder_send_errors_total", "RARP replies that could not be sent (interface down, send buffer full)."},
	tRingDrops:   {"responder_ring_drops_total", "RARP requests the kernel dropped because the receive ring was full."},
}

// NewMetrics creates the responder metrics; reg (if not nil) registers
// them.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		links: map[string]*counters{},
		malformed: prometheus.NewDesc(name("responder_malformed_frames_total"),
			"RARP frames with op 3 that are not valid requests, by reason: short_frame, htype, ptype, hlen, plen, sender_mismatch (Ethernet source differs from the sender hardware address, which rarpd also refuses), bad_source (Ethernet source broadcast, multicast or zero: no reply, which would be flooded), other.",
			[]string{"interface", "reason"}, nil),
	}
	for t, tm := range tallyMetrics {
		m.descs[t] = prometheus.NewDesc(name(tm.name), tm.help, []string{"interface"}, nil)
	}
	return metricset.Register(reg, m)
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
	for _, d := range m.descs {
		ch <- d
	}
	ch <- m.malformed
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
		for t, d := range m.descs {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(c.n[t].Load()), name)
		}
		for i, r := range malformedReasons {
			ch <- prometheus.MustNewConstMetric(m.malformed, prometheus.CounterValue, float64(c.malformed[i].Load()), name, r)
		}
	}
}
