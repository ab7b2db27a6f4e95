// Package moves keeps a per-MAC ledger of the moves this host made, so the
// agent can warn before a fabric's duplicate-MAC detection freezes a MAC.
//
// Fabrics count MAC moves and act on them: EVPN's duplicate-MAC detection
// (RFC 7432 section 15.1: 5 moves within 180 s by default) stops advertising
// the MAC; HPE/H3C shut a port after 3 moves a minute; SONiC's MAC Move
// Guard and Juniper's mac-move-limit do the like. A VM bounced between hosts
// (an evacuation retried, an HA controller fighting a scheduler) reaches
// those limits with legitimate migrations. The agent still announces each
// landing (the VM is here), but the operator must know before the fabric
// acts. A host sees only its own landings of a MAC; each one is a move into
// this host, and the moves away happen elsewhere, so the local count is at
// least half the fabric's: the default limit is set for that.
package moves

import (
	"sync"
	"time"

	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// Defaults aligned with RFC 7432's duplicate-MAC detection (N = 5 moves
// within M = 180 s), counted on the landings this host sees.
const (
	DefaultWindow = 180 * time.Second
	DefaultLimit  = 5
)

// Ledger counts recent landings per MAC. The zero value is not usable; use
// New. Safe for concurrent use.
type Ledger struct {
	window time.Duration
	limit  int

	mu    sync.Mutex
	moves map[rarp.MAC][]time.Time // ascending, none older than window
	sweep time.Time                // next time to drop MACs with no recent move
}

// New returns a ledger that warns when a MAC lands here limit times or more
// within window (zero values take the defaults).
func New(window time.Duration, limit int) *Ledger {
	if window <= 0 {
		window = DefaultWindow
	}
	if limit <= 0 {
		limit = DefaultLimit
	}
	return &Ledger{window: window, limit: limit, moves: make(map[rarp.MAC][]time.Time)}
}

// Verdict is what Record says of one landing.
type Verdict struct {
	// Moves is the number of landings of the MAC within the window,
	// this one included.
	Moves int
	// OverLimit is set when Moves reached the limit: the fabric may
	// freeze or shut the MAC soon.
	OverLimit bool
}

// Record notes a landing of mac at t and returns how many landings of it
// lie within the window ending at t.
func (l *Ledger) Record(mac rarp.MAC, t time.Time) Verdict {
	l.mu.Lock()
	defer l.mu.Unlock()
	ts := prune(l.moves[mac], t.Add(-l.window))
	ts = append(ts, t)
	l.moves[mac] = ts
	if t.After(l.sweep) {
		// Bound memory on a host that saw many MACs once: drop the ones
		// with no move inside the window, at most once per window.
		for m, old := range l.moves {
			if p := prune(old, t.Add(-l.window)); len(p) == 0 {
				delete(l.moves, m)
			} else {
				l.moves[m] = p
			}
		}
		l.sweep = t.Add(l.window)
	}
	return Verdict{Moves: len(ts), OverLimit: len(ts) >= l.limit}
}

// Window and Limit are the ledger's settings.
func (l *Ledger) Window() time.Duration { return l.window }
func (l *Ledger) Limit() int            { return l.limit }

// Len is the number of MACs with a landing inside the window (as of the
// last sweep).
func (l *Ledger) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.moves)
}

// prune drops the times before cutoff (ts is ascending), reusing ts.
func prune(ts []time.Time, cutoff time.Time) []time.Time {
	i := 0
	for i < len(ts) && ts[i].Before(cutoff) {
		i++
	}
	return append(ts[:0], ts[i:]...)
}
