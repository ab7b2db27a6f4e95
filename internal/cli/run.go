package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"

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
			fmt.Fprintf(env.Stderr, "rarp-announce run: responder table:\n%v\n", err)
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
	setGOMAXPROCS(cfg)
	d, err := daemon.New(ctx, path, cfg, over)
	if err != nil {
		return startFailed(env, "run", "invalid configuration", err, errors.As(err, new(*daemon.ConfigError)))
	}
	if err := d.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return failure(env, "run", err)
	}
	return ExitOK
}

// setGOMAXPROCS sizes the Go scheduler (its Ps) for how the agent sends,
// unless GOMAXPROCS is set in the environment:
//   - host.send_on: uplinks (the default): one P. A send out of an uplink
//     is a short system call, and the rest of the agent's work is short
//     and waits on sockets. With more Ps the runtime wakes an idle thread
//     for each goroutine made runnable and parks it again soon after: in
//     a storm of 1,000 landings that was half the agent's CPU (8 Ps:
//     0.77-1.07 s, 1 P: 0.44-0.46 s, the first frames' p99 1.9-7.6 ms
//     either way; cmd/rarp-announce BenchmarkStorm, docs/agent-tests.md).
//     node_exporter runs on one P by default for the same reason.
//   - host.send_on: bridge: at least 8. There a broadcast is flooded by
//     the kernel to every port of the bridge inside sendto, and a
//     goroutine in such a call holds its P: with 1 P the first frames of
//     the same storm waited 670 ms (p50), with 2 Ps libvirt's socket
//     reader waited for a P and p99 was 37 ms; with 8 Ps, 18.5 ms. The
//     kernel still shares the same CPUs among the threads; the Ps only
//     stop runnable goroutines from queueing behind blocked ones.
//
// host.send_on needs a restart to change, and so does this.
func setGOMAXPROCS(cfg *config.Config) {
	if os.Getenv("GOMAXPROCS") != "" {
		return
	}
	if cfg.Host.SendOn == config.SendOnBridge {
		if runtime.GOMAXPROCS(0) < minProcsFlooding {
			runtime.GOMAXPROCS(minProcsFlooding)
		}
		return
	}
	runtime.GOMAXPROCS(1)
}

const minProcsFlooding = 8
