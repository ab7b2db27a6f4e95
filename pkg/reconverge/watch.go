// Package reconverge tells whether the network followed a VM. It watches one
// interface for frames addressed to, or sent from, a set of MACs, and
// reports for each MAC when the first such frame arrived and how many did.
//
// Two questions, one mechanism:
//
//   - On the destination, after a landing: when did the fabric first deliver
//     a unicast frame for the VM's MAC through this host's uplink? The time
//     from RESUMED to that frame is the network's reconvergence (Direction To
//     on the uplink).
//   - On the source, after the domain left: are unicast frames for its MAC
//     still arriving here? Each one is a stale delivery, traffic the fabric
//     sends to a host the VM has left (Direction To on the uplink).
//   - On the destination, before a landing: does the VM's MAC already leave
//     this host through its uplink? Such a frame before RESUMED is a move
//     the fabric saw before the VM ran here (Direction Out on the uplink;
//     From on the tap, where a bridge's several uplinks forward the
//     frames of the VM still running on the source between them).
//
// The socket is an AF_PACKET socket behind a classic BPF filter that keeps
// only matching frames, so the kernel wakes the reader only for the frames
// that answer the question. To and From drop everything the host sends
// (PACKET_OUTGOING: the agent's own announces leave on the same uplink);
// Out keeps only that. It needs CAP_NET_RAW, like the announcer.
package reconverge

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/mdlayher/packet"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// Direction says which Ethernet address a frame must carry to count.
type Direction uint8

const (
	// To counts frames whose destination is one of the MACs: the fabric
	// delivering traffic for the VM through this interface.
	To Direction = iota
	// From counts frames whose source is one of the MACs: the VM (or
	// whoever uses its MAC) sending into this interface.
	From
	// Out counts frames whose source is one of the MACs that this host
	// sends out of the interface (PACKET_OUTGOING): on an uplink, what
	// the fabric learns the MAC from, whether a bridge forwarded it from
	// a tap or a macvtap's lower device sent it.
	Out
)

func (d Direction) String() string {
	switch d {
	case From:
		return "from"
	case Out:
		return "out"
	}
	return "to"
}

// macOffset is where the MAC a direction matches sits in the frame: the
// destination (To) or the source (From, Out).
func (d Direction) macOffset() uint32 {
	if d == To {
		return 0
	}
	return 6
}

// packetOutgoing is linux/if_packet.h PACKET_OUTGOING: a frame the host
// sends (the socket sees it on its way out).
const packetOutgoing = 4

// sideCheck is a filter's first two instructions: jump skipToDrop
// forward (to its drop) for a frame on the wrong side: one the host sends
// (To, From) or one it receives (Out).
func (d Direction) sideCheck(skipToDrop uint8) []bpf.Instruction {
	cond := bpf.JumpEqual
	if d == Out {
		cond = bpf.JumpNotEqual
	}
	return []bpf.Instruction{
		bpf.LoadExtension{Num: bpf.ExtType},
		bpf.JumpIf{Cond: cond, Val: packetOutgoing, SkipTrue: skipToDrop},
	}
}

// ownCheck is what an Out filter runs first: drop a frame that carries
// mark, the socket mark the agent's own announces are sent with
// (Shared.OwnMark, announce.Marked). In a landing storm every
// incoming domain's MACs are watched on its uplink while the agent
// announces the domains landing before it, and the bucket filter passes
// most of those frames (their MACs share buckets): each then woke the
// shared socket's reader for a frame it drops. BenchmarkStorm: the
// reader went from 3.9% of the agent's CPU to 0.1%;
// BenchmarkUplinkSendWhileWatched: 4.9 instead of 6.6 µs of CPU per own
// frame.
// Nothing for To and From, which drop every frame the host sends, nor
// without a mark. It comes first, so the jumps after it keep their
// offsets.
func (d Direction) ownCheck(mark uint32) []bpf.Instruction {
	if d != Out || mark == 0 {
		return nil
	}
	return []bpf.Instruction{
		bpf.LoadExtension{Num: bpf.ExtMark},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: mark, SkipTrue: 1},
		bpf.RetConstant{Val: 0},
	}
}

// MaxMACs is the most MACs one Watch filters on: classic BPF jumps forward
// at most 255 instructions, and each MAC costs four.
const MaxMACs = 60

// ErrTooManyMACs is returned by Open for more than MaxMACs MACs.
var ErrTooManyMACs = errors.New("too many MACs for one watch")

// Sighting is what a Watch saw of one MAC.
type Sighting struct {
	MAC    rarp.MAC
	First  time.Time // zero if no frame arrived
	Frames int
}

// Seen reports whether at least one frame arrived.
func (s Sighting) Seen() bool { return s.Frames > 0 }

