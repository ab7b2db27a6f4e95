// Package logging builds the zap loggers of the long-running commands and
// switches their level on signals: SIGUSR1 raises it to debug, SIGUSR2 sets
// it back, as MINIX rarpd did, so an operator can look closer at a live
// problem without a restart.
package logging

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// New returns a logger writing to stderr in "json" or "console" format, and
// the level that controls it. Every line is written before the call
// returns (see NewBuffered for the daemon's hot path).
func New(level, format string) (*zap.Logger, zap.AtomicLevel, error) {
	return build(level, format, zapcore.Lock(os.Stderr))
}

// NewBuffered is New with the writes to stderr batched by a background
// flusher (every 100 ms, or 256 KiB). A landing storm logs thousands of
// lines a second; written synchronously, each one holds a lock across a
// write to a pipe that journald may drain late, on the path between a
// libvirt event and its first frame. The cost: a crash can lose the last
// 100 ms of lines. Call the returned stop function at exit to flush.
func NewBuffered(level, format string) (*zap.Logger, zap.AtomicLevel, func(), error) {
	ws := &zapcore.BufferedWriteSyncer{WS: zapcore.AddSync(os.Stderr), Size: 256 << 10, FlushInterval: 100 * time.Millisecond}
	l, lvl, err := build(level, format, ws)
	if err != nil {
		return nil, lvl, nil, err
	}
	return l, lvl, func() { _ = ws.Stop() }, nil
}

func build(level, format string, ws zapcore.WriteSyncer) (*zap.Logger, zap.AtomicLevel, error) {
	lvl, err := zap.ParseAtomicLevel(level)
	if err != nil {
		return nil, lvl, fmt.Errorf("log level %q: %w", level, err)
	}
	var enc zapcore.Encoder
	switch format {
	case "json", "":
		ec := zap.NewProductionEncoderConfig()
		ec.TimeKey = "ts"
		ec.EncodeTime = zapcore.RFC3339NanoTimeEncoder
		enc = zapcore.NewJSONEncoder(ec)
	case "console":
		ec := zap.NewDevelopmentEncoderConfig()
		enc = zapcore.NewConsoleEncoder(ec)
	default:
		return nil, lvl, fmt.Errorf("log format %q: not json or console", format)
	}
	if journalStderr() {
		enc = priorityEncoder{enc}
	}
	// Every event matters to someone debugging a migration: no sampling,
	// no stack traces (the messages say what failed).
	return zap.New(zapcore.NewCore(enc, ws, lvl), zap.AddCaller(), zap.ErrorOutput(zapcore.Lock(os.Stderr))), lvl, nil
}

// HandleSignals switches lvl on SIGUSR1 (debug) and SIGUSR2 (back to
// base), and calls reload on SIGHUP (if not nil), until ctx is done. One
// goroutine takes them in order, so a reload never runs twice at once.
func HandleSignals(ctx context.Context, log *zap.Logger, lvl zap.AtomicLevel, base zapcore.Level, reload func()) {
	sigs := []os.Signal{syscall.SIGUSR1, syscall.SIGUSR2}
	if reload != nil {
		sigs = append(sigs, syscall.SIGHUP)
	}
	ch := make(chan os.Signal, 4)
	signal.Notify(ch, sigs...)
	go func() {
		defer signal.Stop(ch)
		for {
			select {
			case <-ctx.Done():
				return
			case s := <-ch:
				switch s {
				case syscall.SIGHUP:
					reload()
					continue
				case syscall.SIGUSR1:
					lvl.SetLevel(zapcore.DebugLevel)
				default:
					lvl.SetLevel(base)
				}
				log.Info("log level changed", zap.String("signal", s.String()), zap.Stringer("level", lvl.Level()))
			}
		}
	}()
}
