// Package announce sends RARP announces: for a MAC on an interface, the
// frames of a Schedule, paced per interface so that hundreds of VMs landing
// at once never become a broadcast storm.
//
// The path of one announce: Announcer.Announce validates a Request and
// starts a run (one goroutine) that sleeps from slot to slot of the
// Schedule and queues each frame on the interface's link; the link's worker
// (one goroutine per interface) takes first frames before repeats, waits
// for a pacing token, and writes through the interface's Sender.
package announce

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/rarp-announce/rarp-announce/pkg/rarp"
	"github.com/rarp-announce/rarp-announce/pkg/wait"
)

// Key identifies a running announce: at most one runs per key, and a new
// request for a key supersedes the old one instead of doubling the burst.
type Key struct {
	MAC  rarp.MAC
	Port Port
	VLAN uint16
	// Kind keeps announces of other frames (GARP, NA) for the same MAC,
	// port and VLAN from superseding the RARPs.
	Kind FrameKind
}

func (k Key) String() string {
	s := fmt.Sprintf("%s@%s", k.MAC, k.Port)
	if k.VLAN != 0 {
		s += fmt.Sprintf(".%d", k.VLAN)
	}
	if k.Kind != FrameRARP {
		s += "/" + string(k.Kind)
	}
	return s
}

// FrameKind names what an announce sends.
type FrameKind string

// FrameRARP is the RARP announce of Request.MAC, the default.
const FrameRARP FrameKind = ""

// Request asks for one announce.
type Request struct {
	MAC rarp.MAC
	// Port is where the frames go; zero: the host netdev Interface.
	Port      Port
	Interface string
	VLAN      rarp.VLAN // zero: untagged
	Schedule  Schedule
	// Since is when the need arose (the libvirt event); the delay from it
	// to the first frame is observed in the lag histogram. Zero: the call.
	Since time.Time
	// Reason is a short word for logs: "landed", "manual", "port-changed".
	Reason string
	// Kind and Frame send another frame than the RARP announce of MAC
	// (a GARP, an unsolicited NA): Frame is sent as is (tagged by its
	// builder if VLAN is set), on the same port, schedule and pacing;
	// Kind, which it needs, keys it apart from the RARPs.
	Kind  FrameKind
	Frame []byte
}

// Key returns the running-set key of r.
func (r Request) Key() Key { return Key{MAC: r.MAC, Port: r.port(), VLAN: r.VLAN.ID, Kind: r.Kind} }

// port is r.Port, or the host port Interface names.
func (r Request) port() Port {
	if r.Port == (Port{}) {
		return HostPort(r.Interface)
	}
	return r.Port
}

// Sent reports one frame, sent or failed; Options.OnFrame receives it.
type Sent struct {
	Time time.Time
	Port Port
	// Interface is Port.String(): the device of a host port.
	Interface string
	MAC       rarp.MAC
	VLAN      rarp.VLAN
	Slot      Slot // zero for a refresh frame
	Refresh   bool
	Reason    string
	// Lag is the delay since Request.Since (or the call) for the first
	// frame of an announce; zero for the others.
	Lag time.Duration
	Err error
}

// Pacing limits frames per interface: a token bucket of Burst tokens
// refilled at PerSecond. Frames over the limit wait in order (first frames
// of an announce ahead of repeats); none is dropped.
type Pacing struct {
	PerSecond float64 // <= 0: unlimited
	Burst     int
}

// DefaultPacing allows 1,000 frames of burst and 4,000 frames per second per
// interface: 1,000 VMs landing in one second get their first frame within
// tens of milliseconds while the repeats spread out behind them, and a
// segment never sees more than 4,000 broadcast frames a second from one
// host (under 2 Mbit/s).
func DefaultPacing() Pacing { return Pacing{PerSecond: 4000, Burst: 1000} }

// Options configure an Announcer.
type Options struct {
	// Open opens the Sender of a host port's interface. Default: OpenPacket.
	Open Opener
	// OpenPort, if set, opens the Sender of every other port (an OVS
	// port: ovs.Switch.Opener); unset, those fail with ErrNoOpener.
	OpenPort PortOpener
	Pacing   Pacing
	// Metrics, if set, counts what the announcer does.
	Metrics *Metrics
	Logger  *zap.Logger
	// OnFrame, if set, is called after every frame, from the interface's
	// worker goroutine: it must not block.
	OnFrame func(Sent)
	// LinkIdle is how long an interface's socket stays open unused.
	LinkIdle time.Duration
}

