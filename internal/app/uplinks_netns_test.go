package app

import (
	"maps"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/pkg/metricset"
	"github.com/rarp-announce/rarp-announce/pkg/uplink"
)

// The watcher's suppressed events reach the scrape under their own labels:
// flaps of a bridge's uplink within one hold-down are counted as
// held_down, and the uplink left down when the hold-down ends as
// uplink_down, the same numbers the watcher counted.
func TestUplinkEventsSuppressedExported(t *testing.T) {
	netnstest.Require(t)
	ns := netnstest.Uplinked(t, "wstat", "br0", false, "uplink0", "down0")
	var r *uplink.Resolver
	if err := ns.Do(func() (err error) { r, err = uplink.Open(uplink.Options{}); return err }); err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	w := r.Watch(uplink.WatchConfig{HoldDown: 500 * time.Millisecond})
	defer w.Close()
	w.WatchBridge("br0")
	reg := prometheus.NewRegistry()
	metricset.Register(reg, watchStats{w})
	for range 4 {
		ns.Exec(t, "ip", "link", "set", "uplink0", "down")
		ns.Exec(t, "ip", "link", "set", "uplink0", "up")
		time.Sleep(30 * time.Millisecond)
	}
	ns.Exec(t, "ip", "link", "set", "uplink0", "down") // and so it stays
	drain := time.After(1500 * time.Millisecond)
	for done := false; !done; {
		select {
		case <-w.Events():
		case <-drain:
			done = true
		}
	}
	st := w.Stats()
	if st.HeldDown == 0 || st.DownAtEnd == 0 || st.LAGQuiet != 0 {
		t.Fatalf("four flaps within a hold-down, then down: %+v; want some held down, some down at the end, no LAG", st)
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range fams {
		if f.GetName() != "rarp_announce_uplink_events_suppressed_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			got[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
		}
	}
	want := map[string]float64{"held_down": float64(st.HeldDown), "lag_leg": float64(st.LAGQuiet), "uplink_down": float64(st.DownAtEnd)}
	if !maps.Equal(got, want) {
		t.Fatalf("scraped %v, the watcher counted %v", got, want)
	}
}
