package throttle

import (
	"testing"
	"time"
)

func TestKeyed(t *testing.T) {
	q := Keyed[string]{Every: 10 * time.Second}
	t0 := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	for _, c := range []struct {
		key        string
		at         time.Duration
		ok         bool
		suppressed int
	}{
		{"eth0", 0, true, 0},
		{"eth0", time.Second, false, 0},
		{"eth0", 9 * time.Second, false, 0},
		{"eth1", 9 * time.Second, true, 0},  // keys are independent
		{"eth0", 10 * time.Second, true, 2}, // a period later, with the two held back
		{"eth0", 11 * time.Second, false, 0},
		{"eth0", 25 * time.Second, true, 1},
	} {
		if n, ok := q.Allow(c.key, at(c.at)); ok != c.ok || n != c.suppressed {
			t.Fatalf("Allow(%s, +%v) = %d, %v; want %d, %v", c.key, c.at, n, ok, c.suppressed, c.ok)
		}
	}
	// eth1 went quiet for more than six periods: forgotten at the next
	// event that goes out.
	if _, ok := q.Allow("eth0", at(90*time.Second)); !ok || q.Len() != 1 {
		t.Fatalf("after eth1 went quiet: %d keys kept, want 1", q.Len())
	}
}