// Announcer runs announces. It is safe for concurrent use.
type Announcer struct {
	opts    Options
	log     *zap.Logger
	m       *Metrics
	closing chan struct{}

	mu      sync.Mutex
	closed  bool
	running map[Key]*Handle
	links   map[Port]*link
	pacers  map[Segment]*segmentPacer // one per segment, while a link uses it
	runs    sync.WaitGroup            // announces not yet ended
	workers sync.WaitGroup            // the links' workers and the timeline's loop
	tl      timeline
	// firsts counts first frames queued on any link: while some wait,
	// links hold their repeats back (see link.pop).
	firsts atomic.Int64
	// refreshOff suspends refresh frames (PauseRefresh).
	refreshOff atomic.Bool
	sendErrs   sendErrors
}

// PauseRefresh suspends (true) or resumes (false) the refresh frames of
// every announce: the ticks that come meanwhile send nothing, the finite
// bursts go on. The agent suspends them while libvirt is unreachable, when
// it cannot tell whether a VM still runs here (an HA controller may have
// rebuilt it elsewhere), and resumes them once the resync cancelled the
// announces of the domains that are gone.
func (a *Announcer) PauseRefresh(paused bool) { a.refreshOff.Store(paused) }

// New returns an Announcer; Close stops it.
func New(opts Options) *Announcer {
	if opts.Open == nil {
		opts.Open = OpenPacket
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics(nil) // counted, not exported
	}
	// From here on OpenPort opens every port: host ones through Open.
	open, other := opts.Open, opts.OpenPort
	opts.OpenPort = func(p Port) (Sender, error) {
		switch {
		case p.Kind == KindHost:
			return open(p.Device)
		case other != nil:
			return other(p)
		}
		return nil, fmt.Errorf("port %s: %w", p, ErrNoOpener)
	}
	if opts.LinkIdle <= 0 {
		opts.LinkIdle = time.Minute
	}
	a := &Announcer{
		opts:     opts,
		log:      opts.Logger,
		m:        opts.Metrics,
		closing:  make(chan struct{}),
		running:  map[Key]*Handle{},
		links:    map[Port]*link{},
		sendErrs: newSendErrors(),
		pacers:   map[Segment]*segmentPacer{},
	}
	a.tl = timeline{a: a, wake: make(chan struct{}, 1)}
	return a
}

// Errors from Announce.
var (
	ErrClosed         = errors.New("announcer is closed")
	ErrEmptyInterface = errors.New("interface name is empty")
)

// Handle follows one announce.
type Handle struct {
	key    Key
	req    Request
	frame  []byte
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	start  time.Time

	// pending is the timeline's hold on the announce (1 until its schedule
	// ends or it is cancelled) plus its frames queued on the link and not
	// yet sent or skipped; the announce ends when it falls to 0 (release).
	pending atomic.Int64
	// The timeline's state, owned by whoever holds the announce: the
	// caller of timeline.advance, or the heap (under timeline.mu).
	slots     []Slot
	next      int         // index in slots of the next frame; len(slots): refreshing
	refreshAt time.Time   // next refresh tick, once the slots are queued
	due       int64       // when it leaves the heap (monoNanos)
	hidx      int         // index in the heap, -1 outside it
	stopWatch func() bool // stops timeline.cancelled from running once the announce ended

	sent, failed atomic.Int64
	first        atomic.Bool
	firstOnce    sync.Once
	firstDone    chan struct{} // closed when the first frame was sent, failed or skipped
	firstErr     error
	firstAt      time.Time // when firstDone closed
	errOnce      sync.Once
	err          error
	superseded   atomic.Bool
}

// Key is the announce's key.
func (h *Handle) Key() Key { return h.key }

// Done is closed when every frame of the schedule was sent or failed, or
// the announce was cancelled or superseded. With Refresh it only closes on
// cancel.
func (h *Handle) Done() <-chan struct{} { return h.done }

// Cancel stops the announce; frames already queued are skipped.
func (h *Handle) Cancel() { h.cancel() }

