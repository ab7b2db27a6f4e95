package ipannounce

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

func TestScheduleValidate(t *testing.T) {
	for _, s := range []Schedule{{Count: 0, Interval: time.Second * 2}, {Count: 2, Interval: time.Second}, {Count: 3, Interval: 50 * time.Millisecond}} {
		if s.Validate() == nil {
			t.Errorf("%+v accepted", s)
		}
	}
	for _, s := range []Schedule{DefaultSchedule, {Count: 1}, {Count: 5, Interval: 2 * time.Second}} {
		if err := s.Validate(); err != nil {
			t.Errorf("%+v: %v", s, err)
		}
	}
}

func TestSlotsSpacingUnderCap(t *testing.T) {
	t0 := time.Unix(1000, 0)
	frames, _ := Plan(vmMAC, rarp.VLAN{}, []netip.Addr{vm4, vm6}, nil, true) // 3 frames
	// A tight cap (4 frames/s = 250 ms gap) delays frames within a round;
	// repeats of one frame must still be >= 1.1 s apart.
	capper, err := NewUplinkCap(4)
	if err != nil {
		t.Fatal(err)
	}
	slots, err := DefaultSchedule.Slots(t0, frames, capper, "eth0")
	if err != nil {
		t.Fatal(err)
	}
	if len(slots) != 9 {
		t.Fatalf("%d slots", len(slots))
	}
	last := map[Kind]time.Time{}
	for i, s := range slots {
		if i > 0 && s.At.Sub(slots[i-1].At) < 250*time.Millisecond {
			t.Errorf("slot %d only %s after the previous on one uplink", i, s.At.Sub(slots[i-1].At))
		}
		if p, ok := last[s.Frame.Kind]; ok && s.At.Sub(p) < MinInterval {
			t.Errorf("%s repeated after %s", s.Frame.Kind, s.At.Sub(p))
		}
		last[s.Frame.Kind] = s.At
	}
	if got := slots[0].At; !got.Equal(t0) {
		t.Errorf("first frame at %s, want at once", got.Sub(t0))
	}
	// A second NIC planned afterwards on the same uplink, from the same
	// start, takes the free slots between the first NIC's, never the same.
	slots2, _ := DefaultSchedule.Slots(t0, frames[:1], capper, "eth0")
	for _, s2 := range slots2 {
		for _, s := range slots {
			if d := s2.At.Sub(s.At); d > -250*time.Millisecond && d < 250*time.Millisecond {
				t.Fatalf("second NIC's frame at +%s collides with +%s", s2.At.Sub(t0), s.At.Sub(t0))
			}
		}
	}
	// Another uplink is not delayed by this one.
	other, _ := DefaultSchedule.Slots(t0, frames[:1], capper, "eth1")
	if !other[0].At.Equal(t0) {
		t.Fatalf("eth1 delayed by eth0's cap: +%s", other[0].At.Sub(t0))
	}
	// Without a cap: rounds exactly Interval apart.
	plain, _ := Schedule{Count: 2, Interval: 2 * time.Second}.Slots(t0, frames[:1], nil, "")
	if plain[1].At.Sub(plain[0].At) != 2*time.Second {
		t.Fatalf("uncapped spacing %s", plain[1].At.Sub(plain[0].At))
	}
}

func TestUplinkCapRate(t *testing.T) {
	for _, r := range []float64{0, -1, 2e6} {
		if _, err := NewUplinkCap(r); err == nil {
			t.Errorf("rate %v accepted", r)
		}
	}
}

func TestSendErrorsAndCancel(t *testing.T) {
	var got [][]byte
	w := WriterFunc(func(b []byte) error { got = append(got, b); return nil })
	now := time.Now()
	slots := []Slot{
		{At: now, Frame: Frame{Kind: GARPRequest, MAC: vmMAC, IP: vm4}},
		{At: now, Frame: Frame{Kind: GARPRequest, MAC: vmMAC}}, // no IP: does not build
		{At: now, Frame: Frame{Kind: UnsolicitedNA, MAC: vmMAC, IP: vm6}},
	}
	sent, err := Send(context.Background(), w, slots)
	if sent != 2 || len(got) != 2 || err == nil || !strings.Contains(err.Error(), "garp_request invalid IP") {
		t.Fatalf("sent %d, wrote %d, err %v", sent, len(got), err)
	}
	// A repeat due at once still waits MinInterval after the first write;
	// a cancelled context ends the wait.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	sent, err = Send(ctx, w, []Slot{slots[0], slots[0]})
	if sent != 1 || !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > time.Second {
		t.Fatalf("sent %d err %v after %s", sent, err, time.Since(start))
	}
}
