// Package qmp asks QEMU to announce a guest's NICs itself, with QMP
// announce-self sent through libvirt's monitor passthrough
// (virDomainQemuMonitorCommand). Its frames enter the bridge from the VM's
// tap, exactly as the guest's own would: no FDB repair is needed, OVN's
// activation-strategy=rarp sees them, and it is the only way for vhost-user
// NICs, which have no kernel device.
//
// Costs, which is why it is not the default for every NIC: it needs
// libvirt's read-write socket, libvirt marks the domain "tainted" (custom
// monitor command), and during an incoming migration the call blocks until
// the migration job ends, so callers must bound it with a timeout.
package qmp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rarp-announce/rarp-announce/pkg/announce"
	"github.com/rarp-announce/rarp-announce/pkg/metricset"
	"github.com/rarp-announce/rarp-announce/pkg/wait"
)

// Monitor runs one QMP command on a domain (by UUID) and returns QEMU's raw
// reply. libvirtconn provides it over the read-write socket. Whenever
// libvirt answered, the reply is returned (a monitor that also reports
// QEMU's error as an error, as libvirtconn does, is fine: the reply
// decides). A timeout should be an error with a Timeout() method that
// returns true (context.DeadlineExceeded, libvirtconn.ErrTimeout).
type Monitor func(ctx context.Context, uuid, cmd string) (string, error)

// Errors, distinguishable for metrics and logs.
var (
	// ErrQMP: QEMU answered with an error (bad alias, old QEMU, ...).
	ErrQMP = errors.New("QEMU refused announce-self")
	// ErrReply: the reply is not a QMP reply at all.
	ErrReply = errors.New("unexpected QMP reply")
)

// command is QMP's announce-self (QEMU >= 4.1: interfaces and id). The four timings are
// required; interfaces takes the NICs' device ids, which are libvirt's
// aliases (net0, ...).
type command struct {
	Execute   string    `json:"execute"`
	Arguments arguments `json:"arguments"`
}

type arguments struct {
	Initial    int64    `json:"initial"`
	Max        int64    `json:"max"`
	Rounds     int      `json:"rounds"`
	Step       int64    `json:"step"`
	Interfaces []string `json:"interfaces,omitempty"`
	// ID names QEMU's announce timer; a second announce-self with the
	// same id replaces the first instead of running beside it.
	ID string `json:"id,omitempty"`
}

// AnnounceSelfCommand returns the QMP JSON for one burst of s on aliases.
func AnnounceSelfCommand(aliases []string, s announce.Schedule, id string) (string, error) {
	if len(aliases) == 0 {
		return "", errors.New("announce-self: no interface aliases")
	}
	b, err := json.Marshal(command{Execute: "announce-self", Arguments: arguments{
		Initial: s.Initial.Milliseconds(), Max: s.Max.Milliseconds(), Rounds: s.Rounds,
		Step: s.Step.Milliseconds(), Interfaces: aliases, ID: id,
	}})
	return string(b), err
}

// reply is a QMP reply: {"return": ...} or {"error": {"class","desc"}}.
type reply struct {
	Return *json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
}

// ParseReply returns nil for a QMP success and an error wrapping ErrQMP
// (with QEMU's class and description) or ErrReply otherwise. libvirt
// returns QMP errors as a successful call whose string holds the error.
func ParseReply(s string) error {
	var r reply
	if err := json.Unmarshal([]byte(s), &r); err != nil {
		return fmt.Errorf("%w: %q", ErrReply, truncate(s))
	}
	switch {
	case r.Error != nil:
		return fmt.Errorf("%w: %s: %s", ErrQMP, r.Error.Class, r.Error.Desc)
	case r.Return != nil:
		return nil
	}
	return fmt.Errorf("%w: %q", ErrReply, truncate(s))
}

func truncate(s string) string {
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}

