package record_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/rarp-announce/rarp-announce/internal/record"
)

func TestRecordJSON(t *testing.T) {
	t0 := time.Date(2026, 12, 4, 17, 0, 0, 0, time.UTC)
	r := record.Record{
		Kind: record.Landing, Domain: "vm1", UUID: "u", Event: "resumed/migrated", Trigger: "landing", Received: t0,
		NICs: []record.NIC{{
			MAC: "52:54:00:aa:bb:cc", Strategy: "host", Result: "started",
			PortReady: record.Since(t0, t0), FDBRepaired: record.Since(t0, t0.Add(time.Millisecond)),
			FirstFrame: record.Since(t0, t0.Add(2*time.Millisecond)), Reconverged: record.Since(t0, t0.Add(40*time.Millisecond)),
			Frames: 5,
		}},
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	nic := m["nics"].([]any)[0].(map[string]any)
	for k, want := range map[string]float64{"port_ready": 0, "fdb_repaired": 0.001, "first_frame": 0.002, "reconverged": 0.04, "frames": 5} {
		if got, ok := nic[k].(float64); !ok || got != want {
			t.Errorf("%s = %v, want %v (JSON %s)", k, nic[k], want, b)
		}
	}
	if _, ok := nic["silent"]; ok {
		t.Errorf("silent present for a reconverged NIC: %s", b)
	}
	if record.Since(t0, time.Time{}) != nil {
		t.Error("Since of a zero time is not nil")
	}
}

func TestWebhookPostsAndNeverBlocks(t *testing.T) {
	got := make(chan record.Record, 10)
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
		b, _ := io.ReadAll(r.Body)
		var rec record.Record
		if err := json.Unmarshal(b, &rec); err != nil || r.Header.Get("Content-Type") != "application/json" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		got <- rec
	}))
	defer srv.Close()
	wh := record.NewWebhook(srv.URL, 5*time.Second, 2)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go wh.Run(ctx)

	// The receiver is stuck: one record in flight, two queued, the rest
	// dropped, and Post returns at once every time.
	start := time.Now()
	accepted := 0
	for i := range 10 {
		if wh.Post(record.Record{Kind: record.Landing, Domain: "vm", UUID: string(rune('a' + i))}) {
			accepted++
		}
		time.Sleep(5 * time.Millisecond) // let Run take the first one
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Post blocked: 10 posts took %v", d)
	}
	if accepted != 3 || wh.Dropped() != 7 {
		t.Fatalf("accepted %d, dropped %d; want 3 and 7 (1 in flight + queue of 2)", accepted, wh.Dropped())
	}
	close(release)
	for range 3 {
		select {
		case r := <-got:
			if r.Domain != "vm" {
				t.Errorf("posted %+v", r)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a queued record was never posted")
		}
	}
	if wh.Failed() != 0 {
		t.Errorf("failed = %d", wh.Failed())
	}
}
