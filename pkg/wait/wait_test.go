package wait

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

func TestBackoffNext(t *testing.T) {
	for _, tc := range []struct {
		name     string
		min, max time.Duration
		want     []time.Duration
	}{
		{"doubles to the cap", 50 * time.Millisecond, 300 * time.Millisecond,
			[]time.Duration{50e6, 100e6, 200e6, 300e6, 300e6}},
		{"cap a power of two away", time.Second, 4 * time.Second,
			[]time.Duration{1e9, 2e9, 4e9, 4e9}},
		{"max below min", time.Second, time.Millisecond,
			[]time.Duration{1e9, 1e9, 1e9}},
		{"zero value", 0, 0, []time.Duration{0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := Backoff{Min: tc.min, Max: tc.max}
			for i, want := range tc.want {
				if got := b.Next(); got != want {
					t.Fatalf("wait %d = %v, want %v", i+1, got, want)
				}
			}
		})
	}
}

func TestBackoffReset(t *testing.T) {
	b := Backoff{Min: time.Second, Max: time.Minute}
	b.Next()
	b.Next()
	b.Reset()
	if got := b.Next(); got != time.Second {
		t.Fatalf("after Reset: %v, want 1s", got)
	}
}

func TestSleep(t *testing.T) {
	open := make(chan struct{})
	closed := make(chan struct{})
	close(closed)

	start := time.Now()
	if !Sleep(open, 20*time.Millisecond) {
		t.Fatal("Sleep on an open stop reported it closed")
	}
	if d := time.Since(start); d < 20*time.Millisecond {
		t.Fatalf("Sleep(20ms) returned after %v", d)
	}
	start = time.Now()
	if Sleep(closed, time.Hour) {
		t.Fatal("Sleep on a closed stop ran its course")
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("a closed stop took %v to end the sleep", d)
	}
	if !Sleep(open, 0) || !Sleep(open, -time.Second) {
		t.Fatal("a wait of zero or less on an open stop reported it closed")
	}
	if Sleep(closed, 0) {
		t.Fatal("a wait of zero on a closed stop did not report it")
	}

	stop := make(chan struct{})
	go func() { time.Sleep(10 * time.Millisecond); close(stop) }()
	if Sleep(stop, time.Hour) {
		t.Fatal("closing stop during the sleep did not end it")
	}
}

func TestEvery(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var calls atomic.Int32
	done := make(chan struct{})
	go func() {
		defer close(done)
		Every(ctx, 5*time.Millisecond, func(c context.Context) {
			if c != ctx {
				t.Error("f was not given Every's context")
			}
			if calls.Add(1) == 3 {
				cancel()
			}
		})
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Every did not return after its context ended")
	}
	if n := calls.Load(); n != 3 {
		t.Fatalf("f called %d times, want 3 (the third cancels)", n)
	}
}

func TestClosed(t *testing.T) {
	ch := make(chan struct{})
	if Closed(ch) {
		t.Fatal("Closed on an open channel reported true")
	}
	close(ch)
	if !Closed(ch) {
		t.Fatal("Closed on a closed channel reported false")
	}
}

func TestWakeNeverBlocks(t *testing.T) {
	ch := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		Wake(ch)
		Wake(ch) // the first is still pending: this one must not block
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Wake blocked on a channel with a wake-up pending")
	}
	if len(ch) != 1 {
		t.Fatalf("%d wake-ups pending, want 1", len(ch))
	}
	<-ch
	Wake(ch)
	if len(ch) != 1 {
		t.Fatal("Wake on an empty channel sent nothing")
	}
}
