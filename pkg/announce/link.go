package announce

import (
	"errors"
	"sync"
	"time"

	"go.uber.org/zap"
)

// item is one frame waiting on a link.
type item struct {
	h       *Handle
	slot    Slot
	first   bool
	refresh bool
	queued  time.Time
}

// link is one interface: its socket, its pacing bucket and its queue. One
// worker goroutine owns the socket, so frames on an interface go out in
// order and pacing needs no lock around the write.
type link struct {
	a    *Announcer
	name string

	mu    sync.Mutex
	first []item // first frames of announces: they go before repeats
	rest  []item
	wake  chan struct{}

	sender Sender
	tokens float64
	last   time.Time
}

func newLink(a *Announcer, name string) *link {
	return &link{a: a, name: name, wake: make(chan struct{}, 1), tokens: float64(a.opts.Pacing.Burst), last: time.Now()}
}

// push queues it; the caller holds a.mu.
func (l *link) push(it item) {
	l.mu.Lock()
	if it.first {
		l.first = append(l.first, it)
	} else {
		l.rest = append(l.rest, it)
	}
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

func (l *link) pop() (item, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	q := &l.first
	if len(*q) == 0 {
		q = &l.rest
	}
	if len(*q) == 0 {
		return item{}, false
	}
	it := (*q)[0]
	(*q)[0] = item{}
	*q = (*q)[1:]
	return it, true
}

func (l *link) work() {
	defer l.a.workers.Done()
	idle := time.NewTimer(l.a.opts.LinkIdle)
	defer idle.Stop()
	for {
		it, ok := l.pop()
		if !ok {
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
		if it.h.ctx.Err() != nil {
			l.a.skip(it)
			continue
		}
		if !l.pace() {
			l.a.skip(it)
			continue
		}
		if it.h.ctx.Err() != nil {
			l.a.skip(it)
			continue
		}
		err := l.send(it.h.frame)
		l.a.finish(it, time.Now(), err)
	}
}

// pace takes a token, waiting for one if the bucket is empty; false if the
// announcer closed meanwhile.
func (l *link) pace() bool {
	p := l.a.opts.Pacing
	if p.PerSecond <= 0 {
		return true
	}
	now := time.Now()
	l.tokens += now.Sub(l.last).Seconds() * p.PerSecond
	if max := float64(max(p.Burst, 1)); l.tokens > max {
		l.tokens = max
	}
	l.last = now
	if l.tokens < 1 {
		wait := time.Duration((1 - l.tokens) / p.PerSecond * float64(time.Second))
		l.a.m.waited(wait)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-l.a.closing:
			t.Stop()
			return false
		}
		l.tokens = 1
		l.last = time.Now()
	}
	l.tokens--
	return true
}

func (l *link) send(frame []byte) error {
	if l.sender == nil {
		s, err := l.a.opts.Open(l.name)
		if err != nil {
			return err
		}
		l.sender = s
	}
	err := l.sender.Send(frame)
	if errors.Is(err, ErrNoInterface) {
		// The device went away (a macvtap with its VM, a bridge being
		// rebuilt): reopen by name next time, it may come back with a new
		// index.
		_ = l.sender.Close()
		l.sender = nil
	}
	return err
}

// retire removes an idle link; false if a frame arrived meanwhile.
func (l *link) retire() bool {
	l.a.mu.Lock()
	l.mu.Lock()
	busy := len(l.first)+len(l.rest) > 0
	closing := false
	select {
	case <-l.a.closing:
		closing = true
	default:
	}
	if busy && !closing {
		l.mu.Unlock()
		l.a.mu.Unlock()
		return false
	}
	if l.a.links[l.name] == l {
		delete(l.a.links, l.name)
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
			l.a.log.Debug("closing sender", zap.String("interface", l.name), zap.Error(err))
		}
		l.sender = nil
	}
	return true
}
