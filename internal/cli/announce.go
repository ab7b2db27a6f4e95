package cli

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/rarp-announce/rarp-announce/internal/agent"
	"github.com/rarp-announce/rarp-announce/internal/daemon"
	"github.com/rarp-announce/rarp-announce/internal/logging"
	"github.com/rarp-announce/rarp-announce/pkg/announce"
	"github.com/rarp-announce/rarp-announce/pkg/fdb"
	"github.com/rarp-announce/rarp-announce/pkg/libvirtwatch"
	"github.com/rarp-announce/rarp-announce/pkg/plan"
	"github.com/rarp-announce/rarp-announce/pkg/portwatch"
	"github.com/rarp-announce/rarp-announce/pkg/qmp"
)

func init() {
	Register(&Command{Name: "announce", Summary: "announce a running domain's NICs now, as the agent would", Run: runAnnounce})
}

const announceExamples = `  # The agent missed a landing (or you want to be sure): announce every NIC of vm1.
  rarp-announce announce --domain vm1

  # By UUID, and through QEMU (QMP announce-self; needs the read-write libvirt socket).
  rarp-announce announce --domain 6c61622d-766d-4000-8000-000000000001 --strategy qemu
`

func runAnnounce(ctx context.Context, env *Env, args []string) int {
	fs := flagSet(env, "announce", "--domain NAME|UUID [--strategy host|qemu|ovs] [flags]", announceExamples)
	var path, domain, strategy string
	var over daemon.Overrides
	fs.StringVar(&domain, "domain", "", "domain name or UUID (required)")
	fs.StringVar(&strategy, "strategy", "", "force a strategy for every NIC that supports it: host, qemu or ovs (default: per NIC kind, from the config)")
	fs.StringVar(&path, "config", "", "agent config to take the schedule, strategies and libvirt socket from")
	fs.StringVar(&over.LibvirtSocket, "libvirt-socket", "", "libvirt unix socket (overrides libvirt.socket)")
	if code, ok := parse(env, fs, args); !ok {
		return code
	}
	if domain == "" {
		return usageErr(env, "announce", "--domain is required")
	}
	switch plan.Strategy(strategy) {
	case "", plan.Host, plan.QEMU, plan.OVS:
	default:
		return usageErr(env, "announce", fmt.Sprintf("--strategy: %q is not host, qemu or ovs", strategy))
	}
	over.LogLevel = "warn"
	cfg, err := daemon.Load(configPath(path), over)
	if err != nil {
		fmt.Fprintf(env.Stderr, "rarp-announce announce: invalid configuration:\n%v\n", err)
		return ExitUsage
	}
	log, _, err := logging.New("warn", "console")
	if err != nil {
		return failure(env, "announce", err)
	}
	defer log.Sync()

	// One connection for everything: read-write only if QMP may be used.
	lcfg := daemon.LibvirtConfig(cfg, log, nil)
	lcfg.ReadOnly = strategy != string(plan.QEMU) && (strategy != "" || !cfg.UsesQEMU())
	conn, err := libvirtwatch.Dial(ctx, lcfg)
	if err != nil {
		return failure(env, "announce", fmt.Errorf("libvirt: %w", err))
	}
	defer conn.Close()
	ref, err := conn.LookupDomain(ctx, domain)
	if err != nil {
		return failure(env, "announce", err)
	}

	var mu sync.Mutex
	ann := announce.New(announce.Options{
		Pacing: announce.Pacing{PerSecond: cfg.Pacing.FramesPerSecond, Burst: cfg.Pacing.Burst},
		OnFrame: func(s announce.Sent) {
			mu.Lock()
			defer mu.Unlock()
			fmt.Fprintln(env.Stdout, formatSent(s, cfg.Schedule.Rounds))
		},
	})
	defer ann.Close()
	ports, err := portwatch.New(ctx, portwatch.Options{Logger: log})
	if err != nil {
		return failure(env, "announce", err)
	}
	defer ports.Close()
	deps := agent.Deps{Libvirt: conn, Ports: ports, Announcer: ann, Logger: log}
	if cfg.FDBRepair {
		if r, err := fdb.New(nil, nil); err == nil {
			defer r.Close()
			deps.FDB = r
		}
	}
	if cfg.UsesQEMU() || strategy == string(plan.QEMU) {
		deps.QEMU = &qmp.Announcer{Monitor: func(ctx context.Context, uuid, cmd string) (string, error) {
			return conn.QEMUMonitorCommand(ctx, libvirtwatch.DomainRef{UUID: uuid}, cmd)
		}}
	}
	if cfg.UsesOVS() || strategy == string(plan.OVS) {
		o, err := daemon.NewOVS(cfg, nil, nil, log, func(s announce.Sent) {
			mu.Lock()
			defer mu.Unlock()
			fmt.Fprintln(env.Stdout, formatSent(s, cfg.Schedule.Rounds))
		})
		if err != nil {
			return failure(env, "announce", err)
		}
		defer func() {
			// Let the schedule finish before closing.
			for o.Running() > 0 {
				time.Sleep(20 * time.Millisecond)
			}
			o.Close()
		}()
		deps.OVS = o
	}
	settings := daemon.Settings(cfg)
	// By hand the port should be there already: do not wait long.
	settings.ReadyTimeout = min(settings.ReadyTimeout, 5*time.Second)
	a := agent.New(deps, settings)
	results, err := a.AnnounceDomain(ctx, ref, plan.Strategy(strategy))
	if err != nil {
		return failure(env, "announce", err)
	}
	bad := 0
	for _, r := range results {
		for _, h := range r.Handles {
			<-h.Done()
			if h.Err() != nil && r.Err == nil {
				r.Result, r.Err = agent.ResultFailed, h.Err()
			}
		}
		line := fmt.Sprintf("%s %s %s: %s", ref.Name, r.Target.NIC.MAC, r.Target.Strategy, r.Result)
		switch {
		case r.Err != nil:
			line += ": " + r.Err.Error()
		case r.Target.Skip != "":
			line += ": " + r.Target.Skip
		case r.Target.Strategy == plan.Host:
			line += fmt.Sprintf(" on %s", r.Target.Device)
		case r.Target.Strategy == plan.QEMU:
			// QEMU sends the frames on its own schedule: nothing to print
			// per frame, so say what it was asked.
			line += fmt.Sprintf(": QEMU announce-self on %s (%d frames over %v)", r.Target.Alias, cfg.Schedule.Rounds, burstLength(settings.Schedule))
		}
		fmt.Fprintln(env.Stdout, line)
		if r.Result != agent.ResultStarted && r.Result != agent.ResultSkipped {
			bad++
		}
	}
	if bad > 0 {
		return failure(env, "announce", fmt.Errorf("%d NIC(s) of %s not announced", bad, ref.Name))
	}
	return ExitOK
}

// burstLength is when the last frame of one burst goes out.
func burstLength(s announce.Schedule) time.Duration {
	b := s.Burst()
	if len(b) == 0 {
		return 0
	}
	return b[len(b)-1]
}
