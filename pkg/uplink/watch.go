package uplink

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rarp-announce/rarp-announce/pkg/enumname"
)

// Reason is why switches must be told again where VMs are. Its String is a
// stable metric label.
type Reason uint8

const (
	// BondFailover: an active-backup (or tlb/alb) bond changed its active
	// leg (IFLA_EVENT_BONDING_FAILOVER, or a new active slave): the switch
	// still has the VMs' MACs on the old leg's port.
	BondFailover Reason = iota + 1
	// CarrierUp: the uplink got carrier back after losing it: the switch
	// flushed the MACs it had learned on that port.
	CarrierUp
	// PortAdded: an uplink (re)joined a watched bridge.
	PortAdded
)

var reasonNames = enumname.Table[Reason]{
	BondFailover: "bond_failover",
	CarrierUp:    "carrier_up",
	PortAdded:    "port_added",
}

func (r Reason) String() string { return reasonNames.Name(r, "reason(%d)") }

// Reasons lists every Reason, for pre-declaring metric label values.
var Reasons = reasonNames.Values()

// Event tells that the VM NICs behind Uplink need announcing again, out of
// Uplink.
type Event struct {
	Uplink Port   // the watched uplink: a bridge's uplink port or a watched device
	Device Port   // where it happened: Uplink, or a device below it (the bond under bond0.100)
	Reason Reason // of the last event when several were coalesced
	At     time.Time
	// Coalesced counts the events the hold-down folded into this one.
	Coalesced int
}

func (e Event) String() string {
	s := fmt.Sprintf("%s on %s", e.Reason, e.Uplink.Name)
	if e.Device.Index != e.Uplink.Index {
		s += " (via " + e.Device.Name + ")"
	}
	if e.Coalesced > 0 {
		s += fmt.Sprintf(", %d more held down", e.Coalesced)
	}
	return s
}

// WatchConfig configures a Watcher.
type WatchConfig struct {
	// HoldDown is the shortest time between two events for one uplink
	// (default 1 s). The first event goes out at once; events during the
	// hold-down are folded into one sent when it ends, the last one's
	// reason winning, unless the uplink is down by then (its carrier
	// coming back will be an event of its own).
	HoldDown time.Duration
	// Buffer is the capacity of the Events channel (default 64).
	Buffer int
}

// WatchStats counts what a Watcher did, for metrics.
type WatchStats struct {
	Sent      [PortAdded + 1]uint64 // by Reason
	HeldDown  uint64                // events folded into a later one or dropped by the hold-down
	LAGQuiet  uint64                // leg changes of LAG bonds (802.3ad etc.) not reported
	DownAtEnd uint64                // events dropped because the uplink was down when they came or when their hold-down ended
}

// Watcher reports events on the uplinks that carry VM NICs: the uplink
// ports of watched bridges (following port changes) and watched devices
// (a macvtap's lower device, an Open vSwitch bridge's physical ports).
type Watcher struct {
	r    *Resolver
	cfg  WatchConfig
	out  chan Event
	in   chan Event
	done chan struct{}
	wg   sync.WaitGroup
	stop func()

	mu      sync.Mutex
	bridges map[string]bool
	devices map[string]bool

	heldDown, lagQuiet, downAtEnd atomic.Uint64
	sent                          [PortAdded + 1]atomic.Uint64
	holdDown                      atomic.Int64 // cfg.HoldDown, changed by SetHoldDown
}

// Watch starts a Watcher over r's topology. Add what to watch with
// WatchBridge and WatchDevice; read Events until Close.
func (r *Resolver) Watch(cfg WatchConfig) *Watcher {
	if cfg.HoldDown <= 0 {
		cfg.HoldDown = time.Second
	}
	if cfg.Buffer <= 0 {
		cfg.Buffer = 64
	}
	w := &Watcher{
		r: r, cfg: cfg,
		out: make(chan Event, cfg.Buffer), in: make(chan Event, 256), done: make(chan struct{}),
		bridges: map[string]bool{}, devices: map[string]bool{},
	}
	w.holdDown.Store(int64(cfg.HoldDown))
	w.stop = r.subscribe(w.changes)
	w.wg.Add(1)
	go w.run()
	return w
}

// WatchBridge watches the uplink ports of the named bridge, present and
// future.
func (w *Watcher) WatchBridge(name string) { w.set(w.bridges, name, true) }

// WatchDevice watches one device by name: a macvtap's lower device, or an
// Open vSwitch bridge's physical port.
func (w *Watcher) WatchDevice(name string) { w.set(w.devices, name, true) }

// Unwatch stops watching a bridge or device.
func (w *Watcher) Unwatch(name string) {
	w.set(w.bridges, name, false)
	w.set(w.devices, name, false)
}

func (w *Watcher) set(m map[string]bool, name string, on bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if on {
		m[name] = true
	} else {
		delete(m, name)
	}
}

// SetHoldDown changes the hold-down (a config reload); d <= 0 means the
// default, 1 s. A hold-down already running keeps its end; the next one
// takes d.
func (w *Watcher) SetHoldDown(d time.Duration) {
	if d <= 0 {
		d = time.Second
	}
	w.holdDown.Store(int64(d))
}

// Events delivers the events, at most one per uplink per hold-down.
func (w *Watcher) Events() <-chan Event { return w.out }

// Stats returns the counters so far.
func (w *Watcher) Stats() WatchStats {
	var s WatchStats
	for i := range s.Sent {
		s.Sent[i] = w.sent[i].Load()
	}
	s.HeldDown, s.LAGQuiet, s.DownAtEnd = w.heldDown.Load(), w.lagQuiet.Load(), w.downAtEnd.Load()
	return s
}

