package reconverge

// Shared watches: one packet socket per device and direction for all the
// watches open on it at once.
//
// A socket per watch cost the agent a third of its CPU in a landing storm
// (cmd/rarp-announce BenchmarkStorm, docs/agent-tests.md): creating one
// walks the namespace's list of packet sockets, closing one waits for RCU,
// and every frame sent on an uplink walks the device's list of packet
// sockets, hundreds long while a storm's watches are open. With Shared, a
// landing's watch on an uplink that already has one joins its socket: the
// MACs are added to a table the socket's reader demultiplexes with, and
// to the socket's kernel filter only when it must change.
//
// The kernel filter cannot hold the union of hundreds of MACs: classic
// BPF is compiled at every attach, about half a microsecond per
// instruction (a 60-MAC program took 150 µs to attach here, 250 MACs 590
// µs), and the socket's option memory caps its size. Up to exactMACs MACs
// the filter lists them (as a single Watch's does); beyond, it keeps a
// frame whose MAC falls in a bucket (9 bits of its last two bytes, 512
// buckets) that holds a watched MAC: a program of at most 65 instructions
// whatever the number of MACs, re-attached only when a bucket fills (and,
// lazily, after some empty). The reader drops the other MACs of a bucket
// in user space.
//
// Attaching a filter is the costly step (the kernel checks and compiles
// the program, and on a JIT patches kernel text and flushes TLBs on every
// CPU), so the hub does it as rarely as it may:
//   - joins commit in groups: a join registers its MACs, and if the
//     attached filter does not pass them yet, waits for the next attach,
//     which one of the waiting joins runs, outside the hub's lock, for
//     every MAC registered by then: in a storm one attach serves the joins
//     that queued behind the one before, and a join waits for at most two;
//   - leaves never wait: a filter passing more than the watched MACs is
//     only wider than needed (the reader drops the rest), so it narrows
//     narrowDelay after a leave made it wider, or at the next join's
//     attach, whichever comes first.

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mdlayher/packet"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/rarp-announce/rarp-announce/pkg/rarp"
	"github.com/rarp-announce/rarp-announce/pkg/wait"
)

// exactMACs is the most MACs a shared socket's filter lists one by one;
// beyond, it filters on buckets.
const exactMACs = 8

// buckets is the number of buckets of the bucket filter: 9 bits of the
// MAC's last two bytes, 16 words of 32 bits.
const buckets = 512

// narrowDelay is how long a filter stays wider than the watched MACs after
// a leave before it is narrowed (a variable for tests).
var narrowDelay = 500 * time.Millisecond

// beforeAttach, if set (by tests), runs in attach with the hub's lock
// released, just before the filter goes to the kernel.
var beforeAttach func()

// sharedReadBuffer is the receive buffer asked for a shared socket: it
// holds the frames of every watch on the device (each a 14-byte header,
// but a kernel buffer of about 1 KiB counts against it).
const sharedReadBuffer = 1 << 20

// Shared opens watches that share one socket per device and direction.
// Its sockets live in the network namespace the first watch of each was
// opened in: use one Shared per namespace. Safe for concurrent use; the
// zero value is ready.
type Shared struct {
	// OwnMark, if not zero, is the socket mark (SO_MARK) of the frames
	// this agent sends (announce.Marked): an Out watch's kernel
	// filter drops them, so the agent's own announces never wake its
	// readers. Set before the first Open.
	OwnMark uint32

	mu   sync.Mutex
	hubs map[hubKey]*hub
	// sockets counts the sockets opened, for tests.
	sockets int
}

type hubKey struct {
	index int
	name  string
	dir   Direction
}

// hub is one shared socket and the watches reading through it.
type hub struct {
	s   *Shared
	key hubKey
	c   *packet.Conn

	mu      sync.Mutex // guards what follows; never held with s.mu
	macs    map[rarp.MAC][]*Watch
	bucket  [buckets]uint16 // MACs per bucket
	watches int
	filter  []bpf.RawInstruction // attached now
	passes  coverage             // what filter passes
	pending coverage             // what the attach in flight will pass
	dead    bool                 // the reader failed or the socket closed

	// Group commit of the filter (see the package comment above): gen
	// counts the joins that needed a wider filter, done is the last of
	// them the attached filter serves, failed the last whose attach
	// failed (with failErr). One attach runs at a time (attaching),
	// with mu released; attached wakes the joins waiting for it.
	gen, done, failed uint64
	failErr           error
	attaching         bool
	attached          *sync.Cond
	narrowing         bool // a narrowing is due (narrowDelay after a leave)

	frames  atomic.Uint64 // read from the socket, for tests of the filter
	attachs atomic.Uint64 // filters attached, for tests
}

