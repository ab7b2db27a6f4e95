package agent

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/rarp-announce/rarp-announce/pkg/plan"
)

func TestMoveCapSpreadsWithoutDropping(t *testing.T) {
	base := time.Unix(1000, 0)
	cases := []struct {
		name  string
		cap   int
		times []time.Duration // requests, from base
		want  []time.Duration // admissions, from base
	}{
		{"under the cap: at once", 3, []time.Duration{0, 0, 0}, []time.Duration{0, 0, 0}},
		{"over the cap: the next period", 2, []time.Duration{0, 0, 0, 0, 0}, []time.Duration{0, 0, time.Minute, time.Minute, 2 * time.Minute}},
		{"the window rolls", 2, []time.Duration{0, 30 * time.Second, 70 * time.Second}, []time.Duration{0, 30 * time.Second, 70 * time.Second}},
		{"a late one waits for the oldest to leave", 2, []time.Duration{0, 30 * time.Second, 40 * time.Second}, []time.Duration{0, 30 * time.Second, time.Minute}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := &MoveCap{PerPeriod: c.cap}
			for i, at := range c.times {
				if got := m.reserve("br0", base.Add(at)).Sub(base); got != c.want[i] {
					t.Errorf("request %d at %v: admitted at %v, want %v", i, at, got, c.want[i])
				}
			}
			// another segment is not affected
			if got := m.reserve("br1", base); !got.Equal(base) {
				t.Errorf("br1 admitted at %v", got.Sub(base))
			}
		})
	}
}

func TestMoveCapWaits(t *testing.T) {
	m := &MoveCap{PerPeriod: 1, Period: 150 * time.Millisecond}
	tg := plan.Target{Master: "br0"}
	start := time.Now()
	for range 3 {
		if err := m.Wait(context.Background(), tg); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("three moves with a cap of one per 150 ms took %v", d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := m.Wait(ctx, tg); err == nil {
		t.Error("a cancelled landing still waited its turn")
	}
	if err := (*MoveCap)(nil).Wait(context.Background(), tg); err != nil {
		t.Error(err)
	}
}

// A landing that ends while it waits for its slot gives the slot back: the
// next NIC does not wait behind a move that never happened.
func TestMoveCapReleasesAnUnusedSlot(t *testing.T) {
	base := time.Unix(1000, 0)
	m := &MoveCap{PerPeriod: 1}
	if got := m.reserve("br0", base); !got.Equal(base) {
		t.Fatalf("first admitted at %v", got.Sub(base))
	}
	left := m.reserve("br0", base)
	if want := base.Add(time.Minute); !left.Equal(want) {
		t.Fatalf("second admitted at %v, want 1m", left.Sub(base))
	}
	m.release("br0", left)
	if got := m.reserve("br0", base.Add(time.Second)).Sub(base); got != time.Minute {
		t.Errorf("after the second left, the third was admitted at %v, want 1m (its slot)", got)
	}
}

// Through Wait: the cancelled landing's slot is released.
func TestMoveCapWaitReleasesOnCancel(t *testing.T) {
	m := &MoveCap{PerPeriod: 1, Period: time.Hour}
	tg := plan.Target{Master: "br0"}
	if err := m.Wait(context.Background(), tg); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := m.Wait(ctx, tg); err == nil {
		t.Fatal("a landing over the cap did not wait")
	}
	m.mu.Lock()
	n := len(m.slots["br0"])
	m.mu.Unlock()
	if n != 1 {
		t.Errorf("%d slots booked after the cancelled landing, want 1 (the admitted one)", n)
	}
}

// Whatever the order of reservations and released slots (landings
// cancelled while they wait), no window of Period ever holds more than
// PerPeriod admissions, and each slot is at or after its request. A
// released slot in the middle used to leave the booked slots out of
// order, and the cap was broken: in the reviewed sequence, three
// admissions within 5 s with a cap of 2 a minute.
func TestMoveCapHoldsAcrossReleases(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	check := func(t *testing.T, c *MoveCap, what string) {
		t.Helper()
		ts := c.slots["br0"]
		if !slices.IsSortedFunc(ts, time.Time.Compare) {
			t.Fatalf("%s: slots out of order: %v", what, ts)
		}
		for _, end := range ts {
			n := 0
			for _, s := range ts {
				if s.After(end.Add(-c.Period)) && !s.After(end) {
					n++
				}
			}
			if n > c.PerPeriod {
				t.Fatalf("%s: %d admissions in the %v before %v, cap %d: %v", what, n, c.Period, end.Sub(t0), c.PerPeriod, ts)
			}
		}
	}
	t.Run("reviewed sequence", func(t *testing.T) {
		c := &MoveCap{PerPeriod: 2, Period: time.Minute}
		for _, d := range []time.Duration{1, 6, 8, 21, 39} {
			c.reserve("br0", at(d*time.Second))
		}
		c.release("br0", at(66*time.Second))
		c.release("br0", at(61*time.Second))
		for _, d := range []time.Duration{56, 57, 63} {
			c.reserve("br0", at(d*time.Second))
		}
		c.release("br0", at(181*time.Second))
		if got := c.reserve("br0", at(77*time.Second)); got.Before(at(77 * time.Second)) {
			t.Fatalf("slot %v before its request", got.Sub(t0))
		}
		check(t, c, "after the sequence")
	})
	t.Run("random", func(t *testing.T) {
		r := rand.New(rand.NewPCG(1, 2))
		for run := range 200 {
			c := &MoveCap{PerPeriod: 1 + r.IntN(4), Period: time.Minute}
			now := t0
			var booked []time.Time
			for step := range 40 {
				now = now.Add(time.Duration(r.IntN(20)) * time.Second)
				if len(booked) > 0 && r.IntN(3) == 0 {
					i := r.IntN(len(booked))
					c.release("br0", booked[i])
					booked = slices.Delete(booked, i, i+1)
				} else {
					got := c.reserve("br0", now)
					if got.Before(now) {
						t.Fatalf("run %d step %d: slot %v before its request %v", run, step, got.Sub(t0), now.Sub(t0))
					}
					booked = append(booked, got)
				}
				check(t, c, fmt.Sprintf("run %d step %d", run, step))
			}
		}
	})
}
