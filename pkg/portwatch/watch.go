package portwatch

import (
	"context"
	"strings"
	"time"

	"go.uber.org/zap"
)

// Cause says what happened to a port before a Change; several can be set.
type Cause uint8

// Causes of a Change.
const (
	// CauseReattached: the port's master changed (detached, attached,
	// or moved to another bridge).
	CauseReattached Cause = 1 << iota
	// CauseRestarted: the port stopped passing frames (admin down, lost
	// carrier, or its bridge port left forwarding) and came back.
	CauseRestarted
	// CauseRecreated: the port was deleted (or renamed away) and a port
	// of that name exists again.
	CauseRecreated
	// CauseResync: the watcher lost link updates (receive buffer
	// overflow) and rebuilt its view; the port may have changed unseen.
	CauseResync
)

var causeNames = []struct {
	c    Cause
	name string
}{{CauseReattached, "reattached"}, {CauseRestarted, "restarted"}, {CauseRecreated, "recreated"}, {CauseResync, "resync"}}

func (c Cause) String() string {
	var parts []string
	for _, n := range causeNames {
		if c&n.c != 0 {
			parts = append(parts, n.name)
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, "+")
}

// Change reports that a watched port is ready again after it changed.
type Change struct {
	Port  string
	Cause Cause
	State State     // the port, ready
	At    time.Time // when it was found ready and settled
}

// changeBuffer is how many Changes wait for a slow reader before further
// ones are dropped: each is a reason to announce again, and the reader
// already has that many.
const changeBuffer = 8

type watch struct {
	port, master string
	ch           chan Change

	// What the port looked like when last checked.
	index, masterIndex int
	ready              bool
	causes             Cause // seen since the last Change

	settle    *time.Timer
	settleGen uint64 // invalidates a settle timer that fired late
	window    *time.Timer
	stopCtx   func() bool
	ended     bool

	// WatchFunc: fn handles the Changes queued in ch, in a goroutine
	// that runs only while there are some (handling); onEnd runs once
	// the watch ended and fn returned for the last time.
	fn       func(Change)
	onEnd    func()
	handling bool
}

// Watch reports, for window from now, each time port becomes ready for
// master again after a change: re-attached (master changed, or detached
// then attached), restarted (down and up, carrier lost and back, or the
// bridge port left forwarding and returned), or deleted and re-created. A
// port must then stay ready for Options.Settle before the Change is sent, so
// a burst of changes (down/up/down/up within milliseconds) is one Change
// carrying all their causes. If the port is not ready when Watch is called,
// it is reported once it is.
//
// The channel closes when window ends, ctx ends or the Watcher closes. A
// reader that falls behind by more than a few Changes loses later ones; it
// has as many reasons to announce again already.
func (w *Watcher) Watch(ctx context.Context, port, master string, window time.Duration) <-chan Change {
	wa := &watch{port: port, master: master, ch: make(chan Change, changeBuffer)}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.watch(ctx, wa, window)
	return wa.ch
}

// WatchFunc is Watch with a function instead of a channel: fn is called
// with each Change, one at a time, and onEnd (if not nil) once the watch
// ended and fn returned for the last time. No goroutine waits meanwhile:
// fn runs in one started for the Changes at hand (a Watch's reader is a
// goroutine parked for the whole window, thousands after a landing storm).
func (w *Watcher) WatchFunc(ctx context.Context, port, master string, window time.Duration, fn func(Change), onEnd func()) {
	if onEnd == nil {
		onEnd = func() {}
	}
	wa := &watch{port: port, master: master, ch: make(chan Change, changeBuffer), fn: fn, onEnd: onEnd}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.watch(ctx, wa, window)
}

// watch starts wa. Called with w.mu held.
func (w *Watcher) watch(ctx context.Context, wa *watch, window time.Duration) {
	if w.isClosed() || window <= 0 || ctx.Err() != nil {
		w.close(wa)
		return
	}
	s, ok := w.state(wa.port)
	switch {
	case !ok:
		wa.causes = CauseRecreated
	default:
		wa.index, wa.masterIndex = s.Index, s.MasterIndex
		switch s.Missing(wa.master) {
		case None:
			wa.ready = true
		case Attached:
			wa.causes = CauseReattached
		default:
			wa.causes = CauseRestarted
		}
	}
	set := w.watches[wa.port]
	if set == nil {
		set = map[*watch]struct{}{}
		w.watches[wa.port] = set
	}
	set[wa] = struct{}{}
	end := func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.endWatch(wa)
	}
	wa.window = time.AfterFunc(window, end)
	wa.stopCtx = context.AfterFunc(ctx, end)
}

