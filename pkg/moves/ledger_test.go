package moves_test

import (
	"testing"
	"time"

	"github.com/rarp-announce/rarp-announce/pkg/moves"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

func TestLedger(t *testing.T) {
	a := rarp.MAC{0x52, 0x54, 0, 0, 0, 1}
	b := rarp.MAC{0x52, 0x54, 0, 0, 0, 2}
	t0 := time.Unix(1_000_000, 0)
	steps := []struct {
		mac       rarp.MAC
		at        time.Duration
		moves     int
		overLimit bool
	}{
		{a, 0, 1, false},
		{a, 20 * time.Second, 2, true}, // limit 2: the second landing within 60 s warns
		{b, 30 * time.Second, 1, false},
		{a, 70 * time.Second, 2, true},   // the first (0 s) left the window; 20 s and 70 s remain
		{a, 200 * time.Second, 1, false}, // all older than 60 s
		{b, 95 * time.Second, 1, false},  // out of order is fine: 30 s is older than 60 s before 95 s
	}
	l := moves.New(60*time.Second, 2)
	for i, s := range steps {
		v := l.Record(s.mac, t0.Add(s.at))
		if v.Moves != s.moves || v.OverLimit != s.overLimit {
			t.Errorf("step %d (%s at %v): %+v, want moves %d over %v", i, s.mac, s.at, v, s.moves, s.overLimit)
		}
	}
}

func TestLedgerDefaultsAreRFC7432(t *testing.T) {
	l := moves.New(0, 0)
	m := rarp.MAC{0x52, 0x54, 0, 0, 0, 1}
	t0 := time.Unix(0, 0)
	var v moves.Verdict
	for i := range 5 {
		v = l.Record(m, t0.Add(time.Duration(i)*40*time.Second)) // 0..160 s: within 180 s
	}
	if v.Moves != 5 || !v.OverLimit {
		t.Fatalf("5 landings in 160 s: %+v, want 5 and over the limit", v)
	}
}

// MACs seen once long ago do not stay in memory.
func TestLedgerForgetsOldMACs(t *testing.T) {
	l := moves.New(time.Minute, 5)
	t0 := time.Unix(0, 0)
	for i := range 1000 {
		l.Record(rarp.MAC{0x52, 0x54, 0, 0, byte(i >> 8), byte(i)}, t0)
	}
	l.Record(rarp.MAC{0x52, 0x54, 1, 0, 0, 0}, t0.Add(2*time.Minute))
	if n := l.Len(); n != 1 {
		t.Fatalf("Len = %d after the window passed, want 1", n)
	}
}
