package app

import (
	"context"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/rarp-announce/rarp-announce/internal/config"
	"github.com/rarp-announce/rarp-announce/internal/httpapi"
	"github.com/rarp-announce/rarp-announce/internal/logging"
)

// Log is the binary's one logger, built here for every command (run,
// serve, announce) from the config's log section, so the binary writes
// one format, and the level that SIGUSR1/SIGUSR2 switch.
type Log struct {
	*zap.Logger
	Level zap.AtomicLevel
	base  zapcore.Level
	stop  func()
	sigs  chan os.Signal // CatchSignals
}

// NewLog builds the logger for c. Buffered batches the writes to stderr
// (the agent's hot path, logging.NewBuffered); the one-shot commands write
// every line at once. Close flushes it.
func NewLog(c config.Log, buffered bool) (*Log, error) {
	l := &Log{stop: func() {}}
	var err error
	if buffered {
		l.Logger, l.Level, l.stop, err = logging.NewBuffered(c.Level, c.Format)
	} else {
		l.Logger, l.Level, err = logging.New(c.Level, c.Format)
	}
	if err != nil {
		return nil, err
	}
	l.base = l.Level.Level()
	return l, nil
}

// Close writes what is buffered.
func (l *Log) Close() {
	_ = l.Sync()
	l.stop()
}

// HandleSignals is the one signal handler of the long-running commands
// (run, serve) until ctx ends: SIGUSR1 raises the log level to debug,
// SIGUSR2 sets it back to the level it was built with, SIGHUP calls
// reload (one reload at a time). SIGTERM and SIGINT
// cancel the command's context (cli.Main).
func (l *Log) HandleSignals(ctx context.Context, reload func()) {
	logging.HandleSignals(ctx, l.sigs, l.Logger, l.Level, l.base, reload)
}

// Sampled is the logger with its repeated messages sampled
// (logging.Sampled): the responder's, whose debug level logs every
// request.
func (l *Log) Sampled() *zap.Logger { return l.Logger.WithOptions(logging.Sampled()) }

// CatchSignals catches the control signals (SIGHUP, SIGUSR1, SIGUSR2) from
// now on, for HandleSignals (logging.Catch): the long-running commands
// call it as soon as they have a logger, before anything slow.
func (l *Log) CatchSignals() { l.sigs = logging.Catch() }

// NewRegistry is the registry of the binary's HTTP endpoint: the Go and
// process collectors and rarp_announce_build_info.
func NewRegistry() *prometheus.Registry { return httpapi.NewRegistry() }

// HTTP is the one HTTP endpoint (/metrics, /healthz, /readyz) of run and
// serve.
type HTTP = httpapi.Server

// ListenHTTP binds addr now (a port taken fails the start, exit 1) for
// reg; ready says whether /readyz is 200 (nil: always).
func ListenHTTP(addr string, reg *prometheus.Registry, ready func() (bool, string), log *zap.Logger) (*HTTP, error) {
	return httpapi.Listen(addr, reg, ready, log.Named("http"))
}
