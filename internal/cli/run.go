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
	raiseGOMAXPROCS()
	d, err := daemon.New(ctx, path, cfg, over)
	if err != nil {
		return startFailed(env, "run", "invalid configuration", err, errors.As(err, new(*daemon.ConfigError)))
	}
	if err := d.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return failure(env, "run", err)
	}
	return ExitOK
}

// raiseGOMAXPROCS gives the agent at least 8 Go schedulers (Ps), however
// few CPUs it has, unless GOMAXPROCS is set in the environment. The agent
// spends its time in CPU-heavy system calls (a broadcast frame is flooded
// by the kernel to every port of the bridge inside sendto; netlink), and a
// goroutine in such a call holds its P: with 2 Ps on 2 CPUs, libvirt's
// socket reader waited 80-100 ms for a P in a storm of 1,000 landings, and
// 1,500 of 2,000 first frames missed 50 ms; with 8 Ps, none did
// (cmd/rarp-announce BenchmarkStorm, docs/agent-tests.md). The kernel
// still shares the same CPUs among the threads; the Ps only stop runnable
// goroutines from queueing behind blocked ones.
//
// Out of uplinks, where a send is short, one P halved the agent's CPU in
// the same storm on 4 bridges (the runtime stops waking idle threads),
// but on 40 bridges of 50 taps (a bridge per network, as Neutron's Linux
// bridge agent builds them) 20-36 of the 2,000 first frames waited over
// 50 ms behind system calls holding the only P, against none with 8
// (variants prefetch-gomaxprocs-1, prefetch-40x50-taps-gomaxprocs-1); so
// 8 everywhere.
func raiseGOMAXPROCS() {
	if os.Getenv("GOMAXPROCS") == "" && runtime.GOMAXPROCS(0) < minProcs {
		runtime.GOMAXPROCS(minProcs)
	}
}

const minProcs = 8