// Sent and Failed count frames.
func (h *Handle) Sent() int   { return int(h.sent.Load()) }
func (h *Handle) Failed() int { return int(h.failed.Load()) }

// Err is the first send error, if any.
func (h *Handle) Err() error {
	select {
	case <-h.done:
	default:
		return nil
	}
	return h.err
}

// First is closed once the announce's first frame was sent or failed, or
// the announce ended without sending it (cancelled, superseded, closed).
func (h *Handle) First() <-chan struct{} { return h.firstDone }

// FirstErr is, once First is closed, the first frame's error: nil if it
// was sent, ErrCancelled if it never went out.
func (h *Handle) FirstErr() error {
	select {
	case <-h.firstDone:
		return h.firstErr
	default:
		return nil
	}
}

// ErrCancelled is FirstErr of an announce that ended before its first frame.
var ErrCancelled = errors.New("announce ended before its first frame")

func (h *Handle) firstOutcome(err error) {
	h.firstOnce.Do(func() {
		h.firstErr = err
		h.firstAt = time.Now()
		close(h.firstDone)
	})
}

// FirstSent is, once First is closed, when the first frame went out (or
// failed, or was skipped); the zero time before.
func (h *Handle) FirstSent() time.Time {
	select {
	case <-h.firstDone:
		return h.firstAt
	default:
		return time.Time{}
	}
}

// Superseded reports whether a newer request for the same key replaced it.
func (h *Handle) Superseded() bool { return h.superseded.Load() }

// Validate checks a request as Announce does.
func (r Request) Validate() error {
	if err := r.port().Validate(); err != nil {
		return err
	}
	if err := r.MAC.ValidateUnicast(); err != nil {
		return err
	}
	if r.VLAN.Tagged() {
		if err := r.VLAN.Validate(); err != nil {
			return err
		}
	} else if r.VLAN.Priority != 0 || r.VLAN.DropEligible {
		return errors.New("vlan: priority or DEI set without a VLAN ID")
	}
	if (r.Frame != nil) != (r.Kind != FrameRARP) {
		return errors.New("frame: a frame other than the RARP announce needs its kind, and a kind its frame")
	}
	return r.Schedule.Validate()
}

// Announce starts r, superseding a running announce with the same key.
// If r's link is idle its first frame goes out before Announce returns,
// in the caller's goroutine (First is then done); otherwise it waits in
// the link's queue.
func (a *Announcer) Announce(r Request) (*Handle, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	frame := r.Frame
	if frame == nil {
		f := rarp.Announce(r.MAC, r.VLAN)
		var err error
		if frame, err = f.MarshalBinary(); err != nil {
			return nil, err
		}
	}
	now := time.Now()
	if r.Since.IsZero() {
		r.Since = now
	}
	r.Port = r.port()
	r.Interface = r.Port.String()
	ctx, cancel := context.WithCancel(context.Background())
	h := &Handle{key: r.Key(), req: r, frame: frame, ctx: ctx, cancel: cancel,
		done: make(chan struct{}), firstDone: make(chan struct{}), start: now}

	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		cancel()
		return nil, ErrClosed
	}
	if old := a.running[h.key]; old != nil {
		old.superseded.Store(true)
		old.cancel()
		a.m.superseded()
	}
	a.running[h.key] = h
	a.runs.Add(1)
	h.pending.Store(1) // the timeline's hold
	a.mu.Unlock()

	a.m.started()
	a.log.Debug("announce started", zap.Stringer("key", h.key), zap.String("reason", r.Reason))
	a.tl.start(h)
	return h, nil
}

// Cancel stops the announce running for k, if any.
func (a *Announcer) Cancel(k Key) bool {
	a.mu.Lock()
	h := a.running[k]
	a.mu.Unlock()
	if h == nil {
		return false
	}
	h.cancel()
	a.m.cancelled()
	return true
}

// CancelMAC stops every announce of mac (on any interface and VLAN), for
// example when its domain stops; it returns how many it stopped.
func (a *Announcer) CancelMAC(mac rarp.MAC) int {
	a.mu.Lock()
	var hs []*Handle
	for k, h := range a.running {
		if k.MAC == mac {
			hs = append(hs, h)
		}
	}
	a.mu.Unlock()
	for _, h := range hs {
		h.cancel()
		a.m.cancelled()
	}
	return len(hs)
}

