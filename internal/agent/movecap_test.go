package agent

import (
	"context"
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
