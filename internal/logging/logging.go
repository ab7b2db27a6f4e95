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

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// New returns a logger writing to stderr in "json" or "console" format, and
// the level that controls it.
func New(level, format string) (*zap.Logger, zap.AtomicLevel, error) {
	lvl, err := zap.ParseAtomicLevel(level)
	if err != nil {
		return nil, lvl, fmt.Errorf("log level %q: %w", level, err)
	}
	var cfg zap.Config
	switch format {
	case "json", "":
		cfg = zap.NewProductionConfig()
		cfg.EncoderConfig.TimeKey = "ts"
		cfg.EncoderConfig.EncodeTime = zapcore.RFC3339NanoTimeEncoder
	case "console":
		cfg = zap.NewDevelopmentConfig()
		cfg.Development = false
	default:
		return nil, lvl, fmt.Errorf("log format %q: not json or console", format)
	}
	cfg.Level = lvl
	// Every event matters to someone debugging a migration: never sample.
	cfg.Sampling = nil
	cfg.OutputPaths = []string{"stderr"}
	cfg.ErrorOutputPaths = []string{"stderr"}
	cfg.DisableStacktrace = true
	l, err := cfg.Build()
	if err != nil {
		return nil, lvl, err
	}
	return l, lvl, nil
}

// HandleLevelSignals switches lvl on SIGUSR1 (debug) and SIGUSR2 (back to
// base) until ctx is done.
func HandleLevelSignals(ctx context.Context, log *zap.Logger, lvl zap.AtomicLevel, base zapcore.Level) {
	ch := make(chan os.Signal, 4)
	signal.Notify(ch, syscall.SIGUSR1, syscall.SIGUSR2)
	go func() {
		defer signal.Stop(ch)
		for {
			select {
			case <-ctx.Done():
				return
			case s := <-ch:
				if s == syscall.SIGUSR1 {
					lvl.SetLevel(zapcore.DebugLevel)
				} else {
					lvl.SetLevel(base)
				}
				log.Info("log level changed", zap.String("signal", s.String()), zap.Stringer("level", lvl.Level()))
			}
		}
	}()
}
