package announce

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

func TestPortSegmentsAndNames(t *testing.T) {
	for _, c := range []struct {
		p    Port
		name string
		seg  Segment
		err  bool
	}{
		{HostPort("br0"), "br0", Segment{KindHost, "br0"}, false},
		{OVSPort("vnet3", "br-int", 7), "ovs:br-int:7", Segment{KindOVS, "br-int"}, false},
		{OVSPort("vnet4", "odd:name", 65279), "ovs:odd:name:65279", Segment{KindOVS, "odd:name"}, false},
		{HostPort(""), "", Segment{KindHost, ""}, true},
		{OVSPort("vnet3", "", 7), "ovs::7", Segment{KindOVS, ""}, true},
		{OVSPort("vnet3", "br-int", 0), "ovs:br-int:0", Segment{KindOVS, "br-int"}, true},
		{Port{Kind: 9, Device: "x"}, "x", Segment{9, "x"}, true},
	} {
		if got := c.p.String(); got != c.name {
			t.Errorf("%+v: String() = %q, want %q", c.p, got, c.name)
		}
		if got := c.p.Segment(); got != c.seg {
			t.Errorf("%+v: Segment() = %+v, want %+v", c.p, got, c.seg)
		}
		if err := c.p.Validate(); (err != nil) != c.err {
			t.Errorf("%+v: Validate() = %v, want error %v", c.p, err, c.err)
		}
	}
	// Two ports of one OVS bridge share a segment (one pacer), not a key.
	a, b := OVSPort("vnet3", "br-int", 7), OVSPort("vnet4", "br-int", 8)
	if a.Segment() != b.Segment() || a == b {
		t.Error("ports of one bridge: want one segment, two ports")
	}
}

// An announcer without an opener for a kind fails its frames with
// ErrNoOpener, and its handle reports the first frame's error.
func TestFirstReportsTheFirstFrame(t *testing.T) {
	rec := &recorder{}
	a := New(Options{Open: rec.open})
	defer a.Close()
	h := mustAnnounce(t, a, Request{MAC: mac(1), Port: OVSPort("vnet3", "br-int", 7), Schedule: Schedule{Rounds: 1, Bursts: 1}})
	<-h.First()
	if !errors.Is(h.FirstErr(), ErrNoOpener) {
		t.Errorf("FirstErr() = %v, want ErrNoOpener", h.FirstErr())
	}
	h = mustAnnounce(t, a, Request{MAC: mac(1), Interface: "br0", Schedule: Schedule{Rounds: 1, Bursts: 1}})
	<-h.First()
	if h.FirstErr() != nil || len(rec.all()) != 1 {
		t.Errorf("FirstErr() = %v, %d frames; want nil, 1", h.FirstErr(), len(rec.all()))
	}
}

// Another frame (here a gratuitous ARP) for the same MAC, port and VLAN
// runs beside the RARPs instead of superseding them, and goes out as given.
func TestFrameKindsRunSideBySide(t *testing.T) {
	rec := &recorder{}
	a := New(Options{Open: rec.open})
	defer a.Close()
	garp := rarp.Frame{Destination: rarp.Broadcast, Source: mac(1), EtherType: rarp.EtherTypeARP, Operation: rarp.OpRequest,
		SenderHardware: mac(1), SenderIP: netip.MustParseAddr("192.0.2.10"), TargetIP: netip.MustParseAddr("192.0.2.10")}
	b, err := garp.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	s := Schedule{Rounds: 2, Initial: 20 * time.Millisecond, Max: time.Second, Bursts: 1}
	hr := mustAnnounce(t, a, Request{MAC: mac(1), Interface: "br0", Schedule: s})
	hg := mustAnnounce(t, a, Request{MAC: mac(1), Interface: "br0", Schedule: s, Kind: "garp", Frame: b})
	waitDone(t, hr, 2*time.Second)
	waitDone(t, hg, 2*time.Second)
	if hr.Superseded() || hr.Sent() != 2 || hg.Sent() != 2 || hg.Key().Kind != "garp" {
		t.Fatalf("rarp: sent %d superseded %v; garp: sent %d key %s", hr.Sent(), hr.Superseded(), hg.Sent(), hg.Key())
	}
	var arps, rarps int
	for _, f := range rec.all() {
		switch f.frame.EtherType {
		case rarp.EtherTypeARP:
			arps++
		case rarp.EtherTypeRARP:
			rarps++
		}
	}
	if arps != 2 || rarps != 2 {
		t.Errorf("%d ARP and %d RARP frames, want 2 and 2", arps, rarps)
	}
	// A frame needs its kind and a kind its frame.
	for _, r := range []Request{
		{MAC: mac(1), Interface: "br0", Schedule: s, Frame: b},
		{MAC: mac(1), Interface: "br0", Schedule: s, Kind: "garp"},
	} {
		if _, err := a.Announce(r); err == nil {
			t.Errorf("kind %q, frame %d bytes: accepted", r.Kind, len(r.Frame))
		}
	}
}
