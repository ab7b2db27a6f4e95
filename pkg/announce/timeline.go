package announce

import (
	"container/heap"
	"context"
	"sync"
	"time"

	"github.com/rarp-announce/rarp-announce/pkg/wait"
)

// timeline is the announcer's one timing loop: every running announce
// waits in one heap, ordered by when its next frame is due (a slot of its
// schedule, then its refresh ticks), and one goroutine moves each to its
// link's queue when that time comes. An announce whose first slot is due
// at once is queued by Announce itself, without waiting for the loop.
//
// Before it each announce had its own goroutine and timer: a storm of
// 2,000 landings with 5 slots each woke 10,000 timers and their goroutines
// one by one; now the loop wakes once for all the slots due together.
type timeline struct {
	a       *Announcer
	mu      sync.Mutex
	due     dueHeap
	started bool
	wake    chan struct{}
}

// start schedules h, which Announce just registered: its first slots go
// to the link now if they are due, the rest wait in the heap. From here on
// whoever holds h (the caller of advance, or the heap) releases the
// timeline's hold on it exactly once, when its schedule ends or it is
// cancelled.
func (t *timeline) start(h *Handle) {
	h.slots = h.req.Schedule.Slots()
	h.hidx = -1
	h.stopWatch = context.AfterFunc(h.ctx, func() { t.cancelled(h) })
	t.advance(h, time.Now())
}

// advance queues h's frames due by now and puts h back in the heap for
// its next one, or releases it once its schedule is done. The caller
// holds h: it is not in the heap.
func (t *timeline) advance(h *Handle, now time.Time) {
	a := t.a
	for h.next < len(h.slots) {
		s := h.slots[h.next]
		if at := h.start.Add(s.At); at.After(now) {
			t.schedule(h, at)
			return
		}
		if h.ctx.Err() != nil {
			a.release(h)
			return
		}
		a.enqueue(h, item{h: h, slot: s, first: h.next == 0})
		h.next++
	}
	every := h.req.Schedule.Refresh
	if every <= 0 {
		a.release(h)
		return
	}
	switch {
	case h.refreshAt.IsZero(): // the bursts are queued: ticks from now on
		h.refreshAt = now.Add(every)
	case !h.refreshAt.After(now):
		if !a.refreshOff.Load() && h.ctx.Err() == nil {
			a.enqueue(h, item{h: h, refresh: true})
		}
		// A late tick is not made up for, as a time.Ticker drops them.
		if h.refreshAt = h.refreshAt.Add(every); !h.refreshAt.After(now) {
			h.refreshAt = now.Add(every)
		}
	}
	t.schedule(h, h.refreshAt)
}

// schedule puts h in the heap, due at at, unless it was cancelled: then
// it releases h. The check is under t.mu, where cancelled looks for h, so
// one of the two releases it and only one.
func (t *timeline) schedule(h *Handle, at time.Time) {
	t.mu.Lock()
	if h.ctx.Err() != nil {
		t.mu.Unlock()
		t.a.release(h)
		return
	}
	h.due = monoNanos(at)
	heap.Push(&t.due, h)
	earliest := h.hidx == 0
	if !t.started {
		t.started = true
		t.a.workers.Add(1)
		go t.run()
	}
	t.mu.Unlock()
	if earliest {
		wait.Wake(t.wake)
	}
}

// cancelled runs once h's context is done: if h waits in the heap, it
// leaves and is released now instead of at its next slot (a refresh may be
// a minute away). If not, its holder sees the context and releases it.
func (t *timeline) cancelled(h *Handle) {
	t.mu.Lock()
	in := h.hidx >= 0
	if in {
		heap.Remove(&t.due, h.hidx)
	}
	t.mu.Unlock()
	if in {
		t.a.release(h)
	}
}

// run is the loop: it takes every announce due, advances each, and sleeps
// until timelineSlack after the next one is due, or an earlier one is
// scheduled.
func (t *timeline) run() {
	defer t.a.workers.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var due []*Handle
	for {
		now := time.Now()
		nowNs := monoNanos(now)
		t.mu.Lock()
		for len(t.due) > 0 && t.due[0].at <= nowNs {
			due = append(due, heap.Pop(&t.due).(*Handle))
		}
		wait := time.Duration(-1)
		if len(t.due) > 0 {
			wait = time.Duration(t.due[0].at - nowNs)
		}
		t.mu.Unlock()
		if len(due) > 0 {
			for i, h := range due {
				t.advance(h, now)
				due[i] = nil
			}
			due = due[:0]
			continue
		}
		if wait >= 0 {
			timer.Reset(wait + timelineSlack)
		} else {
			timer.Stop()
		}
		select {
		case <-t.wake:
		case <-timer.C:
		case <-t.a.closing:
			return
		}
	}
}

// timelineSlack is how long after the next frame is due the loop wakes
// for it, to take the frames due meanwhile with it: in a storm of 1,000
// landings (8,000 repeats in 2 s) a wake-up per frame was a wake-up of the
// loop and of a link's worker every 250 µs; with 2 ms of slack one takes
// about ten. A repeat up to 2 ms late is nothing to a schedule of 50-350 ms
// gaps; none goes early.
const timelineSlack = 2 * time.Millisecond

// dueHeap orders the waiting announces by when their next frame is due.
// Each entry carries its due time, so comparing two entries reads the
// heap's own array: with 2,000 announces waiting, a frame's pop and push
// make about 25 comparisons, and reading the time from each Handle was
// two cache misses apiece (2% of the agent's storm CPU in perf).
// BenchmarkDueHeap keeps that way as a variant.
type dueHeap []dueEntry

type dueEntry struct {
	at int64 // monoNanos of the Handle's due
	h  *Handle
}

var _ heap.Interface = (*dueHeap)(nil)

func (q dueHeap) Len() int           { return len(q) }
func (q dueHeap) Less(i, j int) bool { return q[i].at < q[j].at }
func (q dueHeap) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].h.hidx = i
	q[j].h.hidx = j
}

// Push takes a *Handle whose due is set.
func (q *dueHeap) Push(x any) {
	h := x.(*Handle)
	h.hidx = len(*q)
	*q = append(*q, dueEntry{at: h.due, h: h})
}

func (q *dueHeap) Pop() any {
	old := *q
	h := old[len(old)-1].h
	old[len(old)-1] = dueEntry{}
	h.hidx = -1
	*q = old[:len(old)-1]
	return h
}

// monoEpoch anchors monoNanos: a reading of the monotonic clock.
var monoEpoch = time.Now()

// monoNanos is t on the monotonic clock, in nanoseconds from monoEpoch
// (t must carry a monotonic reading: one from time.Now, or derived from
// one with Add).
func monoNanos(t time.Time) int64 { return int64(t.Sub(monoEpoch)) }
