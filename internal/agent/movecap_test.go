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