// Running is how many announces are in progress.
func (a *Announcer) Running() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.running)
}

// Close cancels every announce, waits for them and closes the sockets.
func (a *Announcer) Close() error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil
	}
	a.closed = true
	for _, h := range a.running {
		h.cancel()
	}
	a.mu.Unlock()
	a.runs.Wait()
	close(a.closing)
	a.workers.Wait()
	return nil
}

// release drops one hold on h (see Handle.pending); the last one ends the
// announce.
func (a *Announcer) release(h *Handle) {
	if h.pending.Add(-1) != 0 {
		return
	}
	a.mu.Lock()
	if a.running[h.key] == h {
		delete(a.running, h.key)
	}
	a.mu.Unlock()
	h.stopWatch()
	h.cancel()
	h.firstOutcome(ErrCancelled)
	close(h.done)
	a.m.finished()
	a.runs.Done()
}

// enqueue queues one frame of h, which the caller holds (its hold keeps
// h running until the frame is counted in). A first frame on a host port
// may go out at once in the caller's goroutine (link.trySend): a kernel
// socket's send takes microseconds and never blocks. An OVS port's never
// does: its injection is a round trip to ovs-vswitchd, bounded only by
// the switch's frame timeout (1 s), which would hold up the caller (and
// the lock OVSPorts.Announce holds around it) and ignore its context.
func (a *Announcer) enqueue(h *Handle, it item) {
	h.pending.Add(1)
	if it.first && h.req.Port.Kind == KindHost {
		a.mu.Lock()
		l := a.linkFor(h.req.Port)
		a.mu.Unlock()
		if l.trySend(it) {
			return
		}
	}
	a.mu.Lock()
	a.linkFor(h.req.Port).push(it) // anew: the link may have retired meanwhile
	a.mu.Unlock()
	a.m.queuedAdd(1)
}

// linkFor returns port's link, starting it if there is none; the caller
// holds a.mu.
func (a *Announcer) linkFor(port Port) *link {
	l := a.links[port]
	if l == nil {
		l = newLink(a, port)
		a.links[port] = l
		a.workers.Add(1)
		go l.work()
	}
	return l
}

// Warm opens port's socket now, ahead of a first frame expected within
// milliseconds (an uplink that just failed over, while the agent checks
// with libvirt which domains still run), instead of at that frame. The
// link then lives as any other: closed after LinkIdle unused.
func (a *Announcer) Warm(port Port) {
	a.mu.Lock()
	defer a.mu.Unlock()
	select {
	case <-a.closing:
		return
	default:
	}
	l := a.linkFor(port)
	l.mu.Lock()
	l.warm = true
	l.mu.Unlock()
	wait.Wake(l.wake)
}

// finish records the outcome of one frame.
func (a *Announcer) finish(it item, at time.Time, err error) {
	h := it.h
	var lag time.Duration
	if err != nil {
		h.failed.Add(1)
		h.errOnce.Do(func() { h.err = err })
		a.m.failure(err)
		if h.req.port().Kind == KindHost { // the ovs announcer logs its own
			a.sendErrs.note(a.log, h.req, err, at)
		}
	} else {
		h.sent.Add(1)
		a.m.sent()
		if h.first.CompareAndSwap(false, true) {
			lag = at.Sub(h.req.Since)
			a.m.lag(lag)
		}
	}
	if a.opts.OnFrame != nil {
		a.opts.OnFrame(Sent{
			Time: at, Port: h.req.Port, Interface: h.req.Interface, MAC: h.req.MAC, VLAN: h.req.VLAN,
			Slot: it.slot, Refresh: it.refresh, Reason: h.req.Reason, Lag: lag, Err: err,
		})
	}
	// After OnFrame: whoever waits on First sees what OnFrame did with the
	// frame (the OVS announcer counts its failures there).
	if it.first {
		h.firstOutcome(err)
	}
	a.release(h)
}

// skip drops a queued frame of a cancelled announce.
func (a *Announcer) skip(it item) {
	a.m.skipped()
	if it.first {
		it.h.firstOutcome(ErrCancelled)
	}
	a.release(it.h)
}