// Watch reads one interface for frames of its MACs, through a socket of
// its own (Open) or one it shares with the other watches on the device
// (Shared.Open). Run is not safe for concurrent use; Close may be called
// from any goroutine to end a Run.
type Watch struct {
	c     *packet.Conn // its own socket (Open); nil when shared
	dir   Direction
	order []rarp.MAC
	// now is the clock; tests of the bookkeeping replace it.
	now func() time.Time

	mu      sync.Mutex // guards seen and missing (the shared reader writes them)
	seen    map[rarp.MAC]*Sighting
	missing int // MACs not seen yet

	// Shared (Shared.Open): the hub delivers frames; done closes with
	// the watch (err set if its socket failed).
	hub       *hub
	done      chan struct{}
	endOnce   sync.Once
	err       error
	closeOnce sync.Once

	// Start on a shared watch (guarded by mu): finish ends it, once;
	// untilAllSeen makes the last MAC seen end it; timer and stopCtx
	// are its deadline and context hooks, stopped by the end.
	finish       func(error)
	untilAllSeen bool
	finished     bool
	timer        *time.Timer
	stopCtx      func() bool
}

func newWatch(dir Direction, macs []rarp.MAC) *Watch {
	w := &Watch{dir: dir, seen: make(map[rarp.MAC]*Sighting, len(macs)), now: time.Now}
	for _, m := range macs {
		if _, dup := w.seen[m]; dup {
			continue
		}
		w.order = append(w.order, m)
		w.seen[m] = &Sighting{MAC: m}
	}
	w.missing = len(w.order)
	return w
}

// Open starts watching ifi. Frames are queued by the kernel from this call
// on, so open before the instant that matters (the landing, the departure)
// and Run afterwards loses nothing in between.
func Open(ifi *net.Interface, dir Direction, macs []rarp.MAC) (*Watch, error) {
	prog, err := Filter(dir, macs)
	if err != nil {
		return nil, err
	}
	c, err := listen(ifi, dir, prog)
	if err != nil {
		return nil, err
	}
	w := newWatch(dir, macs)
	w.c = c
	return w, nil
}

const ethPAll = 0x0003

// listen opens a watch socket on ifi with the filter prog: a watch's own
// (Open) or a device's shared one (Shared). ETH_P_ALL: the filter, not the
// protocol, decides; the kernel strips 802.1Q tags before packet sockets
// see the frame, so MAC offsets hold on tagged uplinks too.
func listen(ifi *net.Interface, dir Direction, prog []bpf.RawInstruction) (*packet.Conn, error) {
	c, err := packet.Listen(ifi, packet.Raw, ethPAll, &packet.Config{Filter: prog})
	if err != nil {
		return nil, fmt.Errorf("reconverge: watch %s: %w", ifi.Name, err)
	}
	if dir != Out {
		ignoreOutgoing(c)
	}
	return c, nil
}

// ignoreOutgoing asks the kernel not to hand c the frames the host sends
// (PACKET_IGNORE_OUTGOING, Linux 4.20+), which the filter drops anyway.
// Without it every frame leaving the interface runs through packet_rcv and
// the filter of every watch on it, in the sender's system call: in a
// landing storm, hundreds of watches open on each uplink turned each of
// the agent's own announces into hundreds of such runs (BenchmarkStorm:
// about a fifth of the agent's CPU). An older kernel refuses the option;
// the filter's PACKET_OUTGOING test still drops those frames there.
func ignoreOutgoing(c *packet.Conn) {
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1)
	})
}

// Run reads until ctx ends, until deadline, or (with untilAllSeen) until
// every MAC was seen at least once, then returns what it saw, one Sighting
// per MAC in the order Open got them. It returns an error only for a read
// failure other than the end of the watch.
func (w *Watch) Run(ctx context.Context, deadline time.Time, untilAllSeen bool) ([]Sighting, error) {
	if w.hub != nil {
		return w.runShared(ctx, deadline, untilAllSeen)
	}
	// The deadline first, then the hook that cuts it short: the other
	// way round a cancel that came first (or in between) was overwritten
	// by the deadline, and the watch ran to it (found in review).
	if err := w.c.SetReadDeadline(deadline); err != nil {
		return w.Sightings(), err
	}
	stop := context.AfterFunc(ctx, func() { _ = w.c.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	buf := make([]byte, 64) // the filter keeps only the Ethernet header
	for {
		if untilAllSeen && w.allSeen() {
			return w.Sightings(), nil
		}
		n, _, err := w.c.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, net.ErrClosed) || ctx.Err() != nil {
				return w.Sightings(), nil
			}
			return w.Sightings(), fmt.Errorf("reconverge: read: %w", err)
		}
		if n < 12 {
			continue
		}
		w.observe(buf[:n])
	}
}

// runShared is Run for a watch on a shared socket: the hub's reader
// counts the frames, Start ends the watch, Run waits for that.
func (w *Watch) runShared(ctx context.Context, deadline time.Time, untilAllSeen bool) ([]Sighting, error) {
	type result struct {
		ss  []Sighting
		err error
	}
	ch := make(chan result, 1)
	w.Start(ctx, deadline, untilAllSeen, func(ss []Sighting, err error) { ch <- result{ss, err} })
	r := <-ch
	return r.ss, r.err
}

