package announce

import (
	"errors"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/rarp-announce/rarp-announce/pkg/wait"
)

// item is one frame waiting on a link.
type item struct {
	h       *Handle
	slot    Slot
	first   bool
	refresh bool
}

// link is one interface: its socket, its pacing bucket and its queue. One
// writer at a time holds sendMu and the socket with it, so frames on an
// interface go out in order: the link's worker goroutine, for the frames
// queued, or the announce's own goroutine, for a first frame that finds
// the link idle (trySend).
type link struct {
	a    *Announcer
	port Port

	// sendMu is held from taking a frame to its outcome, and guards
	// sender. Lock order: sendMu, then a.mu, then mu.
	sendMu sync.Mutex
	sender Sender

	mu      sync.Mutex
	first   []item // first frames of announces: they go before repeats
	rest    []item
	wake    chan struct{}
	warm    bool // Warm asked for the socket before a frame
	direct  bool // a frame went out through trySend since retire last looked
	retired bool // removed from the announcer: frames go to a new link
	// slow: its last send took longer than slowSend. Its first frames are
	// then left out of a.firsts, so that a stuck segment (a hung
	// ovs-vswitchd answering each packet-out at its timeout) does not hold
	// every other link's repeats back for as long as its queue lasts.
	// Written with sendMu and mu held (setSlow), so the writer, holding
	// sendMu, reads it without mu.
	slow bool

	pacer *Pacer // its segment's, shared with the other links on it
}

// segmentPacer is a segment's pacer and how many links use it.
type segmentPacer struct {
	*Pacer
	links int
}

// newLink creates the link of port; the caller holds a.mu.
func newLink(a *Announcer, port Port) *link {
	seg := port.Segment()
	sp := a.pacers[seg]
	if sp == nil {
		sp = &segmentPacer{Pacer: NewPacer(a.opts.Pacing)}
		a.pacers[seg] = sp
	}
	sp.links++
	return &link{a: a, port: port, wake: make(chan struct{}, 1), pacer: sp.Pacer}
}

// push queues it; the caller holds a.mu.
func (l *link) push(it item) {
	l.mu.Lock()
	if it.first {
		if !l.slow {
			l.a.firsts.Add(1)
		}
		l.first = append(l.first, it)
	} else {
		l.rest = append(l.rest, it)
	}
	l.mu.Unlock()
	wait.Wake(l.wake)
}

// pop takes the next frame: a first frame if any, else a repeat, unless
// some link anywhere (but a slow one) still has a first frame waiting
// (deferred). When many
// VMs land at once, the kernel's cost of sending (a broadcast is flooded to
// every port of the bridge inside sendto) saturates the CPUs; a repeat
// sent on one bridge then delays another bridge's first frame. Repeats are
// insurance, the first frame is what moves the switch: they wait.
func (l *link) pop() (it item, ok, deferred bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	q := &l.first
	if len(*q) == 0 {
		q = &l.rest
		if len(*q) > 0 && l.a.firsts.Load() > 0 {
			return item{}, false, true
		}
	} else if !l.slow {
		l.a.firsts.Add(-1)
	}
	if len(*q) == 0 {
		return item{}, false, false
	}
	it = (*q)[0]
	(*q)[0] = item{}
	*q = (*q)[1:]
	return it, true, false
}

// deferWait is how long a link with only repeats waits before looking
// again whether other links' first frames are out.
const deferWait = 500 * time.Microsecond

func (l *link) work() {
	defer l.a.workers.Done()
	idle := time.NewTimer(l.a.opts.LinkIdle)
	defer idle.Stop()
	var deferTimer *time.Timer
	defer func() {
		if deferTimer != nil {
			deferTimer.Stop()
		}
	}()
	for {
		l.sendMu.Lock()
		it, ok, deferred := l.pop()
		if deferred {
			l.sendMu.Unlock()
			if deferTimer == nil {
				deferTimer = time.NewTimer(deferWait)
			} else {
				deferTimer.Reset(deferWait)
			}
			select {
			case <-l.wake: // a first frame for this link
			case <-deferTimer.C:
			case <-l.a.closing:
				l.retire()
				return
			}
			continue
		}
		if !ok {
			if l.takeWarm() && l.sender == nil {
				if s, err := l.a.opts.OpenPort(l.port); err == nil {
					l.sender = s
				} // else the first frame tries again and reports it
			}
			l.sendMu.Unlock()
			if !idle.Stop() {
				select {
				case <-idle.C:
				default:
				}
			}
			idle.Reset(l.a.opts.LinkIdle)
			select {
			case <-l.wake:
				continue
			case <-idle.C:
				if l.retire() {
					return
				}
				continue
			case <-l.a.closing:
				l.retire()
				return
			}
		}
		l.a.m.queuedAdd(-1)
		l.deliver(it)
		l.sendMu.Unlock()
	}
}

