package ipannounce

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// MinInterval is the shortest spacing between two repeats of one address's
// frame: Linux ignores a neighbour update within locktime (1 s) of the
// last, so QEMU's 50 ms spacing wastes every GARP after the first.
// MetalLB uses the same 1.1 s.
const MinInterval = 1100 * time.Millisecond

// Schedule is how often each frame of a NIC goes out: Count rounds,
// Interval apart (the first at once).
type Schedule struct {
	Count    int
	Interval time.Duration
}

// DefaultSchedule: three rounds 1.1 s apart, so a receiver that missed or
// locked out the first still updates within about 2.2 s.
var DefaultSchedule = Schedule{Count: 3, Interval: MinInterval}

// Validate checks Count >= 1 and Interval >= MinInterval.
func (s Schedule) Validate() error {
	if s.Count < 1 {
		return fmt.Errorf("ipannounce: schedule count %d: want at least 1", s.Count)
	}
	if s.Count > 1 && s.Interval < MinInterval {
		return fmt.Errorf("ipannounce: schedule interval %s: want at least %s (Linux's neighbour locktime is 1 s)", s.Interval, MinInterval)
	}
	return nil
}

// Slot is one frame and when to send it.
type Slot struct {
	At    time.Time
	Frame Frame
}

// Slots lays out frames (one NIC's, all on uplink) from start: round r
// of frame i is due at start + r*Interval but never earlier than Interval
// after the same frame's previous send, and the cap may push it later.
// The result is in send order.
func (s Schedule) Slots(start time.Time, frames []Frame, cap *UplinkCap, uplink string) ([]Slot, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	out := make([]Slot, 0, s.Count*len(frames))
	last := make([]time.Time, len(frames))
	for r := range s.Count {
		due := start.Add(time.Duration(r) * s.Interval)
		for i, f := range frames {
			at := due
			if r > 0 && at.Before(last[i].Add(s.Interval)) {
				at = last[i].Add(s.Interval)
			}
			if cap != nil {
				at = cap.Reserve(uplink, at)
			}
			last[i] = at
			out = append(out, Slot{At: at, Frame: f})
		}
	}
	slices.SortStableFunc(out, func(a, b Slot) int { return a.At.Compare(b.At) })
	return out, nil
}

// UplinkCap spaces IP-layer frames on one uplink at least Gap apart,
// separately from RARPs: a switch polices ARP/ND in its control plane
// (typically a few hundred packets per second shared by everything), and a
// burst after a host evacuation would be dropped there. Safe for concurrent
// use; slots may be reserved in any time order.
type UplinkCap struct {
	gap  time.Duration
	mu   sync.Mutex
	used map[string][]time.Time // sorted reserved send times per uplink
}

// ErrRate reports a cap that is not a positive rate.
var ErrRate = errors.New("ipannounce: uplink cap must be a positive number of frames per second")

// NewUplinkCap allows perSecond frames per second per uplink.
func NewUplinkCap(perSecond float64) (*UplinkCap, error) {
	if !(perSecond > 0) || perSecond > 1e6 {
		return nil, fmt.Errorf("%w: %v", ErrRate, perSecond)
	}
	return &UplinkCap{gap: time.Duration(float64(time.Second) / perSecond), used: map[string][]time.Time{}}, nil
}

// capHorizon is how long a reservation is remembered before the time
// asked for: a NIC's whole schedule is planned at once (a few seconds
// ahead), so another NIC planned later may ask for times up to one
// schedule earlier than the last reservation.
const capHorizon = 30 * time.Second

// Reserve returns the earliest time at or after want that is at least the
// gap away from every other frame reserved on uplink, and reserves it.
// Reservations more than capHorizon older than want are forgotten.
func (c *UplinkCap) Reserve(uplink string, want time.Time) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	used := c.used[uplink]
	cut := 0
	for cut < len(used) && used[cut].Before(want.Add(-capHorizon)) {
		cut++
	}
	used = used[cut:]
	at := want
	for _, u := range used {
		if !u.After(at.Add(-c.gap)) {
			continue // ends before at
		}
		if !u.Before(at.Add(c.gap)) {
			break // starts after at's gap: at fits
		}
		at = u.Add(c.gap)
	}
	i, _ := slices.BinarySearchFunc(used, at, func(a, b time.Time) int { return a.Compare(b) })
	c.used[uplink] = slices.Insert(used, i, at)
	return at
}

// Writer sends one complete Ethernet frame: a packet socket on the uplink,
// an OpenFlow packet-out from the VM's port, whatever path the NIC's RARPs
// take.
type Writer interface {
	WriteFrame(frame []byte) error
}

// WriterFunc adapts a function to Writer.
type WriterFunc func(frame []byte) error

// WriteFrame calls f.
func (f WriterFunc) WriteFrame(frame []byte) error { return f(frame) }

// Send builds and writes slots (in the order Slots returns them) at their
// times, until ctx ends. A frame that does not build or write is counted in
// err and the rest still go; sent counts frames written. Whatever the slots
// say, a frame is never written again within MinInterval of its previous
// write: a late first write must not shorten the gap a receiver sees.
func Send(ctx context.Context, w Writer, slots []Slot) (sent int, err error) {
	var errs []error
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	lastWrite := map[Frame]time.Time{}
	for _, s := range slots {
		at := s.At
		if p, ok := lastWrite[s.Frame]; ok && at.Before(p.Add(MinInterval)) {
			at = p.Add(MinInterval)
		}
		if d := time.Until(at); d > 0 {
			timer.Reset(d)
			select {
			case <-ctx.Done():
				return sent, errors.Join(append(errs, ctx.Err())...)
			case <-timer.C:
			}
		}
		b, berr := s.Frame.Build()
		if berr == nil {
			berr = w.WriteFrame(b)
		}
		if berr != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w", s.Frame.Kind, s.Frame.IP, berr))
			continue
		}
		lastWrite[s.Frame] = time.Now()
		sent++
	}
	return sent, errors.Join(errs...)
}
