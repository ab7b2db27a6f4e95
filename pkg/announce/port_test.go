package announce

import (
	"errors"
	"testing"
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
	h, err := a.Announce(Request{MAC: mac(1), Port: OVSPort("vnet3", "br-int", 7), Schedule: Schedule{Rounds: 1, Bursts: 1}})
	if err != nil {
		t.Fatal(err)
	}
	<-h.First()
	if !errors.Is(h.FirstErr(), ErrNoOpener) {
		t.Errorf("FirstErr() = %v, want ErrNoOpener", h.FirstErr())
	}
	h, err = a.Announce(Request{MAC: mac(1), Interface: "br0", Schedule: Schedule{Rounds: 1, Bursts: 1}})
	if err != nil {
		t.Fatal(err)
	}
	<-h.First()
	if h.FirstErr() != nil || len(rec.all()) != 1 {
		t.Errorf("FirstErr() = %v, %d frames; want nil, 1", h.FirstErr(), len(rec.all()))
	}
}
