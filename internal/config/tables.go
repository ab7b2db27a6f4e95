package config

import (
	"context"
	"errors"

	"github.com/rarp-announce/rarp-announce/pkg/rarptable"
)

// CheckTables loads the responder's tables as run would at start (read,
// parse, resolve the host names), for run --check: a configuration whose
// ethers or map file makes the responder refuse to start is not "OK". It
// returns nil when the responder is disabled. transient is true when
// every problem may pass by itself (a name that does not resolve now, a
// file not there yet): run would start and retry the table.
func CheckTables(ctx context.Context, c *Config) (transient bool, err error) {
	r := c.Responder
	if !r.Enabled {
		return false, nil
	}
	l := &rarptable.Loader{Files: rarptable.Files{Ethers: r.Ethers, Map: r.Map}}
	if _, err := l.Load(ctx); err != nil {
		var le *rarptable.LoadError
		return errors.As(err, &le) && le.Transient(), err
	}
	return false, nil
}
