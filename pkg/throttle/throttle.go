// Package throttle lets the first of a repeated event through and holds the
// same one back for a period, counting what it held: a dead interface fails
// every frame sent on it, a port Neutron has not wired fails every retry.
// The metrics count each; the log says it once a period, with the count.
package throttle

import (
	"sync"
	"time"
)

// Keyed throttles events by key: one per Every for each key. The zero value
// needs Every set; safe for concurrent use.
type Keyed[K comparable] struct {
	Every time.Duration

	mu   sync.Mutex
	keys map[K]*held
}

type held struct {
	last       time.Time
	suppressed int
}

// forgetAfter, in periods, is how long a key that went quiet is kept: its
// count of held-back events goes with its next line if the same event comes
// back within it, and the map stays as small as the set of keys failing now.
const forgetAfter = 6

// Allow reports whether k's event at now may go out, and how many of k's
// were held back since the last one that did.
func (q *Keyed[K]) Allow(k K, now time.Time) (suppressed int, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.keys == nil {
		q.keys = map[K]*held{}
	}
	h := q.keys[k]
	if h == nil {
		h = &held{}
		q.keys[k] = h
	}
	if !h.last.IsZero() && now.Sub(h.last) < q.Every {
		h.suppressed++
		return 0, false
	}
	suppressed = h.suppressed
	h.last, h.suppressed = now, 0
	for o, e := range q.keys {
		if now.Sub(e.last) > forgetAfter*q.Every {
			delete(q.keys, o)
		}
	}
	return suppressed, true
}

// Len is how many keys are kept.
func (q *Keyed[K]) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.keys)
}