// coverage is what an attached filter passes: the listed MACs (exact), or
// every MAC of the set buckets.
type coverage struct {
	exact   []rarp.MAC // nil with the bucket filter
	buckets [buckets / 32]uint32
}

func (c coverage) has(m rarp.MAC) bool {
	if c.exact != nil {
		return slices.Contains(c.exact, m)
	}
	b := bucketOf(m)
	return c.buckets[b/32]&(1<<(b%32)) != 0
}

// Open starts watching ifi for frames of macs, as Open does, through the
// device's shared socket (opened now if the device has none). Frames are
// kept from this call on.
func (s *Shared) Open(ifi *net.Interface, dir Direction, macs []rarp.MAC) (*Watch, error) {
	if len(macs) == 0 {
		return nil, errors.New("reconverge: no MAC to watch")
	}
	key := hubKey{index: ifi.Index, name: ifi.Name, dir: dir}
	var w *Watch
	for {
		// A hub that fails while w waits in its join ends w with it: the
		// next try starts from a watch of its own.
		if w == nil || wait.Closed(w.done) {
			w = newWatch(dir, macs)
			w.done = make(chan struct{})
		}
		// s.mu guards the map: a join (and its filter attach) runs
		// under the hub's own lock, so it waits for the other joins on
		// its device only. A device's first watch opens its socket
		// under s.mu, once per device while it has watches.
		s.mu.Lock()
		if s.hubs == nil {
			s.hubs = map[hubKey]*hub{}
		}
		h := s.hubs[key]
		if h == nil {
			var err error
			if h, err = s.openHub(ifi, key, w.order); err != nil {
				s.mu.Unlock()
				return nil, err
			}
			s.hubs[key] = h
			go h.read()
		}
		s.mu.Unlock()
		switch err := h.join(w); {
		case errors.Is(err, errHubGone):
			h.forget() // its last watch closed it meanwhile, or it failed
			continue
		case err != nil:
			if c := h.abandon(); c != nil {
				_ = c.Close()
			}
			return nil, err
		}
		w.hub = h
		return w, nil
	}
}

// errHubGone: the hub closed between the lookup and the join.
var errHubGone = errors.New("reconverge: shared socket closed")

// abandon closes a hub a failed join left without watches: it returns
// the socket to close (nil if other watches use it).
func (h *hub) abandon() *packet.Conn {
	h.mu.Lock()
	if h.watches > 0 || h.dead {
		h.mu.Unlock()
		return nil
	}
	h.dead = true
	h.mu.Unlock()
	h.forget()
	return h.c
}

// forget removes the hub from s's map, if it is still there.
func (h *hub) forget() {
	h.s.mu.Lock()
	if h.s.hubs[h.key] == h {
		delete(h.s.hubs, h.key)
	}
	h.s.mu.Unlock()
}

// Sockets reports how many sockets s has opened so far.
func (s *Shared) Sockets() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sockets
}

func (s *Shared) openHub(ifi *net.Interface, key hubKey, macs []rarp.MAC) (*hub, error) {
	h := &hub{s: s, key: key, macs: map[rarp.MAC][]*Watch{}}
	h.attached = sync.NewCond(&h.mu)
	prog, cov, err := h.program(macs)
	if err != nil {
		return nil, err
	}
	c, err := listen(ifi, key.dir, prog)
	if err != nil {
		return nil, err
	}
	if rc, err := c.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, sharedReadBuffer)
		})
	}
	h.c, h.filter, h.passes = c, prog, cov
	h.attachs.Add(1)
	s.sockets++
	return h, nil
}

