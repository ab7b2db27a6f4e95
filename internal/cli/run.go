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

// raiseGOMAXPROCS gives the agent at least 2 Go schedulers (Ps), however
// few CPUs it has (a one-CPU VM, a container limited to one CPU), unless
// GOMAXPROCS is set in the environment. A goroutine in a system call holds
// its P until the runtime's monitor takes it back, which can take
// milliseconds: with one P, 20-36 of 2,000 first frames in a storm on 40
// bridges waited over 50 ms behind sends and netlink calls holding the
// only P (cmd/rarp-announce BenchmarkStorm, variant
// prefetch-40x50-taps-gomaxprocs-1); with 2, none did.
//
// More Ps than CPUs cost CPU instead: the runtime wakes idle threads for
// each goroutine made runnable and parks them again (a quarter of the
// agent's samples in the storm at 8 Ps on 2 CPUs). From b416b12 the agent
// took 8, when each frame on the bridge device spent 0.3 ms in sendto
// flooding the bridge's ports and 2 Ps let libvirt's socket reader wait
// 80-100 ms; out of the uplinks (the default since) a send is short, and
// 2 Ps on 2 CPUs left none of 2,000 first frames over 50 ms on 4 bridges
// of 500 taps or 40 of 50, for up to a fifth less CPU than 8 (0-20% in
// the runs of docs/agent-tests.md, "Stop 24" and "Stop 27"; the machine's
// noise is as large).
func raiseGOMAXPROCS() {
	if os.Getenv("GOMAXPROCS") == "" && runtime.GOMAXPROCS(0) < minProcs {
		runtime.GOMAXPROCS(minProcs)
	}
}

const minProcs = 2
