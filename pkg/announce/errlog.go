package announce

import (
	"time"

	"go.uber.org/zap"

	"github.com/rarp-announce/rarp-announce/pkg/throttle"
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
	ports throttle.Keyed[Port] // Every: sendErrorEvery (newSendErrors)
}

func newSendErrors() sendErrors {
	return sendErrors{ports: throttle.Keyed[Port]{Every: sendErrorEvery}}
}

// note logs err for r's port unless one was logged less than
// sendErrorEvery ago (then it is counted for the next line).
func (s *sendErrors) note(log *zap.Logger, r Request, err error, now time.Time) {
	p := r.port()
	suppressed, ok := s.ports.Allow(p, now)
	if !ok {
		return
	}
	log.Warn("announce frame not sent", zap.Stringer("port", p), zap.Stringer("mac", r.MAC), zap.Uint16("vlan", r.VLAN.ID),
		zap.Error(err), zap.Int("more_failures_since_last_logged", suppressed))
}
