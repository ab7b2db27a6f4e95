package announce

import (
	"sync"
	"time"

	"go.uber.org/zap"
)

// sendErrorEvery is how often, at most, a host port's send errors are
// logged: a dead interface fails every frame of every announce on it, and
// a line per frame would flood the journal (and block, see
// internal/logging). The frames between two lines are counted in the next.
const sendErrorEvery = 10 * time.Second

// sendErrors rate-limits the log of frame send errors, per port. The
// metric (frames_failed_total) counts every one; the log says which
// interface and why, which the metric cannot.
type sendErrors struct {
	mu    sync.Mutex
	ports map[Port]*portErrors
}

type portErrors struct {
	last       time.Time
	suppressed int
}

// note logs err for r's port unless one was logged less than
// sendErrorEvery ago (then it is counted for the next line).
func (s *sendErrors) note(log *zap.Logger, r Request, err error, now time.Time) {
	p := r.port()
	s.mu.Lock()
	if s.ports == nil {
		s.ports = map[Port]*portErrors{}
	}
	pe := s.ports[p]
	if pe == nil {
		pe = &portErrors{}
		s.ports[p] = pe
	}
	if !pe.last.IsZero() && now.Sub(pe.last) < sendErrorEvery {
		pe.suppressed++
		s.mu.Unlock()
		return
	}
	suppressed := pe.suppressed
	pe.last, pe.suppressed = now, 0
	// Forget ports quiet for a while: the map stays as small as the set of
	// interfaces failing now.
	for q, e := range s.ports {
		if now.Sub(e.last) > 6*sendErrorEvery {
			delete(s.ports, q)
		}
	}
	s.mu.Unlock()
	log.Warn("announce frame not sent", zap.Stringer("port", p), zap.Stringer("mac", r.MAC), zap.Uint16("vlan", r.VLAN.ID),
		zap.Error(err), zap.Int("more_failures_since_last_logged", suppressed))
}