// close closes wa's channel; a WatchFunc's onEnd runs now unless fn is
// handling Changes (handle runs it after the last). Called with w.mu held.
func (w *Watcher) close(wa *watch) {
	close(wa.ch)
	if wa.fn != nil && !wa.handling {
		go wa.onEnd()
	}
}

// handle calls a WatchFunc's fn with each queued Change until none is
// left, then returns; after the watch's end it runs onEnd.
func (w *Watcher) handle(wa *watch) {
	for {
		w.mu.Lock()
		var c Change
		ok, closed := false, false
		select {
		case c, ok = <-wa.ch:
			closed = !ok
		default:
		}
		if !ok {
			wa.handling = false
		}
		w.mu.Unlock()
		switch {
		case closed:
			wa.onEnd()
			return
		case !ok:
			return
		}
		wa.fn(c)
	}
}

// check compares the port's current state with what wa saw last, adding
// extra to the causes. Called with w.mu held.
func (w *Watcher) check(wa *watch, s State, ok bool, extra Cause) {
	if wa.ended {
		return
	}
	before, wasReady := wa.causes, wa.ready
	wa.causes |= extra
	if !ok {
		if wa.index != 0 {
			wa.causes |= CauseRecreated
		}
		wa.index, wa.masterIndex, wa.ready = 0, 0, false
	} else {
		if wa.index != 0 && s.Index != wa.index {
			wa.causes |= CauseRecreated
		}
		if s.MasterIndex != wa.masterIndex {
			wa.causes |= CauseReattached
		}
		missing := s.Missing(wa.master)
		if missing == Up || missing == Forwarding {
			wa.causes |= CauseRestarted
		}
		wa.index, wa.masterIndex, wa.ready = s.Index, s.MasterIndex, missing == None
	}
	switch {
	case !wa.ready:
		w.stopSettle(wa)
	case wa.causes != 0 && (wa.causes != before || !wasReady || wa.settle == nil):
		w.startSettle(wa)
	}
}

func (w *Watcher) startSettle(wa *watch) {
	w.stopSettle(wa)
	gen := wa.settleGen
	wa.settle = time.AfterFunc(w.opts.Settle, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if wa.settleGen == gen {
			w.settled(wa)
		}
	})
}

func (w *Watcher) stopSettle(wa *watch) {
	wa.settleGen++
	if wa.settle != nil {
		wa.settle.Stop()
		wa.settle = nil
	}
}

// settled sends the Change once the port stayed ready. Called with w.mu
// held.
func (w *Watcher) settled(wa *watch) {
	wa.settle = nil
	s, ok := w.state(wa.port)
	if wa.ended || !ok || s.Missing(wa.master) != None || wa.causes == 0 {
		return
	}
	c := Change{Port: wa.port, Cause: wa.causes, State: s, At: time.Now()}
	wa.causes = 0
	w.m.changed(c.Cause)
	select {
	case wa.ch <- c:
		if wa.fn != nil && !wa.handling {
			wa.handling = true
			go w.handle(wa)
		}
	default:
		w.log.Debug("port change not delivered: reader behind", zap.String("port", wa.port), zap.Stringer("cause", c.Cause))
	}
}

// endWatch stops wa and closes its channel. Called with w.mu held.
func (w *Watcher) endWatch(wa *watch) {
	if wa.ended {
		return
	}
	wa.ended = true
	w.stopSettle(wa)
	wa.window.Stop()
	wa.stopCtx()
	set := w.watches[wa.port]
	delete(set, wa)
	if len(set) == 0 {
		delete(w.watches, wa.port)
	}
	w.close(wa)
}
