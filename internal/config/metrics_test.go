package config

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestReloadMetrics(t *testing.T) {
	m := NewReloadMetrics()
	clock := time.Unix(1000, 0)
	m.now = func() time.Time { return clock }
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m)
	expect := func(want string) {
		t.Helper()
		if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
			"rarp_announce_config_last_reload_successful", "rarp_announce_config_reloads_total"); err != nil {
			t.Fatal(err)
		}
	}
	const head = `# HELP rarp_announce_config_last_reload_successful 1 if the last load of the configuration file (at start or on SIGHUP) succeeded, 0 if it was refused and the previous configuration is still in service.
# TYPE rarp_announce_config_last_reload_successful gauge
`
	const counters = `# HELP rarp_announce_config_reloads_total Configuration reloads (SIGHUP) by result: ok, error (refused: the previous configuration stays).
# TYPE rarp_announce_config_reloads_total counter
`
	// At start: loaded, both results present at 0.
	expect(head + "rarp_announce_config_last_reload_successful 1\n" + counters +
		"rarp_announce_config_reloads_total{result=\"error\"} 0\nrarp_announce_config_reloads_total{result=\"ok\"} 0\n")
	m.Observe(errors.New("c.yaml:2: schedule.rounds: 5.5 is not a whole number"))
	expect(head + "rarp_announce_config_last_reload_successful 0\n" + counters +
		"rarp_announce_config_reloads_total{result=\"error\"} 1\nrarp_announce_config_reloads_total{result=\"ok\"} 0\n")
	if got := testutil.ToFloat64(m.timestamp); got == 1000 {
		t.Fatal("a refused reload moved the success timestamp")
	}
	m.Observe(nil)
	expect(head + "rarp_announce_config_last_reload_successful 1\n" + counters +
		"rarp_announce_config_reloads_total{result=\"error\"} 1\nrarp_announce_config_reloads_total{result=\"ok\"} 1\n")
	if got := testutil.ToFloat64(m.timestamp); got != 1000 {
		t.Fatalf("success timestamp %v, want 1000", got)
	}
}
