package app

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/rarp-announce/rarp-announce/internal/logging"
)

// HandleSignals is the one signal handler of the long-running commands
// (run, serve) until ctx ends: SIGUSR1 raises the log level to debug,
// SIGUSR2 sets it back to base, SIGHUP calls reload (on its own goroutine,
// one reload at a time). SIGTERM and SIGINT cancel the command's context
// (cli.Main).
func HandleSignals(ctx context.Context, log *zap.Logger, level zap.AtomicLevel, base zapcore.Level, reload func()) {
	logging.HandleLevelSignals(ctx, log, level, base)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				reload()
			}
		}
	}()
}
