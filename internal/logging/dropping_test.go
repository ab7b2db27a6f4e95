package logging

import (
	"bufio"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Issue 11 #10: when nobody reads the log pipe (journald stopped reading),
// logging must not block the caller: lines beyond the budget are dropped
// and counted, and once the pipe is read again the lines kept arrive,
// followed by a line saying how many were dropped. With a synchronous (or
// zapcore.BufferedWriteSyncer) writer the loop below blocks for good once
// the pipe's 64 KiB are full.
func TestDroppingWriterNeverBlocks(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	ws := NewDroppingWriter(w, 32<<10)
	log, _, err := build("info", "json", ws)
	if err != nil {
		t.Fatal(err)
	}
	ws.SetOnDrop(func(n uint64) { log.Warn("log lines dropped", zap.Uint64("dropped", n)) })

	const lines = 20000 // ~3 MiB of JSON: far beyond the pipe and the budget
	done := make(chan time.Duration, 1)
	go func() {
		start := time.Now()
		for i := range lines {
			log.Info("domain landed", zap.Int("i", i), zap.String("pad", strings.Repeat("x", 100)))
		}
		done <- time.Since(start)
	}()
	select {
	case d := <-done:
		t.Logf("%d lines logged in %v with nobody reading; %d dropped", lines, d, ws.Dropped())
	case <-time.After(10 * time.Second):
		t.Fatal("logging blocked while the pipe was not read")
	}
	if ws.Dropped() == 0 {
		t.Fatal("no line dropped: the pipe and the budget cannot hold them all")
	}

	// The reader comes back: the kept lines, then the drop notice.
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	got, notice := 0, false
	deadline := time.AfterFunc(10*time.Second, func() { w.Close() })
	defer deadline.Stop()
	for sc.Scan() {
		line := sc.Text()
		if strings.Contains(line, `"msg":"log lines dropped"`) {
			notice = true
			break
		}
		if !strings.Contains(line, `"msg":"domain landed"`) {
			t.Fatalf("garbled line %q", line)
		}
		got++
	}
	if !notice {
		t.Fatalf("no drop notice after %d lines", got)
	}
	if got == 0 || uint64(got)+ws.Dropped() > lines {
		t.Errorf("%d lines read + %d dropped, of %d", got, ws.Dropped(), lines)
	}
	ws.Stop(time.Second)
	var _ zapcore.WriteSyncer = ws
}

// Stop writes what is queued; nothing is lost when the reader keeps up.
func TestDroppingWriterStopFlushes(t *testing.T) {
	var b strings.Builder
	ws := NewDroppingWriter(&b, 1<<20)
	for range 100 {
		_, _ = ws.Write([]byte("line\n"))
	}
	ws.Stop(2 * time.Second)
	if got := strings.Count(b.String(), "line\n"); got != 100 || ws.Dropped() != 0 {
		t.Fatalf("%d lines written, %d dropped; want 100, 0", got, ws.Dropped())
	}
	if _, err := ws.Write([]byte("late\n")); err != nil || ws.Dropped() != 1 {
		t.Fatalf("write after Stop: %v, dropped %d", err, ws.Dropped())
	}
}

// countingWriter counts the writes it gets and the time of the first.
type countingWriter struct {
	mu     sync.Mutex
	writes int
	lines  int
	first  time.Time
}

func (c *countingWriter) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.writes == 0 {
		c.first = time.Now()
	}
	c.writes++
	c.lines += strings.Count(string(p), "\n")
	return len(p), nil
}

func (c *countingWriter) counts() (writes, lines int, first time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writes, c.lines, c.first
}

// A burst of lines goes out in a few writes (one per batchPause at
// most), yet the first line after a quiet spell is written at once.
func TestDroppingWriterBatchesBursts(t *testing.T) {
	var c countingWriter
	ws := NewDroppingWriter(&c, 1<<20)
	defer ws.Stop(time.Second)
	start := time.Now()
	_, _ = ws.Write([]byte("first\n"))
	for time.Since(start) < time.Second {
		if w, _, _ := c.counts(); w > 0 {
			break
		}
		time.Sleep(100 * time.Microsecond)
	}
	// Not held for a pause (a little more, for a loaded machine).
	if _, _, first := c.counts(); first.IsZero() || first.Sub(start) > 3*batchPause {
		t.Fatalf("first line written %v after it was logged, want at once", first.Sub(start))
	}
	// 20 ms of lines, one every 20 µs: about 1,000 lines, written at
	// most once per batchPause (5 writes, and the one in flight).
	burst := time.Now()
	n := 0
	for time.Since(burst) < 20*time.Millisecond {
		_, _ = ws.Write([]byte("line\n"))
		n++
		time.Sleep(20 * time.Microsecond)
	}
	ws.Stop(time.Second)
	writes, lines, _ := c.counts()
	if lines != n+1 {
		t.Fatalf("%d lines written, want %d", lines, n+1)
	}
	if most := int(time.Since(burst)/batchPause) + 2; writes > most {
		t.Errorf("%d lines in %d writes, want at most %d (one per %v)", n, writes, most, batchPause)
	}
	t.Logf("%d lines in %d writes", n+1, writes)
}
