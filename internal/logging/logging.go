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

// NewBuffered is New with the writes to stderr queued and written by a
// background goroutine, batched (DroppingWriter, 1 MiB). A landing storm
// logs thousands of lines a second; written synchronously, each one holds
// a lock across a write to a pipe that journald may drain late, on the
// path between a libvirt event and its first frame; and when journald
// stops reading, lines are dropped and counted (logged as "log lines
// dropped" once there is room) rather than blocking the event loop. The
// cost: a crash can lose the lines still queued. Call the returned stop
// function at exit to write them.
func NewBuffered(level, format string) (*zap.Logger, zap.AtomicLevel, func(), error) {
	ws := NewDroppingWriter(os.Stderr, 1<<20)
	l, lvl, err := build(level, format, ws)
	if err != nil {
		ws.Stop(0)
		return nil, lvl, nil, err
	}
	ws.SetOnDrop(func(n uint64) { l.Warn("log lines dropped: stderr was not read fast enough", zap.Uint64("dropped", n)) })
	return l, lvl, func() { ws.Stop(2 * time.Second) }, nil
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

// Sampled samples a logger's repeated messages: per message and level,
// the first 100 a second, then 1 in 100. For the RARP responder (serve),
// whose debug level logs every request: under a flood it must not fill
// the disk, nor spend its time logging.
func Sampled() zap.Option {
	return zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		return zapcore.NewSamplerWithOptions(c, time.Second, 100, 100)
	})
}

// Catch starts catching the daemons' control signals (SIGHUP, SIGUSR1,
// SIGUSR2) for HandleSignals, and never stops: Go's default for each is
// to end the process, so one sent while a daemon starts (a config
// management reload at boot, while a large table loads) killed it
// without a word, and so did one during shutdown. Caught from the start,
// one sent early waits for the handler (four at most), and one sent after
// it stopped is dropped.
func Catch() chan os.Signal {
	ch := make(chan os.Signal, 4)
	signal.Notify(ch, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2)
	return ch
}

// HandleSignals takes the signals ch caught (nil: it catches them now)
// until ctx is done: it switches lvl on SIGUSR1 (debug) and SIGUSR2 (back
// to base), and calls reload on SIGHUP (if not nil). One goroutine takes
// them in order, so a reload never runs twice at once.
func HandleSignals(ctx context.Context, ch <-chan os.Signal, log *zap.Logger, lvl zap.AtomicLevel, base zapcore.Level, reload func()) {
	if ch == nil {
		ch = Catch()
	}
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case s := <-ch:
				switch s {
				case syscall.SIGHUP:
					if reload != nil {
						reload()
					}
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
