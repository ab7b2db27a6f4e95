package cli

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/rarp-announce/rarp-announce/internal/config"
	"github.com/rarp-announce/rarp-announce/internal/daemon"
)

const runExamples = `  # As the systemd unit does (the config is optional: defaults without it).
  rarp-announce run --config /etc/rarp-announce/rarp-announce.yaml

  # Check a config file without starting: exits 2 with file:line:reason if it is bad.
  rarp-announce run --config ./rarp-announce.yaml --check

  # Split libvirt daemons, metrics for a Prometheus on another host.
  rarp-announce run --libvirt-socket /run/libvirt/virtqemud-sock-ro --metrics-address 0.0.0.0:9798
`

// configPath returns the flag's value, or the default path if that file
// exists, or "" (built-in defaults).
func configPath(flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	if _, err := os.Stat(config.DefaultPath); err == nil {
		return config.DefaultPath
	}
	return ""
}

func runRun(ctx context.Context, env *Env, args []string) int {
	fs := flagSet(env, "run", "[--config FILE] [flags]", runExamples)
	var path string
	var over daemon.Overrides
	var check bool
	fs.StringVar(&path, "config", "", "YAML config file (default "+config.DefaultPath+" if it exists, else built-in defaults)")
	fs.StringVar(&over.LibvirtSocket, "libvirt-socket", "", "libvirt unix socket (overrides libvirt.socket)")
	var obs observeFlags // they override metrics.address, log.level, log.format
	obs.register(fs, "", "")
	fs.BoolVar(&check, "check", false, "validate the configuration and exit")
	if code, ok := parse(env, fs, args); !ok {
		return code
	}
	over.MetricsAddress, over.LogLevel, over.LogFormat = obs.MetricsAddress, obs.LogLevel, obs.LogFormat
	path = configPath(path)
	cfg, err := daemon.Load(path, over)
	if err != nil {
		return startFailed(env, "run", "invalid configuration", err, true)
	}
	if check {
		if transient, err := config.CheckTables(ctx, cfg); err != nil {
			fmt.Fprintf(env.Stderr, "rarp-announce run: table:\n%v\n", err)
			if transient { // run would start and retry it
				return ExitFailure
			}
			return ExitUsage
		}
		where := path
		if where == "" {
			where = "built-in defaults"
		}
		fmt.Fprintf(env.Stdout, "configuration OK (%s)\n", where)
		return ExitOK
	}
	d, err := daemon.New(ctx, path, cfg, over)
	if err != nil {
		return startFailed(env, "run", "invalid configuration", err, errors.As(err, new(*daemon.ConfigError)))
	}
	if err := d.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return failure(env, "run", err)
	}
	return ExitOK
}