// program returns the filter for the hub's MACs plus extra, and what it
// passes (h.mu held, or h not shared yet).
func (h *hub) program(extra []rarp.MAC) ([]bpf.RawInstruction, coverage, error) {
	n := len(h.macs)
	var add []rarp.MAC
	for _, m := range extra {
		if _, ok := h.macs[m]; !ok {
			n++
			add = append(add, m)
		}
	}
	if n <= exactMACs {
		all := make([]rarp.MAC, 0, n)
		for m := range h.macs {
			all = append(all, m)
		}
		all = append(all, add...)
		// In a stable order: the same MACs make the same program,
		// which attach then skips.
		slices.SortFunc(all, func(a, b rarp.MAC) int { return bytes.Compare(a[:], b[:]) })
		prog, err := filter(h.key.dir, all, h.s.OwnMark)
		return prog, coverage{exact: all}, err
	}
	var cov coverage
	for b, k := range h.bucket {
		if k > 0 {
			cov.buckets[b/32] |= 1 << (b % 32)
		}
	}
	for _, m := range add {
		b := bucketOf(m)
		cov.buckets[b/32] |= 1 << (b % 32)
	}
	prog, err := bucketFilter(h.key.dir, cov.buckets, h.s.OwnMark)
	return prog, cov, err
}

// covers reports whether the attached filter passes macs, and so will the
// one an attach in flight computed before they were registered: the
// common case in a storm once the bucket filter is on, where a join then
// costs no filter.
func (h *hub) covers(macs []rarp.MAC) bool {
	for _, m := range macs {
		if !h.passes.has(m) || (h.attaching && !h.pending.has(m)) {
			return false
		}
	}
	return true
}

// wider reports whether the attached filter passes more than the watched
// MACs need.
func (h *hub) wider() bool {
	if len(h.macs) <= exactMACs {
		return h.passes.exact == nil || len(h.passes.exact) > len(h.macs)
	}
	if h.passes.exact != nil {
		return false // cannot be: more MACs than it lists are watched
	}
	for b, k := range h.bucket {
		if k == 0 && h.passes.buckets[b/32]&(1<<(b%32)) != 0 {
			return true
		}
	}
	return false
}

// join adds w's MACs to the hub and, if the attached filter does not pass
// them, waits for an attach that does (group commit); errHubGone if the
// hub closed.
func (h *hub) join(w *Watch) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.dead {
		return errHubGone
	}
	h.add(w)
	if h.covers(w.order) {
		return nil
	}
	h.gen++
	mine := h.gen
	for h.done < mine {
		switch {
		case h.failed >= mine:
			err := h.failErr
			h.remove(w)
			return err
		case h.dead:
			h.remove(w)
			return errHubGone
		case !h.attaching:
			h.attach()
		default:
			h.attached.Wait()
		}
	}
	return nil
}

// add registers w's MACs with the reader (h.mu held).
func (h *hub) add(w *Watch) {
	for _, m := range w.order {
		if len(h.macs[m]) == 0 {
			h.bucket[bucketOf(m)]++
		}
		h.macs[m] = append(h.macs[m], w)
	}
	h.watches++
}

// remove unregisters w's MACs (h.mu held).
func (h *hub) remove(w *Watch) {
	for _, m := range w.order {
		ws := slices.DeleteFunc(h.macs[m], func(x *Watch) bool { return x == w })
		if len(ws) == 0 {
			delete(h.macs, m)
			h.bucket[bucketOf(m)]--
		} else {
			h.macs[m] = ws
		}
	}
	h.watches--
}

// leave removes w from the hub. After the last watch it forgets the hub
// and returns the socket for the caller to close, holding no lock:
// closing a packet socket waits for an RCU grace period (synchronize_net),
// milliseconds that must not hold up other watches. Otherwise a filter
// left wider than needed narrows narrowDelay later.
func (h *hub) leave(w *Watch) (closeAfter *packet.Conn) {
	h.mu.Lock()
	h.remove(w)
	if h.watches == 0 {
		h.dead = true
		h.attached.Broadcast()
		h.mu.Unlock()
		h.forget()
		return h.c
	}
	if !h.dead && !h.narrowing && h.wider() {
		h.narrowing = true
		time.AfterFunc(narrowDelay, h.narrow)
	}
	h.mu.Unlock()
	return nil
}

// narrow attaches the filter for the MACs watched now, unless the hub
// closed or a join's attach narrowed it meanwhile.
func (h *hub) narrow() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.narrowing = false
	if h.dead || h.attaching || !h.wider() {
		return // an attach running now takes the watched MACs
	}
	h.attach()
}

