package agent

import (
	"context"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/rarp-announce/rarp-announce/internal/record"
	"github.com/rarp-announce/rarp-announce/pkg/announce"
	"github.com/rarp-announce/rarp-announce/pkg/domxml"
	"github.com/rarp-announce/rarp-announce/pkg/libvirtwatch"
	"github.com/rarp-announce/rarp-announce/pkg/plan"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

type nullSender struct{}

func (nullSender) Send([]byte) error { return nil }
func (nullSender) Close() error      { return nil }

// A landing record written when its watch ran the whole window (the
// record's wait for first frames has then run out too) still has the NIC's
// first frame. It lost it about half the time: select picked the expired
// deadline over the first frame, both ready.
func TestRecordKeepsTheFirstFrameAtTheWindowsEnd(t *testing.T) {
	ann := announce.New(announce.Options{Open: func(string) (announce.Sender, error) { return nullSender{}, nil }})
	defer ann.Close()
	mac := rarp.MAC{0x52, 0x54, 0, 0, 0, 1}
	h, err := ann.Announce(announce.Request{MAC: mac, Interface: "br0", Schedule: announce.Schedule{Rounds: 1, Bursts: 1}})
	if err != nil {
		t.Fatal(err)
	}
	<-h.Done()
	core, logs := observer.New(zap.InfoLevel)
	c := &convergence{ctx: context.Background(), r: &Reconv{Window: time.Second}, log: zap.New(core),
		ev: libvirtwatch.Event{Received: time.Now().Add(-time.Minute)}} // the deadline has passed
	results := []NICResult{{Target: plan.Target{NIC: domxml.Interface{MAC: mac}, Strategy: plan.Host}, Result: ResultStarted, Handles: []*announce.Handle{h}}}
	for i := range 40 {
		c.record(results, nil)
		recs := logs.TakeAll()
		if len(recs) != 1 {
			t.Fatalf("%d log lines, want the record", len(recs))
		}
		rec, ok := recs[0].ContextMap()["record"].(record.Record)
		if !ok {
			t.Fatalf("record field %T", recs[0].ContextMap()["record"])
		}
		if len(rec.NICs) != 1 || rec.NICs[0].FirstFrame == nil {
			t.Fatalf("record %d of 40 has no first_frame: %+v", i+1, rec)
		}
	}
}
