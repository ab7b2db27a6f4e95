package announce

import (
	"container/heap"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// TestRefreshTicksPauseAndCancel follows one announce with a refresh
// through the timeline: its burst, ticks every Refresh, none while paused,
// ticks again once resumed, and a cancel while it waits in the heap for a
// tick a second away ends it at once.
func TestRefreshTicksPauseAndCancel(t *testing.T) {
	rec := &recorder{}
	a := New(Options{Open: rec.open})
	defer a.Close()
	s := Schedule{Initial: 100 * ms, Max: 100 * ms, Rounds: 2, Bursts: 1, Refresh: MinRefresh}
	start := time.Now()
	h := mustAnnounce(t, a, Request{MAC: mac(1), Interface: "br0", Schedule: s})
	// The burst (0, 100 ms), then ticks from 100 ms on: 1.1 s and 2.1 s.
	time.Sleep(2500 * ms)
	got := rec.all()
	if len(got) != 4 {
		t.Fatalf("%d frames after 2.5 s, want 2 of the burst and 2 refresh ticks", len(got))
	}
	for i, want := range []time.Duration{0, 100 * ms, 1100 * ms, 2100 * ms} {
		if at := got[i].at.Sub(start); at < want || at > want+300*ms {
			t.Errorf("frame %d at %v, want %v", i, at, want)
		}
	}
	a.PauseRefresh(true)
	time.Sleep(1200 * ms) // the tick at 3.1 s sends nothing
	if n := len(rec.all()); n != 4 {
		t.Fatalf("%d frames while refresh was paused, want 4", n)
	}
	a.PauseRefresh(false)
	time.Sleep(1000 * ms) // the tick at 4.1 s sends
	if n := len(rec.all()); n != 5 {
		t.Fatalf("%d frames after resuming, want 5", n)
	}
	select {
	case <-h.Done():
		t.Fatal("a refreshing announce ended on its own")
	default:
	}
	cancelled := time.Now()
	h.Cancel()
	waitDone(t, h, 200*ms)
	if d := time.Since(cancelled); d > 100*ms {
		t.Errorf("cancel took %v to end an announce waiting for its tick", d)
	}
	if a.Running() != 0 {
		t.Fatalf("%d still running", a.Running())
	}
}

// TestManyAnnouncesShareOneLoop lands 2,000 announces on 4 interfaces at
// once, as the storm does: every frame of every schedule goes out, none
// before its slot, in slot order per announce, and the announcer does it
// without a goroutine per announce (the way before: 2,000 goroutines).
func TestManyAnnouncesShareOneLoop(t *testing.T) {
	rec := &recorder{}
	a := New(Options{Open: rec.open})
	defer a.Close()
	base := runtime.NumGoroutine()
	s := DefaultSchedule()
	offsets := s.Burst()
	var hs []*Handle
	starts := map[rarp.MAC]time.Time{}
	for i := range 2000 {
		m := rarp.MAC{0x52, 0x54, 0, 0, byte(i >> 8), byte(i)}
		starts[m] = time.Now()
		h := mustAnnounce(t, a, Request{MAC: m, Interface: fmt.Sprintf("br%d", i%4), Schedule: s})
		hs = append(hs, h)
	}
	if n := runtime.NumGoroutine() - base; n > 20 {
		t.Errorf("%d goroutines for 2,000 announces, want the loop and a worker per interface", n)
	}
	for _, h := range hs {
		waitDone(t, h, 10*time.Second)
		if h.Sent() != len(offsets) || h.Failed() != 0 {
			t.Fatalf("%s: %d sent, %d failed", h.Key(), h.Sent(), h.Failed())
		}
	}
	seen := map[rarp.MAC]int{}
	for _, f := range rec.all() {
		m := f.frame.Source
		i := seen[m]
		seen[m]++
		if i >= len(offsets) {
			t.Fatalf("%s: more than %d frames", m, len(offsets))
		}
		if at := f.at.Sub(starts[m]); at < offsets[i] {
			t.Errorf("%s: frame %d at %v, before its slot at %v", m, i, at, offsets[i])
		}
	}
	if len(seen) != 2000 {
		t.Fatalf("frames from %d MACs, want 2000", len(seen))
	}
	if a.Running() != 0 {
		t.Fatalf("%d still running", a.Running())
	}
}

// TestDueHeapOrder pushes announces due in a shuffled order, removes some
// (a cancel), and pops the rest: they come out by due time, each one's
// index kept right, none lost.
func TestDueHeapOrder(t *testing.T) {
	const n = 500
	var q dueHeap
	hs := make([]*Handle, n)
	for i := range n {
		hs[i] = &Handle{due: int64((i * 7919) % n)} // a permutation of 0..n-1
		heap.Push(&q, hs[i])
	}
	for i := 0; i < n; i += 10 {
		h := hs[i]
		if q[h.hidx].h != h {
			t.Fatalf("hidx of the handle due at %d is %d, where the heap holds another", h.due, h.hidx)
		}
		heap.Remove(&q, h.hidx)
		if h.hidx != -1 {
			t.Fatalf("removed handle's hidx = %d, want -1", h.hidx)
		}
	}
	last, popped := int64(-1), 0
	for q.Len() > 0 {
		h := heap.Pop(&q).(*Handle)
		if h.due < last {
			t.Fatalf("popped due %d after %d", h.due, last)
		}
		last = h.due
		popped++
	}
	if popped != n-n/10 {
		t.Fatalf("popped %d, want %d", popped, n-n/10)
	}
}

// BenchmarkDueHeap is a frame's turn through the timeline's heap with
// 2,000 announces waiting (a storm): pop the earliest, push it back due
// later. Side by side with the way before (variant "from-handle"): the
// heap held only pointers and each comparison read both due times from
// their Handles, scattered in memory as the agent allocates them.
func BenchmarkDueHeap(b *testing.B) {
	const n = 2000
	scatter := func() []*Handle {
		var garbage [][]byte
		hs := make([]*Handle, n)
		for i := range hs {
			hs[i] = &Handle{}
			garbage = append(garbage, make([]byte, 4096)) // what the agent allocates between two landings
		}
		runtime.KeepAlive(garbage)
		return hs
	}
	b.Run("inline", func(b *testing.B) {
		hs := scatter()
		var q dueHeap
		for i, h := range hs {
			h.due = int64(i*7919%n) * int64(time.Millisecond)
			heap.Push(&q, h)
		}
		for b.Loop() {
			h := heap.Pop(&q).(*Handle)
			h.due += int64(800 * time.Millisecond)
			heap.Push(&q, h)
		}
	})
	b.Run("from-handle", func(b *testing.B) {
		hs := scatter()
		var q fromHandleHeap
		t0 := time.Now()
		for i, h := range hs {
			h.refreshAt = t0.Add(time.Duration(i*7919%n) * time.Millisecond)
			heap.Push(&q, h)
		}
		for b.Loop() {
			h := heap.Pop(&q).(*Handle)
			h.refreshAt = h.refreshAt.Add(800 * time.Millisecond)
			heap.Push(&q, h)
		}
	})
}

// fromHandleHeap is dueHeap as it was: pointers only, the due time read
// from each Handle (here from refreshAt, a time.Time as due was).
type fromHandleHeap []*Handle

func (q fromHandleHeap) Len() int           { return len(q) }
func (q fromHandleHeap) Less(i, j int) bool { return q[i].refreshAt.Before(q[j].refreshAt) }
func (q fromHandleHeap) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].hidx = i
	q[j].hidx = j
}
func (q *fromHandleHeap) Push(x any) {
	h := x.(*Handle)
	h.hidx = len(*q)
	*q = append(*q, h)
}
func (q *fromHandleHeap) Pop() any {
	old := *q
	h := old[len(old)-1]
	old[len(old)-1] = nil
	h.hidx = -1
	*q = old[:len(old)-1]
	return h
}
