package daemon

import (
	"context"
	"errors"
	"fmt"

	"go.uber.org/zap"

	"github.com/rarp-announce/rarp-announce/pkg/responder"

	"github.com/rarp-announce/rarp-announce/internal/app"
	"github.com/rarp-announce/rarp-announce/internal/config"
)

// ConfigError is a start-up failure caused by the configuration or a file
// it names (the responder's tables): exit 2, not 1.
type ConfigError struct{ Err error }

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// addResponder builds the RARP responder when enabled: the table is loaded
// now, so a broken ethers or map file refuses the start with file:line.
func (d *Daemon) addResponder(ctx context.Context, cfg *config.Config) error {
	c := cfg.Responder
	if !c.Enabled {
		return nil
	}
	if c.BootDir != "" {
		if err := config.CheckBootDir(c.BootDir); err != nil {
			return &ConfigError{fmt.Errorf("responder.boot_dir: %w", err)}
		}
	}
	rp, err := app.NewResponder(ctx, c.Files(), responder.Config{
		Interfaces: c.Interfaces, OffLink: c.OffLink, BootDir: c.BootDir, ARPAdvise: c.ARPAdvise,
	}, d.log.Named("responder"), d.reg, true)
	if err != nil {
		return tableConfigError(err)
	}
	d.resp = rp
	d.procs.Responder()
	d.closers = append(d.closers, func() { _ = rp.Server.Close() })
	return nil
}

// runResponder answers requests and follows the table files until ctx ends.
func (d *Daemon) runResponder(ctx context.Context) {
	if d.resp == nil {
		return
	}
	go func() {
		if err := d.resp.Reloader.Watch(ctx); err != nil && ctx.Err() == nil {
			d.log.Warn("not watching the responder's table files; SIGHUP still reloads them", zap.Error(err))
		}
	}()
	if err := d.resp.Server.Run(ctx); err != nil && ctx.Err() == nil {
		d.log.Error("RARP responder stopped", zap.Error(err))
	}
}

// reloadResponder re-reads the tables on SIGHUP (a broken file keeps the
// old table and logs why). New file paths need a restart (restartOnly).
func (d *Daemon) reloadResponder(ctx context.Context, cfg *config.Config) {
	if d.resp == nil || !cfg.Responder.Enabled {
		return
	}
	if err := d.resp.Reloader.Reload(ctx, "SIGHUP"); err != nil && ctx.Err() == nil {
		d.log.Error("responder table reload refused; keeping the old table", zap.Error(err))
	}
	if err := d.resp.Server.RefreshBootDir(); err != nil {
		d.log.Warn("boot directory", zap.Error(err))
	}
}

// tableConfigError makes a table the configuration names that does not
// load (app.TableError) a configuration error: exit 2, no restart.
func tableConfigError(err error) error {
	if errors.As(err, new(*app.TableError)) {
		return &ConfigError{err}
	}
	return err
}