// Announcer sends announce-self for a domain's NICs.
type Announcer struct {
	Monitor Monitor
	Metrics *Metrics
	// Name tells this announcer's QEMU timers from another's ("" is
	// "rarp-announce"). QEMU runs one timer per id, and announce-self
	// with an id in use replaces that timer's NICs and rounds: the
	// timer's id is Name and the NICs' aliases, so announces of other
	// NICs, or of another announcer (the landing's, the guest's), run
	// beside each other, and a new one of the same NICs replaces the old.
	Name string

	later sync.WaitGroup // the bursts after the first, in the background (Wait)
}

// Wait waits until every burst after the first that AnnounceSelf started
// was asked for (or its context ended): a one-shot announce must not exit
// before them.
func (a *Announcer) Wait() { a.later.Wait() }

// timerID names the QEMU announce timer for aliases.
func (a *Announcer) timerID(aliases []string) string {
	name := a.Name
	if name == "" {
		name = "rarp-announce"
	}
	return name + ":" + strings.Join(aliases, ",")
}

// AnnounceSelf asks QEMU for s.Bursts bursts on the NICs named by
// aliases, started as burstStarts says. It returns after the first burst
// was accepted (or refused); the following bursts run until ctx is done.
// QMP has no equivalent of a periodic refresh, so s.Refresh is not applied
// here.
func (a *Announcer) AnnounceSelf(ctx context.Context, uuid string, aliases []string, s announce.Schedule) error {
	cmd, err := AnnounceSelfCommand(aliases, s, a.timerID(aliases))
	if err != nil {
		return err
	}
	start := time.Now()
	if err := a.once(ctx, uuid, cmd); err != nil {
		return err
	}
	if s.Bursts > 1 {
		a.later.Add(1)
		go func() {
			defer a.later.Done()
			for _, at := range burstStarts(s)[1:] {
				if !wait.Sleep(ctx.Done(), time.Until(start.Add(at))) {
					return
				}
				_ = a.once(ctx, uuid, cmd)
			}
		}()
	}
	return nil
}

// burstGap is how long after QEMU's last round of a burst the next
// burst's announce-self may go: the RPC's own latency varies, and one that
// arrived first would cancel that round.
const burstGap = 50 * time.Millisecond

// burstStarts is when each burst's announce-self goes, from the first:
// BurstInterval apart, but never before the previous burst's last round
// plus burstGap. The next announce-self of the same NICs replaces QEMU's
// timer (see Announcer.Name), so a burst that outlasts the interval would
// lose its tail.
func burstStarts(s announce.Schedule) []time.Duration { return s.BurstStarts(burstGap) }

func (a *Announcer) once(ctx context.Context, uuid, cmd string) error {
	out, err := a.Monitor(ctx, uuid, cmd)
	if out != "" || err == nil {
		// libvirt answered: QEMU's reply says what happened, whatever
		// the monitor made of it.
		err = ParseReply(out)
	}
	a.Metrics.count(err)
	return err
}

// IsTimeout reports an error that says it is a timeout: libvirt did not
// answer within its RPC timeout (during an incoming migration the call
// waits for the migration job to end) or a deadline passed.
func IsTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// Metrics counts announce-self calls by result.
type Metrics struct {
	calls *prometheus.CounterVec
}

// NewMetrics creates the metrics, registered with reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{calls: metricset.CounterVec("qmp_announce_self_total", "QMP announce-self calls through libvirt, by result: ok, qmp_error (QEMU refused), bad_reply, timeout (libvirt did not answer in time), cancelled (the domain stopped or left first), rpc_error (libvirt call failed).", "result")}
	for _, r := range []string{"ok", "qmp_error", "bad_reply", "timeout", "cancelled", "rpc_error"} {
		m.calls.WithLabelValues(r)
	}
	return metricset.Register(reg, m)
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) { m.calls.Describe(ch) }

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) { m.calls.Collect(ch) }

func (m *Metrics) count(err error) {
	if m == nil {
		return
	}
	r := "ok"
	switch {
	case err == nil:
	case errors.Is(err, ErrQMP):
		r = "qmp_error"
	case errors.Is(err, ErrReply):
		r = "bad_reply"
	case IsTimeout(err):
		r = "timeout"
	case errors.Is(err, context.Canceled):
		r = "cancelled"
	default:
		r = "rpc_error"
	}
	m.calls.WithLabelValues(r).Inc()
}