// attach attaches the filter for every MAC registered now, with h.mu
// released while the kernel compiles it, and wakes the joins waiting for
// it (h.mu held on entry and return; one attach at a time).
func (h *hub) attach() {
	h.attaching = true
	upto := h.gen
	prog, cov, err := h.program(nil)
	if err == nil && !slices.Equal(prog, h.filter) {
		h.pending = cov
		h.mu.Unlock()
		if beforeAttach != nil {
			beforeAttach()
		}
		err = h.c.SetBPF(prog)
		h.mu.Lock()
		if err == nil {
			h.attachs.Add(1)
		}
	}
	h.attaching = false
	if err != nil {
		h.failed, h.failErr = upto, fmt.Errorf("reconverge: watch %s: filter: %w", h.key.name, err)
	} else {
		h.filter, h.passes, h.done = prog, cov, upto
	}
	h.attached.Broadcast()
}

// read demultiplexes the socket's frames to the watches of their MAC
// until the socket closes or fails; a failure ends every watch on it with
// the error.
func (h *hub) read() {
	buf := make([]byte, 64) // the filter keeps only the Ethernet header
	for {
		n, _, err := h.c.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			h.fail(err)
			return
		}
		h.frames.Add(1)
		if n < 12 {
			continue
		}
		var m rarp.MAC
		off := h.key.dir.macOffset()
		copy(m[:], buf[off:off+6])
		now := time.Now()
		h.mu.Lock()
		for _, w := range h.macs[m] {
			w.deliver(m, now)
		}
		h.mu.Unlock()
	}
}

// fail ends every watch of the hub with err (nothing when the last watch
// closed the socket) and forgets the hub, so the next Open opens a new
// socket.
func (h *hub) fail(err error) {
	h.mu.Lock()
	dead := h.dead
	h.mu.Unlock()
	if dead { // the last watch closed the socket
		return
	}
	h.forget()
	h.mu.Lock()
	if h.dead {
		h.mu.Unlock()
		return
	}
	h.dead = true
	h.attached.Broadcast()
	err = fmt.Errorf("reconverge: read: %w", err)
	for _, ws := range h.macs {
		for _, w := range ws {
			w.end(err)
		}
	}
	h.mu.Unlock()
	_ = h.c.Close()
}

// bucketOf is a MAC's bucket in the bucket filter: the low 9 bits of its
// last two bytes.
func bucketOf(m rarp.MAC) int { return (int(m[4])<<8 | int(m[5])) % buckets }

// bucketFilter assembles the bucket filter: drop one of the agent's own
// frames (Direction.ownCheck) or a frame on the wrong side
// (Direction.sideCheck), keep one (its first 14 bytes) whose
// destination (To) or source (From, Out) MAC falls in a bucket whose bit
// is set in words.
func bucketFilter(dir Direction, words [buckets / 32]uint32, ownMark uint32) ([]bpf.RawInstruction, error) {
	off := dir.macOffset()
	var nonzero []int
	for i, w := range words {
		if w != 0 {
			nonzero = append(nonzero, i)
		}
	}
	// Layout: header (9), 3 per word, drop (1), tail (4); the own-frame
	// check goes in front once it is laid out (jumps are relative).
	drop := 9 + 3*len(nonzero)
	tail := drop + 1
	prog := append(dir.sideCheck(uint8(drop-2)),
		bpf.LoadAbsolute{Off: off + 4, Size: 2},
		bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: buckets - 1},
		bpf.StoreScratch{Src: bpf.RegA, N: 0},
		bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 31},
		bpf.TAX{},
		bpf.LoadScratch{Dst: bpf.RegA, N: 0},
		bpf.ALUOpConstant{Op: bpf.ALUOpShiftRight, Val: 5}, // the word
	)
	for _, i := range nonzero {
		at := len(prog)
		prog = append(prog,
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(i), SkipFalse: 2},
			bpf.LoadConstant{Dst: bpf.RegA, Val: words[i]},
			bpf.Jump{Skip: uint32(tail - (at + 3))},
		)
	}
	prog = append(prog,
		bpf.RetConstant{Val: 0}, // drop: no word, or not the bucket's bit
		bpf.ALUOpX{Op: bpf.ALUOpShiftRight},
		bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 1},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0, SkipFalse: 1},
		bpf.RetConstant{Val: 0},
		bpf.RetConstant{Val: 14},
	)
	raw, err := bpf.Assemble(append(dir.ownCheck(ownMark), prog...))
	if err != nil {
		return nil, fmt.Errorf("reconverge: assemble bucket filter: %w", err)
	}
	return raw, nil
}
