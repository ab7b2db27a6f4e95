package daemon

import (
	"context"

	"github.com/rarp-announce/rarp-announce/internal/agent"
	"github.com/rarp-announce/rarp-announce/internal/config"
)

// addOVS wires the ovs strategy when a NIC kind uses it.
func (d *Daemon) addOVS(deps *agent.Deps, cfg *config.Config) error { return nil }

// addResponder builds the RARP responder when enabled.
func (d *Daemon) addResponder(ctx context.Context, cfg *config.Config) error { return nil }

func (d *Daemon) runResponder(ctx context.Context) {}

func (d *Daemon) reloadResponder(cfg *config.Config) {}
