package logging

import (
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rarp-announce/rarp-announce/pkg/wait"
)

// DroppingWriter is a zapcore.WriteSyncer that never blocks its callers:
// lines are queued, up to a byte budget, and written by one background
// goroutine, batched; a line that does not fit is dropped and counted.
//
// Why: the daemon logs from its event loop. When journald stops reading
// stderr (overloaded, restarted, frozen) the pipe fills and a write
// blocks, and with it the landing of every VM behind it. A lost log line
// is cheaper than a VM not announced. zapcore.BufferedWriteSyncer batches
// too, but flushes in the caller once its buffer is full, and so blocks.
//
// In a burst the background goroutine writes at most once per
// batchPause: the first line after a quiet spell goes out at once, the
// ones behind it together a few milliseconds later. Woken for each line
// instead, it made a write and a thread wake-up per line or two in a
// landing storm (3,300 writes for 5,000 lines in BenchmarkStorm).
//
// After drops, once the queue has room again, the SetOnDrop function is
// called from the background goroutine with the number dropped since the
// last call, so the gap is visible in the log itself.
type DroppingWriter struct {
	w      io.Writer
	budget int
	pause  time.Duration // after a write, before the next

	mu      sync.Mutex
	onDrop  func(n uint64)
	queue   [][]byte
	size    int
	closed  bool
	wake    chan struct{}
	idle    *sync.Cond // signalled when the queue is empty and nothing is being written
	writing bool

	dropped  atomic.Uint64 // total
	reported uint64        // background goroutine only
	done     chan struct{}
}

// batchPause is how long the background goroutine lets lines gather after
// a write before the next.
const batchPause = 5 * time.Millisecond

// NewDroppingWriter starts a DroppingWriter on w holding at most budget
// bytes of queued lines.
func NewDroppingWriter(w io.Writer, budget int) *DroppingWriter {
	d := &DroppingWriter{w: w, budget: budget, pause: batchPause, wake: make(chan struct{}, 1), done: make(chan struct{})}
	d.idle = sync.NewCond(&d.mu)
	go d.run()
	return d
}

// Write queues a copy of p, or drops it when the queue is full (or the
// writer stopped). It always reports success: zap would otherwise write
// an error line per dropped line to its error output, which blocks too.
func (d *DroppingWriter) Write(p []byte) (int, error) {
	d.mu.Lock()
	if d.closed || d.size+len(p) > d.budget {
		d.mu.Unlock()
		d.dropped.Add(1)
		return len(p), nil
	}
	d.queue = append(d.queue, append([]byte(nil), p...))
	d.size += len(p)
	d.mu.Unlock()
	wait.Wake(d.wake)
	return len(p), nil
}

// SetOnDrop sets the function told, after drops, how many lines were
// dropped (it may log through the logger that writes here).
func (d *DroppingWriter) SetOnDrop(f func(n uint64)) {
	d.mu.Lock()
	d.onDrop = f
	d.mu.Unlock()
}

// Dropped is the number of lines dropped so far.
func (d *DroppingWriter) Dropped() uint64 { return d.dropped.Load() }

// Sync waits, at most one second, for the lines queued so far to be
// written; zap calls it only before Fatal and Panic exits.
func (d *DroppingWriter) Sync() error {
	d.waitIdle(time.Second)
	return nil
}

// Stop writes what is queued (waiting at most timeout for a stalled
// reader), then stops the background goroutine; later lines are dropped.
func (d *DroppingWriter) Stop(timeout time.Duration) {
	d.waitIdle(timeout)
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	wait.Wake(d.wake)
	select {
	case <-d.done:
	case <-time.After(timeout):
		// The reader is stuck in a write: leave it; the process exits.
	}
}

func (d *DroppingWriter) waitIdle(timeout time.Duration) {
	ok := make(chan struct{})
	go func() {
		d.mu.Lock()
		for (len(d.queue) > 0 || d.writing) && !d.closed {
			d.idle.Wait()
		}
		d.mu.Unlock()
		close(ok)
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-ok:
	case <-t.C:
		// The waiter goroutine ends with the next idle signal or Stop.
	}
}

func (d *DroppingWriter) run() {
	defer close(d.done)
	var batch []byte
	for {
		d.mu.Lock()
		for len(d.queue) == 0 && !d.closed {
			d.writing = false
			d.idle.Broadcast()
			d.mu.Unlock()
			<-d.wake
			d.mu.Lock()
		}
		if len(d.queue) == 0 && d.closed {
			d.writing = false
			d.idle.Broadcast()
			d.mu.Unlock()
			return
		}
		q, onDrop := d.queue, d.onDrop
		d.queue, d.size, d.writing = nil, 0, true
		d.mu.Unlock()

		batch = batch[:0]
		for _, l := range q {
			batch = append(batch, l...)
		}
		_, _ = d.w.Write(batch) // nowhere to report a failure to write the log
		if n := d.dropped.Load(); n > d.reported && onDrop != nil {
			onDrop(n - d.reported)
			d.reported = n
		}
		d.mu.Lock()
		closed := d.closed
		d.mu.Unlock()
		if !closed {
			time.Sleep(d.pause) // let a burst's next lines gather
		}
	}
}
