package ipsource

import "time"

// SetClock makes l read the time from now.
func (l *Learned) SetClock(now func() time.Time) { l.now = now }