// deliver paces and sends one queued frame and records its outcome; the
// caller holds sendMu.
func (l *link) deliver(it item) {
	if it.h.ctx.Err() != nil || !l.pace() || it.h.ctx.Err() != nil {
		l.a.skip(it)
		return
	}
	l.write(it)
}

// write sends it and records the outcome; the caller holds sendMu and
// has paced it.
func (l *link) write(it item) {
	start := time.Now()
	err := l.send(it.h.frame)
	now := time.Now()
	l.setSlow(now.Sub(start) > slowSend)
	l.a.finish(it, now, err)
}

// slowSend is the send time past which a link counts as slow (see
// link.slow): far above what a send costs even when a storm saturates the
// CPUs (milliseconds), well below the timeouts of a stuck segment (OVS's
// seconds). Its first send still holds the others back for as long as it
// takes.
const slowSend = 200 * time.Millisecond

// setSlow records whether the last send was slow, moving the link's
// queued first frames out of a.firsts (or back into it); the caller holds
// sendMu. Every frame calls it: the usual case, no change, takes no lock.
func (l *link) setSlow(slow bool) {
	if slow == l.slow {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.slow = slow
	n := int64(len(l.first))
	if slow {
		n = -n
	}
	l.a.firsts.Add(n)
}

// trySend sends a first frame at once, in the caller's goroutine, if the
// link is idle: nobody writing, nothing queued, a token in the bucket.
// The frame then needs no wake-up of the worker, and the landing that
// waits for it no wake-up of its own: in the storm of 1,000 landings those
// two goroutine switches per NIC were most of the Go scheduler's quarter
// of the agent's CPU. False: the caller queues it.
func (l *link) trySend(it item) bool {
	if !l.sendMu.TryLock() {
		return false
	}
	defer l.sendMu.Unlock()
	l.mu.Lock()
	idle := !l.retired && len(l.first)+len(l.rest) == 0
	if idle {
		l.direct = true
	}
	l.mu.Unlock()
	if !idle {
		return false
	}
	if it.h.ctx.Err() != nil {
		l.a.skip(it)
		return true
	}
	if !l.pacer.TryTake() {
		return false
	}
	l.write(it)
	return true
}

// takeWarm reports and clears a Warm request.
func (l *link) takeWarm() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.warm
	l.warm = false
	return w
}

// pace takes a token of the link's pacer, waiting for one if the bucket
// is empty; false if the announcer closed meanwhile.
func (l *link) pace() bool {
	d, ok := l.pacer.Wait(l.a.closing)
	if d > 0 {
		l.a.m.waited(d)
	}
	return ok
}

func (l *link) send(frame []byte) error {
	fresh := false
	if l.sender == nil {
		s, err := l.a.opts.OpenPort(l.port)
		if err != nil {
			return err
		}
		l.sender, fresh = s, true
	}
	err := l.sender.Send(frame)
	if !errors.Is(err, ErrNoInterface) {
		return err
	}
	// The device the socket was bound to went away (a macvtap with its
	// VM, a bridge, bond or VLAN device being rebuilt). One of the same
	// name may be there already, with a new index: a socket kept open
	// (Warm) outlives the old one. Reopen by name at once, so this frame,
	// most often an announce's first, is not lost.
	_ = l.sender.Close()
	l.sender = nil
	if fresh {
		return err
	}
	s, oerr := l.a.opts.OpenPort(l.port)
	if oerr != nil {
		return err
	}
	l.sender = s
	if err = s.Send(frame); errors.Is(err, ErrNoInterface) {
		_ = s.Close()
		l.sender = nil
	}
	return err
}

// retire removes an idle link; false if a frame arrived or went out
// directly meanwhile.
func (l *link) retire() bool {
	l.sendMu.Lock()
	defer l.sendMu.Unlock()
	l.a.mu.Lock()
	l.mu.Lock()
	busy := len(l.first)+len(l.rest) > 0 || l.direct
	l.direct = false
	if busy && !wait.Closed(l.a.closing) {
		l.mu.Unlock()
		l.a.mu.Unlock()
		return false
	}
	l.retired = true
	if l.a.links[l.port] == l {
		delete(l.a.links, l.port)
		seg := l.port.Segment()
		if sp := l.a.pacers[seg]; sp != nil {
			if sp.links--; sp.links <= 0 {
				delete(l.a.pacers, seg)
			}
		}
	}
	if !l.slow {
		l.a.firsts.Add(-int64(len(l.first)))
	}
	rest := append(l.first, l.rest...)
	l.first, l.rest = nil, nil
	l.mu.Unlock()
	l.a.mu.Unlock()
	for _, it := range rest {
		l.a.m.queuedAdd(-1)
		l.a.skip(it)
	}
	if l.sender != nil {
		if err := l.sender.Close(); err != nil {
			l.a.log.Debug("closing sender", zap.Stringer("port", l.port), zap.Error(err))
		}
		l.sender = nil
	}
	return true
}
