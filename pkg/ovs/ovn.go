package ovs

// Readiness of ports that OVN manages (OpenStack ML2/OVN, or any CMS that
// plugs VM NICs into br-int with external_ids:iface-id).
//
// ovn-controller binds a logical port to this chassis when an OVS
// Interface carries external_ids:iface-id=<logical port> and the SB
// Port_Binding's requested-chassis names this chassis (as main or as
// additional chassis during a live migration). Once the port's flows are
// installed in br-int it sets external_ids:ovn-installed="true" on the
// Interface (ovn-controller's if-status manager; Neutron's and Nova's own
// "port is up" events come from the same flag through the SB). So the
// local OVSDB alone tells whether OVN has bound the port here: the agent
// needs no SB access and no OVN credentials.
//
// With activation-strategy=rarp (Neutron sets it on every live migration
// of an ML2/OVN port) the destination chassis installs, along with the
// port's flows, a table-0 flow sending RARPs that enter from the port to
// ovn-controller and drops everything else the port sends or receives,
// until such a RARP comes: then ovn-controller marks the binding
// additional-chassis-activated=<chassis> in the SB and removes the drops.
// An announce injected before ovn-installed hits no activation flow yet
// and is forwarded or dropped by whatever br-int had: it activates
// nothing. Hence: announce once the port has an ofport and ovn-installed,
// and again whenever ovn-controller re-installs it (the flag is removed
// when the binding is released or the port re-plugged, and set again).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rarp-announce/rarp-announce/pkg/metricset"
	"github.com/rarp-announce/rarp-announce/pkg/wait"
)

// External-ids keys ovn-controller reads and writes on OVS Interfaces.
const (
	// ExternalIDIfaceID names the OVN logical port (Neutron: the port
	// UUID); libvirt writes it from <virtualport type='openvswitch'>
	// <parameters interfaceid='...'/>.
	ExternalIDIfaceID = "iface-id"
	// ExternalIDOVNInstalled is "true" once ovn-controller has bound the
	// port to this chassis and installed its flows.
	ExternalIDOVNInstalled = "ovn-installed"
)

// ErrOVNNotInstalled: the port is OVN-managed (it has an iface-id) but
// ovn-controller has not bound it here and installed its flows (no
// ovn-installed) within the wait.
var ErrOVNNotInstalled = errors.New("ovn-controller has not installed the port on this chassis")

// OVNPort is what the local OVSDB says about a port, from OVN's side.
type OVNPort struct {
	// Interface is the OVS Interface name (libvirt's <target dev>).
	Interface string
	// IfaceID is external_ids:iface-id, the OVN logical port; empty: the
	// port is not OVN-managed.
	IfaceID string
	// OFPort is the OpenFlow port number; 0 unassigned, -1 failed.
	OFPort int
	// Installed is external_ids:ovn-installed == "true".
	Installed bool
}

// Managed reports whether OVN manages the port (it has an iface-id).
func (p OVNPort) Managed() bool { return p.IfaceID != "" }

// Ready reports whether an announce injected from the port now can do its
// job: the port has an ofport and, if OVN manages it, ovn-controller has
// installed it here. A port without an iface-id is ready with its ofport:
// its readiness is not OVN's business.
func (p OVNPort) Ready() bool { return p.OFPort > 0 && (!p.Managed() || p.Installed) }

// OVNReadiness reads OVN readiness from the local OVSDB over its own
// JSON-RPC connection (one read-only select per look, about 0.2 ms).
// It is safe for concurrent use.
type OVNReadiness struct {
	// Socket is the OVSDB server as --db takes it; empty: the default
	// unix:<DefaultRunDir>/db.sock.
	Socket string
	// Timeout bounds one look; default 5 s.
	Timeout time.Duration
	// Poll is the interval between looks while Wait waits; default 5 ms
	// (on a migration's destination the port is normally installed long
	// before the guest resumes, so Wait usually returns on its first look).
	Poll time.Duration
	// WatchPoll is the interval between looks in Watch; default 100 ms.
	WatchPoll time.Duration
	// Metrics, if set, counts Wait's results and Watch's re-installs.
	Metrics *OVNMetrics

	mu sync.Mutex // one request at a time on conn
	s  session
}

// Port looks up the OVS Interface named iface.
func (r *OVNReadiness) Port(ctx context.Context, iface string) (OVNPort, error) {
	if iface == "" {
		return OVNPort{}, fmt.Errorf("empty interface name: %w", ErrPortNotFound)
	}
	return r.look(ctx, []any{[]any{"name", "==", iface}}, "interface "+iface)
}

