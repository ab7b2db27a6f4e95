package logging

import (
	"context"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/rarp-announce/rarp-announce/internal/netnstest"
)

// A SIGHUP sent after Catch but before the handler runs (a daemon still
// loading its table) waits for the handler instead of ending the process,
// as Go's default does; one sent after the handler stopped (shutdown) is
// dropped. The signals go to this test binary itself: without Catch the
// first kill ends it (found in review: serve died with code 129 on a
// SIGHUP at start).
func TestCaughtSignalsWaitForTheHandler(t *testing.T) {
	ch := Catch()
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // delivered before there is a handler
	var reloads atomic.Int32
	lvl := zap.NewAtomicLevelAt(zapcore.InfoLevel)
	ctx, cancel := context.WithCancel(context.Background())
	HandleSignals(ctx, ch, zap.NewNop(), lvl, zapcore.InfoLevel, func() { reloads.Add(1) })
	netnstest.WaitFor(t, "the early SIGHUP reloads", func() bool { return reloads.Load() == 1 })
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	netnstest.WaitFor(t, "SIGUSR1 raises the level", func() bool { return lvl.Level() == zapcore.DebugLevel })

	cancel()
	time.Sleep(50 * time.Millisecond) // the handler has returned
	for _, s := range []syscall.Signal{syscall.SIGHUP, syscall.SIGUSR2} {
		if err := syscall.Kill(syscall.Getpid(), s); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(100 * time.Millisecond) // still alive: dropped, not fatal
	if n := reloads.Load(); n != 1 {
		t.Errorf("%d reloads, want 1 (none after the handler stopped)", n)
	}
}

// Sampled passes the first 100 of a message a second, then 1 in 100: a
// flood of 500 unknown-MAC lines at debug level writes about 104.
func TestSampled(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	log := zap.New(core).WithOptions(Sampled())
	for range 500 {
		log.Debug("unknown MAC", zap.String("interface", "br0"))
	}
	log.Info("another message") // its own count
	if n := logs.FilterMessage("unknown MAC").Len(); n < 100 || n > 110 {
		t.Errorf("%d of 500 lines written, want about 104", n)
	}
	if logs.FilterMessage("another message").Len() != 1 {
		t.Error("a different message was sampled away")
	}
}
