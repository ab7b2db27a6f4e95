package app

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/rarp-announce/rarp-announce/pkg/rarptable"
	"github.com/rarp-announce/rarp-announce/pkg/responder"
)

// Responder is the RARP server of 'run' (responder: enabled) and of
// 'serve': the table, its reloader and the server, built once here.
type Responder struct {
	Server   *responder.Responder
	Reloader *rarptable.Reloader
	Table    *rarptable.Holder
}

// TableError is a table that did not load at start: a configuration error
// (exit 2), not a runtime failure.
type TableError struct{ Err error }

func (e *TableError) Error() string { return e.Err.Error() }
func (e *TableError) Unwrap() error { return e.Err }

// NewResponder loads the table now (a broken ethers or map file refuses the
// start with file:line, as a *TableError; with retry, a table that failed
// only to resolve names or to be read is retried in the background instead,
// as the agent does, while serve refuses it) and builds the server on
// cfg.Interfaces; cfg.Table, Logger and Metrics are set here. Its metrics
// and the table's go to reg (nil: not exported).
func NewResponder(ctx context.Context, files rarptable.Files, cfg responder.Config, log *zap.Logger, reg prometheus.Registerer, retry bool) (*Responder, error) {
	holder := rarptable.NewHolder(nil)
	tm := rarptable.NewMetrics(holder, reg)
	rl := &rarptable.Reloader{
		Loader: &rarptable.Loader{Files: files},
		Holder: holder, Logger: log, Metrics: tm,
	}
	load := func() error { return rl.Reload(ctx, "start") }
	if retry {
		load = func() error { return rl.Start(ctx) }
	}
	if err := load(); err != nil {
		return nil, &TableError{err}
	}
	rm := responder.NewMetrics(reg)
	cfg.Table, cfg.Logger, cfg.Metrics = holder, log, rm
	r, err := responder.New(cfg)
	if err != nil {
		return nil, err
	}
	return &Responder{Server: r, Reloader: rl, Table: holder}, nil
}