// PortByIfaceID looks up the OVS Interface whose external_ids:iface-id is
// ifaceID (the OVN logical port name, Neutron's port UUID).
func (r *OVNReadiness) PortByIfaceID(ctx context.Context, ifaceID string) (OVNPort, error) {
	if ifaceID == "" {
		return OVNPort{}, fmt.Errorf("empty iface-id: %w", ErrPortNotFound)
	}
	cond := []any{[]any{"external_ids", "includes", []any{"map", []any{[]any{ExternalIDIfaceID, ifaceID}}}}}
	return r.look(ctx, cond, "iface-id "+ifaceID)
}

// Installed reports whether ovn-controller has installed the interface
// iface on this chassis (false for a port OVN does not manage).
func (r *OVNReadiness) Installed(ctx context.Context, iface string) (bool, error) {
	p, err := r.Port(ctx, iface)
	if err != nil {
		return false, err
	}
	return p.Managed() && p.Installed, nil
}

// Wait returns once the interface iface is Ready, looking every Poll, or
// after timeout with the last state seen and an error: ErrPortNotFound,
// ErrNoOFPort or ErrOVNNotInstalled (errors.Is). A failed look (OVSDB
// down) is retried until the timeout too, and then returned.
func (r *OVNReadiness) Wait(ctx context.Context, iface string, timeout time.Duration) (OVNPort, error) {
	poll := r.Poll
	if poll <= 0 {
		poll = 5 * time.Millisecond
	}
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		p, err := r.Port(ctx, iface)
		if err == nil && p.Ready() {
			r.Metrics.waited(p, start)
			return p, nil
		}
		if err == nil {
			err = p.notReady()
		}
		if ctx.Err() != nil {
			return p, ctx.Err()
		}
		if !time.Now().Before(deadline) {
			r.Metrics.notReady(err)
			return p, fmt.Errorf("%s not ready after %v: %w", iface, timeout, err)
		}
		if !wait.Sleep(ctx.Done(), min(poll, time.Until(deadline))) {
			return p, ctx.Err()
		}
	}
}

func (p OVNPort) notReady() error {
	switch {
	case p.OFPort == 0:
		return fmt.Errorf("%s has no ofport yet: %w", p.Interface, ErrNoOFPort)
	case p.OFPort < 0:
		return fmt.Errorf("%s has ofport -1: %w", p.Interface, ErrNoOFPort)
	case p.Managed() && !p.Installed:
		return fmt.Errorf("%s (logical port %s): %w", p.Interface, p.IfaceID, ErrOVNNotInstalled)
	}
	return nil
}