// Close stops the watcher and closes Events.
func (w *Watcher) Close() {
	select {
	case <-w.done:
		return
	default:
	}
	w.stop()
	close(w.done)
	w.wg.Wait()
	close(w.out)
}

// changes runs on the resolver's reader goroutine with the table already
// updated: it classifies each change and maps it to the watched uplinks it
// concerns.
func (w *Watcher) changes(cs []change) {
	now := time.Now()
	w.mu.Lock()
	bridges, devices := len(w.bridges), len(w.devices)
	w.mu.Unlock()
	if bridges+devices == 0 {
		return
	}
	w.r.mu.RLock()
	var evs []Event
	for _, c := range cs {
		cur, old := c.cur, c.old
		if cur == nil {
			continue
		}
		var reason Reason
		switch {
		case cur.Kind == "bond" && (c.event == unix.IFLA_EVENT_BONDING_FAILOVER ||
			old != nil && cur.BondActive != 0 && old.BondActive != cur.BondActive):
			if cur.BondMode.LAG() {
				if len(w.uplinksOver(cur)) > 0 { // a storage bond is not counted
					w.lagQuiet.Add(1)
				}
				continue
			}
			if old != nil && carrierCameUp(old, cur) {
				reason = CarrierUp // the whole bond came back
			} else {
				reason = BondFailover
			}
		case old != nil && carrierCameUp(old, cur):
			reason = CarrierUp
		case cur.Master != 0 && (old == nil || old.Master != cur.Master):
			br := w.r.t[cur.Master]
			if br == nil || br.Kind != "bridge" || !w.watchedBridge(br.Name) || w.r.opts.IsVMPort(cur) {
				continue
			}
			evs = append(evs, Event{Uplink: cur.Port, Device: cur.Port, Reason: PortAdded, At: now})
			continue
		default:
			continue
		}
		for _, up := range w.uplinksOver(cur) {
			evs = append(evs, Event{Uplink: up, Device: cur.Port, Reason: reason, At: now})
		}
	}
	w.r.mu.RUnlock()
	for _, e := range evs {
		select {
		case w.in <- e:
		case <-w.done:
			return
		}
	}
}

func (w *Watcher) watchedBridge(name string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.bridges[name]
}

// uplinksOver returns the watched uplinks that are dev or stacked on it
// (a VLAN sub-interface or macvtap over a bond). Called with r.mu held.
func (w *Watcher) uplinksOver(dev *Link) []Port {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []Port
	for _, l := range w.r.t {
		watched := w.devices[l.Name]
		if !watched && l.Master != 0 {
			if br := w.r.t[l.Master]; br != nil && br.Kind == "bridge" && w.bridges[br.Name] && !w.r.opts.IsVMPort(l) {
				watched = true
			}
		}
		if !watched {
			continue
		}
		// Follow the lower devices: l itself, its parent, ... (bounded:
		// the kernel forbids loops, a bad table must not hang us).
		for x, n := l, 0; x != nil && n < 8; x, n = w.r.t[x.Parent], n+1 {
			if x.Index == dev.Index {
				out = append(out, l.Port)
				break
			}
			if x.Parent == 0 {
				break
			}
		}
	}
	return out
}

// hold is one uplink's hold-down state.
type hold struct {
	until   time.Time
	pending *Event
	folded  int
}

func (w *Watcher) run() {
	defer w.wg.Done()
	holds := map[int]*hold{}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	arm := func() {
		var next time.Time
		for _, h := range holds {
			if h.pending != nil && (next.IsZero() || h.until.Before(next)) {
				next = h.until
			}
		}
		if !next.IsZero() {
			timer.Reset(time.Until(next))
		}
	}
	for {
		select {
		case <-w.done:
			timer.Stop()
			return
		case e := <-w.in:
			h := holds[e.Uplink.Index]
			now := time.Now()
			if h == nil || !now.Before(h.until) {
				if !w.up(e.Uplink.Index) {
					// Nothing can leave it yet (a whole bond's failover
					// notice comes before its carrier, a port added
					// while down): passing it on would start the
					// hold-down, and the carrier-up that makes the
					// uplink usable would wait a whole hold_down.
					w.downAtEnd.Add(1)
					continue
				}
				holds[e.Uplink.Index] = &hold{until: now.Add(time.Duration(w.holdDown.Load()))}
				if !w.emit(e) {
					return
				}
				continue
			}
			if h.pending != nil {
				w.heldDown.Add(1) // replaced: the last event wins
				h.folded++
			}
			h.pending = &e
			arm()
		case <-timer.C:
			now := time.Now()
			for idx, h := range holds {
				if now.Before(h.until) {
					continue
				}
				if h.pending == nil {
					delete(holds, idx)
					continue
				}
				e := *h.pending
				e.Coalesced = h.folded
				h.pending, h.folded = nil, 0
				if !w.up(e.Uplink.Index) {
					w.downAtEnd.Add(1)
					delete(holds, idx)
					continue
				}
				h.until = now.Add(time.Duration(w.holdDown.Load()))
				if !w.emit(e) {
					return
				}
			}
			arm()
		}
	}
}

func (w *Watcher) up(idx int) bool {
	w.r.mu.RLock()
	defer w.r.mu.RUnlock()
	l := w.r.t[idx]
	return l != nil && l.Up()
}

func (w *Watcher) emit(e Event) bool {
	select {
	case w.out <- e:
		w.sent[e.Reason].Add(1)
		return true
	case <-w.done:
		return false
	}
}

// carrierCameUp reports whether the link is up now after being down at some
// point since old: by the flags, or by the carrier-up counter for a flap
// shorter than the link watcher's delay.
func carrierCameUp(old, cur *Link) bool {
	if !cur.Up() {
		return false
	}
	return !old.Up() || cur.CarrierUps != old.CarrierUps
}
