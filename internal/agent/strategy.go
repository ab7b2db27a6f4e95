package agent

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/rarp-announce/rarp-announce/pkg/announce"
	"github.com/rarp-announce/rarp-announce/pkg/libvirtwatch"
	"github.com/rarp-announce/rarp-announce/pkg/plan"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// Strategy announces the NICs a plan gives it. The landing logic knows no
// strategy by name: host, ovs and qemu are adapters behind this seam, each
// owning its readiness (port up and attached, OVS port wired, nothing for
// QEMU), its cancel reasoning and its result mapping, so a new one (GARP
// and NA, uplink ports) plugs in through Deps.Strategies.
type Strategy interface {
	// Announce announces targets, every NIC of one landing that the plan
	// gave this strategy, and returns one result per target, in order,
	// once each announce has started or failed. ctx ends with the
	// landing (context.Cause: ErrSuperseded, ErrDomainLeft).
	Announce(ctx context.Context, l Landing, targets []plan.Target) []NICResult
	// CancelMAC stops every announce of mac (its domain stopped or left)
	// and says how many it stopped.
	CancelMAC(mac rarp.MAC) int
}

// Landing is what a strategy knows of the announce it serves.
type Landing struct {
	Domain   libvirtwatch.DomainRef
	Event    string    // the libvirt event's name, for logs
	Since    time.Time // when the need arose: the event's arrival, or the call
	Trigger  announce.Trigger
	Settings Settings
	Log      *zap.Logger // names the domain
	// Running asks libvirt whether the domain still runs here: a
	// strategy re-announcing later in the landing's watch window (a port
	// re-plugged, an OVN port re-installed) checks it first, so it never
	// announces a MAC that is not a running local domain's.
	Running func(ctx context.Context) (bool, error)
}

// Causes of a landing's end (context.Cause).
var (
	ErrSuperseded = errors.New("superseded by a newer landing of the domain")
	ErrDomainLeft = errors.New("the domain stopped, paused or left")
)

// PerTarget runs one for every target at once and collects the results in
// order: strategies whose NICs are independent (host, ovs) use it.
func PerTarget(targets []plan.Target, one func(plan.Target) NICResult) []NICResult {
	results := make([]NICResult, len(targets))
	inParallel(len(targets), func(i int) { results[i] = one(targets[i]) })
	return results
}

// inParallel runs f(0) to f(n-1) side by side and returns when all did.
// The last runs in the caller's goroutine: one fewer started per call (a
// landing storm makes thousands).
func inParallel(n int, f func(i int)) {
	if n == 0 {
		return
	}
	var wg sync.WaitGroup
	for i := range n - 1 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(i)
		}()
	}
	f(n - 1)
	wg.Wait()
}

// Failed maps an error of a strategy to its result: cancelled if the
// landing ended meanwhile, otherwise what (ResultFailed, ResultNotReady).
func Failed(ctx context.Context, t plan.Target, what string, err error) NICResult {
	if ctx.Err() != nil {
		what = ResultCancelled
	}
	return NICResult{Target: t, Result: what, Err: err}
}

// notHandled is the result of NICs whose strategy this agent lacks; each
// is logged as a NIC not announced, like a skipped one.
func notHandled(l Landing, s plan.Strategy, targets []plan.Target) []NICResult {
	err := errors.New("the " + string(s) + " strategy is not available")
	out := make([]NICResult, len(targets))
	for i, t := range targets {
		l.Log.Warn("NIC not announced", zap.Stringer("mac", t.NIC.MAC), zap.String("kind", string(t.Kind)), zap.Error(err))
		out[i] = NICResult{Target: t, Result: ResultNotHandled, Err: err}
	}
	return out
}
