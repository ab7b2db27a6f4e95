package config

import (
	"context"
	"errors"
	"fmt"

	"github.com/rarp-announce/rarp-announce/pkg/ipsource"
	"github.com/rarp-announce/rarp-announce/pkg/rarptable"
)

// CheckTables loads the tables as run would at start, for run --check:
// ip_announce.static_map, and the responder's (read, parse, resolve the
// host names) and its boot directory. A configuration whose table makes run refuse to start is
// not "OK". It returns nil when no table is configured. transient is true
// when every problem may pass by itself (a responder name that does not
// resolve now, a responder file not there yet): run would start and retry
// that table.
func CheckTables(ctx context.Context, c *Config) (transient bool, err error) {
	// ip_announce.static_map refuses the start on any error (run has
	// nothing to retry it with).
	if a := c.IPAnnounce; a.Enabled {
		if _, err := a.LoadStatic(); err != nil {
			return false, err
		}
	}
	r := c.Responder
	if !r.Enabled {
		return false, nil
	}
	if r.BootDir != "" {
		if err := CheckBootDir(r.BootDir); err != nil {
			return false, fmt.Errorf("responder.boot_dir: %w", err)
		}
	}
	l := &rarptable.Loader{Files: r.Files()}
	if _, err := l.Load(ctx); err != nil {
		var le *rarptable.LoadError
		return errors.As(err, &le) && le.Transient(), err
	}
	return false, nil
}

// LoadStatic loads ip_announce.static_map when the static source uses one
// (nil, nil when not), its errors naming the key.
func (c IPAnnounce) LoadStatic() (ipsource.Static, error) {
	if !c.Sources.Static || c.StaticMap == "" {
		return nil, nil
	}
	st, err := ipsource.LoadStatic(c.StaticMap)
	if err != nil {
		return nil, fmt.Errorf("ip_announce.static_map: %w", err)
	}
	return st, nil
}
