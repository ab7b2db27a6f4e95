package libvirtwatch

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// The lifecycle event family exists, at 0, before the first event: the
// dashboard's events panel and any alert on resumed/migrated see a 0, not
// an absent series.
func TestEventSeriesExistFromTheStart(t *testing.T) {
	m := NewMetrics(nil)
	if got := testutil.ToFloat64(m.events.WithLabelValues("resumed", "migrated")); got != 0 {
		t.Fatalf("resumed/migrated = %v", got)
	}
	n := 0
	for _, d := range detailNames {
		n += len(d)
	}
	if got := testutil.CollectAndCount(m.events, "rarp_announce_libvirt_events_total"); got != n || n < 40 {
		t.Fatalf("%d event series before any event, want every known event and detail (%d)", got, n)
	}
}
