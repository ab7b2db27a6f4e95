// Package record is the agent's account of one migration as this host saw
// it: on the destination the landing (event, port ready, FDB repaired,
// first frame, when the fabric delivered the VM's traffic here again), on
// the source the departure (and the traffic still arriving for the VM after
// it left). One Record per migration is logged as one JSON line and may be
// posted to a webhook, so an operator can answer "did the network follow,
// and how fast" per VM without correlating logs across hosts.
package record

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"
)

// Kind says which side of a migration a Record describes.
type Kind string

const (
	Landing   Kind = "landing"   // the VM arrived on this host
	Departure Kind = "departure" // the VM left this host
)

// Record is one migration seen from this host. Times are absolute (UTC);
// the durations are from Received, the libvirt event that started it.
type Record struct {
	Kind     Kind      `json:"kind"`
	Domain   string    `json:"domain"`
	UUID     string    `json:"uuid"`
	Host     string    `json:"host,omitempty"`
	Event    string    `json:"event"`    // e.g. resumed/migrated
	Trigger  string    `json:"trigger"`  // landing, resync, manual, uplink-failover, restore
	Received time.Time `json:"received"` // when the event reached the agent
	NICs     []NIC     `json:"nics"`
	// Moves is the number of landings of the busiest MAC within the
	// move ledger's window, this one included (landing records).
	Moves int `json:"moves,omitempty"`
}

// NIC is what happened to one NIC of the domain.
type NIC struct {
	MAC      string `json:"mac"`
	Strategy string `json:"strategy"`
	Result   string `json:"result"`
	// Offsets from Received, in seconds; omitted when the step did not
	// happen (no FDB repair planned, no frame sent, nothing delivered).
	PortReady   *Seconds `json:"port_ready,omitempty"`
	FDBRepaired *Seconds `json:"fdb_repaired,omitempty"`
	FirstFrame  *Seconds `json:"first_frame,omitempty"`
	// Reconverged is when the first unicast frame for the MAC arrived on
	// the uplink after the landing; Silent is set when none came within
	// the watch window (a VM nobody talks to is not a failure).
	Reconverged *Seconds `json:"reconverged,omitempty"`
	Silent      bool     `json:"silent,omitempty"`
	Frames      int      `json:"frames"`
	// StaleDeliveries counts unicast frames for the MAC that still
	// arrived on this host's uplink after it left (departure records).
	StaleDeliveries int `json:"stale_deliveries,omitempty"`
}

// Seconds is a duration written as a JSON number of seconds.
type Seconds float64

// Since returns t - from as *Seconds, or nil for a zero t.
func Since(from, t time.Time) *Seconds {
	if t.IsZero() {
		return nil
	}
	s := Seconds(t.Sub(from).Seconds())
	return &s
}

// Webhook posts records as JSON to a URL, one request each, from its own
// goroutine: the agent never waits for the receiver. When the queue is full
// (the receiver is slow or down) a record is dropped and counted, never
// blocking a landing.
type Webhook struct {
	url     string
	client  *http.Client
	queue   chan Record
	dropped atomic.Uint64
	failed  atomic.Uint64
}

// NewWebhook returns a Webhook for url with a per-request timeout and a
// queue of depth records.
func NewWebhook(url string, timeout time.Duration, depth int) *Webhook {
	if depth < 1 {
		depth = 1
	}
	return &Webhook{url: url, client: &http.Client{Timeout: timeout}, queue: make(chan Record, depth)}
}

// Post queues r; it reports false (and counts a drop) when the queue is full.
func (w *Webhook) Post(r Record) bool {
	select {
	case w.queue <- r:
		return true
	default:
		w.dropped.Add(1)
		return false
	}
}

// Dropped is the number of records dropped because the queue was full;
// Failed the number the receiver did not accept (error or non-2xx).
func (w *Webhook) Dropped() uint64 { return w.dropped.Load() }
func (w *Webhook) Failed() uint64  { return w.failed.Load() }

// Run posts queued records until ctx ends.
func (w *Webhook) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-w.queue:
			if err := w.post(ctx, r); err != nil {
				w.failed.Add(1)
			}
		}
	}
}

func (w *Webhook) post(ctx context.Context, r Record) error {
	body, err := json.Marshal(r)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := w.client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook %s: %s", w.url, resp.Status)
	}
	return nil
}