// Watch looks at iface every WatchPoll for window (or until ctx ends) and
// sends its state each time it becomes Ready again after having been not
// ready, or stays ready with another ofport: ovn-controller re-installed
// the port (a re-bind, a re-plug by os-vif), so frames sent before went
// through flows that are gone. The first look only sets the baseline; a
// look OVSDB does not answer is skipped (it is no sign of a re-install). The
// channel is closed at the end; a slow reader misses no transition but may
// see only the latest state of several.
func (r *OVNReadiness) Watch(ctx context.Context, iface string, window time.Duration) <-chan OVNPort {
	poll := r.WatchPoll
	if poll <= 0 {
		poll = 100 * time.Millisecond
	}
	out := make(chan OVNPort, 1)
	go func() {
		defer close(out)
		ctx, cancel := context.WithTimeout(ctx, window)
		defer cancel()
		var last OVNPort
		first := true
		tick := time.NewTicker(poll)
		defer tick.Stop()
		for {
			p, err := r.Port(ctx, iface)
			if errors.Is(err, ErrPortNotFound) {
				p, err = OVNPort{Interface: iface}, nil // gone: not ready
			}
			// Any other error is an unreadable look (OVSDB restarting
			// or hung): it says nothing of the port and is skipped.
			// Counting it as "not ready" made the next readable look
			// a re-install, and re-announced a port that never changed.
			if err == nil {
				if !first && rebound(last, p) {
					r.Metrics.reinstalled()
					select {
					case out <- p:
					default: // the reader has not taken the previous one: replace it
						select {
						case <-out:
						default:
						}
						out <- p
					}
				}
				first, last = false, p
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return out
}

// rebound reports whether going from prev to cur means the port was
// (re-)installed and should be announced again.
func rebound(prev, cur OVNPort) bool {
	if !cur.Ready() {
		return false
	}
	return !prev.Ready() || prev.OFPort != cur.OFPort
}

func (r *OVNReadiness) look(ctx context.Context, where []any, what string) (OVNPort, error) {
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	r.mu.Lock()
	defer r.mu.Unlock()
	var res [][]row
	err := r.s.do(ctx, r.Socket, func(c *rpcConn) (err error) {
		res, err = c.transact(ctx, map[string]any{"op": "select", "table": "Interface", "where": where,
			"columns": []string{"name", "ofport", "external_ids"}})
		return err
	})
	if err != nil {
		switch {
		case parent.Err() != nil:
			return OVNPort{}, fmt.Errorf("ovn readiness of %s: %w", what, parent.Err())
		case ctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded):
			return OVNPort{}, fmt.Errorf("ovn readiness of %s: %w after %v", what, ErrTimeout, timeout)
		}
		return OVNPort{}, fmt.Errorf("ovn readiness of %s: %w", what, err)
	}
	switch len(res[0]) {
	case 0:
		return OVNPort{}, fmt.Errorf("no OVS interface with %s: %w", what, ErrPortNotFound)
	case 1:
		return ovnPortFromRow(res[0][0])
	}
	return OVNPort{}, fmt.Errorf("%w: %d OVS interfaces with %s", ErrCommand, len(res[0]), what)
}

// Close closes the OVSDB connection (a later look dials again).
func (r *OVNReadiness) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.s.close()
	return nil
}

// ovnPortFromRow reads an Interface row with name, ofport and external_ids.
func ovnPortFromRow(r row) (OVNPort, error) {
	var p OVNPort
	var err error
	if p.Interface, err = str(r, "name", false); err != nil {
		return OVNPort{}, err
	}
	if p.OFPort, err = ofport(r); err != nil {
		return OVNPort{}, err
	}
	ids, err := strMap(r, "external_ids")
	if err != nil {
		return OVNPort{}, err
	}
	p.IfaceID = ids[ExternalIDIfaceID]
	p.Installed = ids[ExternalIDOVNInstalled] == "true"
	return p, nil
}

// strMap decodes an OVSDB string-to-string map column: ["map",[[k,v],...]].
func strMap(r row, col string) (map[string]string, error) {
	raw, ok := r[col]
	if !ok {
		return nil, fmt.Errorf("%w: column %s missing", ErrCommand, col)
	}
	var m struct {
		tag   string
		pairs [][2]string
	}
	var arr []json.RawMessage
	if err := json.Unmarshal(raw, &arr); err != nil || len(arr) != 2 ||
		json.Unmarshal(arr[0], &m.tag) != nil || m.tag != "map" ||
		json.Unmarshal(arr[1], &m.pairs) != nil {
		return nil, fmt.Errorf("%w: column %s: want a string map, got %s", ErrCommand, col, raw)
	}
	out := make(map[string]string, len(m.pairs))
	for _, kv := range m.pairs {
		out[kv[0]] = kv[1]
	}
	return out, nil
}

// Results of OVNReadiness.Wait, the label values of
// rarp_announce_ovn_readiness_total.
var OVNResults = []string{"installed", "not_ovn", "not_installed", "no_ofport", "not_found", "error"}

// OVNMetrics tells an operator whether OVS ports were OVN-managed and
// installed when announced. The caller registers it (a
// prometheus.Collector); a nil *OVNMetrics counts nothing.
type OVNMetrics struct {
	metricset.Set
	results  *prometheus.CounterVec
	wait     prometheus.Histogram
	reinstal prometheus.Counter
}

// NewOVNMetrics creates the metrics with every result at zero, registered
// with reg (nil: not registered).
func NewOVNMetrics(reg prometheus.Registerer) *OVNMetrics {
	m := &OVNMetrics{
		results: metricset.CounterOf("ovn_readiness_total",
			"Readiness checks of OVS ports before an announce, by result: installed (OVN-managed, ovn-installed set here), "+
				"not_ovn (no external_ids:iface-id: not OVN's), not_installed (ovn-controller did not install it here in time), "+
				"no_ofport, not_found, error (OVSDB unreachable or hung).",
			"result", OVNResults...),
		wait: metricset.Histogram("ovn_readiness_wait_seconds",
			"Time from the start of an OVS port's readiness wait until it was ready (OVN-managed ports: ovn-installed); 0 when it already was.",
			[]float64{0, .001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}),
		reinstal: metricset.Counter("ovn_reinstalls_total",
			"OVN-managed ports that ovn-controller installed again (or that got a new ofport) within the watch window after a landing."),
	}
	m.Set = metricset.Set{m.results, m.wait, m.reinstal}
	return metricset.Register(reg, m)
}

func (m *OVNMetrics) waited(p OVNPort, start time.Time) {
	if m == nil {
		return
	}
	if p.Managed() {
		m.results.WithLabelValues("installed").Inc()
	} else {
		m.results.WithLabelValues("not_ovn").Inc()
	}
	m.wait.Observe(time.Since(start).Seconds())
}

func (m *OVNMetrics) notReady(err error) {
	if m == nil {
		return
	}
	r := "error"
	switch {
	case errors.Is(err, ErrOVNNotInstalled):
		r = "not_installed"
	case errors.Is(err, ErrNoOFPort):
		r = "no_ofport"
	case errors.Is(err, ErrPortNotFound):
		r = "not_found"
	}
	m.results.WithLabelValues(r).Inc()
}

func (m *OVNMetrics) reinstalled() {
	if m != nil {
		m.reinstal.Inc()
	}
}