// Start is Run without a goroutine waiting for the end: fn gets what Run
// would have returned, once, in a goroutine of its own, when the watch
// ends (the deadline, ctx, every MAC seen with untilAllSeen, its socket
// failed or closed). A watch on a shared socket (Shared.Open) then costs
// no goroutine while it waits (an agent after a landing storm holds
// thousands of watches for their windows); one with a socket of its own
// (Open) needs its reader, and Start runs Run in a goroutine for it.
func (w *Watch) Start(ctx context.Context, deadline time.Time, untilAllSeen bool, fn func([]Sighting, error)) {
	if w.hub == nil {
		go func() { fn(w.Run(ctx, deadline, untilAllSeen)) }()
		return
	}
	var once sync.Once
	finish := func(err error) {
		once.Do(func() {
			go func() {
				w.mu.Lock()
				w.finished = true
				t, stop := w.timer, w.stopCtx
				w.mu.Unlock()
				if t != nil {
					t.Stop()
				}
				if stop != nil {
					stop()
				}
				fn(w.Sightings(), err)
			}()
		})
	}
	w.mu.Lock()
	w.finish, w.untilAllSeen = finish, untilAllSeen
	all := w.missing == 0
	w.mu.Unlock()
	t := time.AfterFunc(time.Until(deadline), func() { finish(nil) })
	stop := context.AfterFunc(ctx, func() { finish(nil) })
	w.mu.Lock()
	if w.finished { // ended meanwhile: its goroutine read no hooks
		t.Stop()
		stop()
	}
	w.timer, w.stopCtx = t, stop
	w.mu.Unlock()
	if untilAllSeen && all {
		finish(nil)
	}
	select {
	case <-w.done: // ended before Start
		finish(w.err)
	default:
	}
}

// allSeen reports whether every MAC was seen at least once.
func (w *Watch) allSeen() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.missing == 0
}

// observe counts one frame read from the watch's own socket.
func (w *Watch) observe(frame []byte) {
	var m rarp.MAC
	off := w.dir.macOffset()
	copy(m[:], frame[off:off+6])
	w.deliver(m, w.now())
}

// deliver counts a frame of m read at now; a MAC not asked for (a filter
// race at Open, another MAC of a shared socket's bucket) is ignored.
func (w *Watch) deliver(m rarp.MAC, now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.seen[m]
	if s == nil {
		return
	}
	s.Frames++
	if s.Frames == 1 {
		s.First = now
		w.missing--
		if w.missing == 0 && w.untilAllSeen && w.finish != nil {
			w.finish(nil) // its goroutine reads the sightings
		}
	}
}

// end ends a shared watch's Run with err (its socket failed; nil: closed).
func (w *Watch) end(err error) {
	w.endOnce.Do(func() {
		w.err = err
		close(w.done)
		w.mu.Lock()
		finish := w.finish
		w.mu.Unlock()
		if finish != nil {
			finish(err)
		}
	})
}

// Sightings returns what was seen so far, one per MAC.
func (w *Watch) Sightings() []Sighting {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]Sighting, len(w.order))
	for i, m := range w.order {
		out[i] = *w.seen[m]
	}
	return out
}

// Close releases the socket, or its share of a shared one (the last
// watch on it closes it); a Run in progress returns.
func (w *Watch) Close() error {
	if w.hub == nil {
		return w.c.Close()
	}
	w.closeOnce.Do(func() {
		c := w.hub.leave(w)
		w.end(nil)
		if c != nil {
			_ = c.Close()
		}
	})
	return nil
}

// Filter assembles the classic BPF program Open attaches: drop what the
// host sends (PACKET_OUTGOING), keep a frame whose destination (To) or
// source (From) is one of macs, and only its first 14 bytes.
func Filter(dir Direction, macs []rarp.MAC) ([]bpf.RawInstruction, error) {
	return filter(dir, macs, 0)
}

// filter is Filter that also drops, in an Out filter, the frames marked
// ownMark (Direction.ownCheck).
func filter(dir Direction, macs []rarp.MAC, ownMark uint32) ([]bpf.RawInstruction, error) {
	if len(macs) == 0 {
		return nil, errors.New("reconverge: no MAC to watch")
	}
	if len(macs) > MaxMACs {
		return nil, fmt.Errorf("reconverge: %d MACs: %w (at most %d)", len(macs), ErrTooManyMACs, MaxMACs)
	}
	off := dir.macOffset()
	n := len(macs)
	prog := append(dir.ownCheck(ownMark), dir.sideCheck(uint8(4*n))...)
	for i, m := range macs {
		hi := uint32(m[0])<<24 | uint32(m[1])<<16 | uint32(m[2])<<8 | uint32(m[3])
		lo := uint32(m[4])<<8 | uint32(m[5])
		prog = append(prog,
			bpf.LoadAbsolute{Off: off, Size: 4},
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: hi, SkipFalse: 2},
			bpf.LoadAbsolute{Off: off + 4, Size: 2},
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: lo, SkipTrue: uint8(4*(n-i) - 3)},
		)
	}
	prog = append(prog,
		bpf.RetConstant{Val: 0},  // drop
		bpf.RetConstant{Val: 14}, // keep the Ethernet header
	)
	raw, err := bpf.Assemble(prog)
	if err != nil {
		return nil, fmt.Errorf("reconverge: assemble filter: %w", err)
	}
	return raw, nil
}
