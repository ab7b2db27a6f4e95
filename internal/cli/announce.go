package cli

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/rarp-announce/rarp-announce/internal/agent"
	"github.com/rarp-announce/rarp-announce/internal/app"
	"github.com/rarp-announce/rarp-announce/internal/config"
	"github.com/rarp-announce/rarp-announce/internal/daemon"
	"github.com/rarp-announce/rarp-announce/pkg/announce"
	"github.com/rarp-announce/rarp-announce/pkg/libvirtconn"
	"github.com/rarp-announce/rarp-announce/pkg/plan"
)

const announceExamples = `  # The agent missed a landing (or you want to be sure): announce every NIC of vm1.
  rarp-announce announce --domain vm1

  # By UUID, and through QEMU (QMP announce-self; needs the read-write libvirt socket).
  rarp-announce announce --domain 6c61622d-766d-4000-8000-000000000001 --strategy qemu
`

func runAnnounce(ctx context.Context, env *Env, args []string) int {
	fs := flagSet(env, "announce", "--domain NAME|UUID [--strategy host|qemu|ovs] [flags]", announceExamples)
	var path, domain string
	var force plan.Strategy
	var over daemon.Overrides
	fs.StringVar(&domain, "domain", "", "domain name or UUID (required)")
	fs.TextVar(&force, "strategy", plan.Strategy(""), "force a strategy for every NIC that supports it: host, qemu or ovs (default: per NIC kind, from the config)")
	fs.StringVar(&path, "config", "", "agent config to take the schedule, strategies and libvirt socket from")
	fs.StringVar(&over.LibvirtSocket, "libvirt-socket", "", "libvirt unix socket (overrides libvirt.socket)")
	if code, ok := parse(env, fs, args); !ok {
		return code
	}
	if domain == "" {
		return usageErr(env, "announce", "--domain is required")
	}
	if force == plan.Skip {
		return usageErr(env, "announce", "--strategy: skip announces nothing; want host, qemu or ovs")
	}
	over.LogLevel = "warn"
	cfg, err := daemon.Load(configPath(path), over)
	if err != nil {
		return startFailed(env, "announce", "invalid configuration", err, true)
	}
	// The binary's logger, at warn: the output is the frames and results.
	logs, err := app.NewLog(cfg.Log, false)
	if err != nil {
		return failure(env, "announce", err)
	}
	defer logs.Close()
	log := logs.Logger

	// Read-only for the domain's state and XML; the read-write socket is
	// dialed only when a NIC of this domain is planned on the qemu
	// strategy (issue 10), at its first QMP command.
	conn, ref, err := openDomain(ctx, cfg, log, domain)
	if err != nil {
		return failure(env, "announce", err)
	}
	defer conn.Close()

	rw := &lazyConn{cfg: daemon.QMPConfig(cfg, log, nil)}
	defer rw.Close()
	parts, err := app.Build(ctx, cfg, announceOptions(env, cfg, force, log, rw))
	if err != nil {
		return failure(env, "announce", err)
	}
	defer parts.Close() // after printResults waited for every schedule
	deps := parts.Deps(conn, log)
	settings := daemon.Settings(cfg)
	// By hand the port should be there already: do not wait long.
	settings.ReadyTimeout = min(settings.ReadyTimeout, 5*time.Second)
	a := agent.New(deps, settings)
	results, err := a.AnnounceDomain(ctx, ref, force)
	if err != nil {
		return failure(env, "announce", err)
	}
	bad := printResults(env, ref.Name, results, settings.Schedule)
	parts.IP.Wait() // the IP-layer frames that followed the RARPs
	if parts.QMP != nil {
		parts.QMP.Wait() // QEMU's bursts after the first (schedule.bursts)
	}
	if bad > 0 {
		return failure(env, "announce", fmt.Errorf("%d NIC(s) of %s not announced", bad, ref.Name))
	}
	return ExitOK
}

// announceOptions are the parts of a one-shot announce: every frame
// printed, FDB repair if permitted, QMP through rw if qemu may be used.
func announceOptions(env *Env, cfg *config.Config, force plan.Strategy, log *zap.Logger, rw *lazyConn) app.Options {
	var mu sync.Mutex
	o := app.Options{Logger: log, Force: force, FDBOptional: true,
		OnFrame: func(s announce.Sent) {
			mu.Lock()
			defer mu.Unlock()
			fmt.Fprintln(env.Stdout, formatSent(s, cfg.Schedule.Rounds))
		}}
	if cfg.UsesQEMU() || force == plan.QEMU {
		o.Monitor = rw.monitor
	}
	return o
}

// printResults waits for each announce of the host and ovs strategies to
// end (on its handles), prints one line per NIC and returns how many were
// not announced.
func printResults(env *Env, domain string, results []agent.NICResult, sched announce.Schedule) (bad int) {
	for _, r := range results {
		for _, h := range r.Handles {
			<-h.Done()
			if h.Err() != nil && r.Err == nil {
				r.Result, r.Err = agent.ResultFailed, h.Err()
			}
		}
		line := fmt.Sprintf("%s %s %s: %s", domain, r.Target.NIC.MAC, r.Target.Strategy, r.Result)
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
			line += fmt.Sprintf(": QEMU announce-self on %s (%d frames over %v)", r.Target.Alias, sched.Rounds, burstLength(sched))
		}
		fmt.Fprintln(env.Stdout, line)
		if r.Result != agent.ResultStarted && r.Result != agent.ResultSkipped {
			bad++
		}
	}
	return bad
}

// burstLength is when the last frame of one burst goes out.
func burstLength(s announce.Schedule) time.Duration {
	b := s.Burst()
	if len(b) == 0 {
		return 0
	}
	return b[len(b)-1]
}

// openDomain dials libvirt's read-only socket, as the agent does, and looks
// the domain up by name or UUID; on success the caller closes the
// connection.
func openDomain(ctx context.Context, cfg *config.Config, log *zap.Logger, domain string) (*libvirtconn.Conn, libvirtconn.DomainRef, error) {
	conn, err := libvirtconn.Dial(ctx, daemon.ConnConfig(cfg, log, nil))
	if err != nil {
		return nil, libvirtconn.DomainRef{}, fmt.Errorf("libvirt: %w", err)
	}
	ref, err := conn.LookupDomain(ctx, domain)
	if err != nil {
		conn.Close()
		return nil, libvirtconn.DomainRef{}, err
	}
	return conn, ref, nil
}

// lazyConn is the read-write libvirt connection QMP needs, dialed at the
// first monitor command: a domain with no NIC on the qemu strategy never
// opens the read-write socket.
type lazyConn struct {
	cfg  libvirtconn.Config
	mu   sync.Mutex
	conn *libvirtconn.Conn
}

func (l *lazyConn) monitor(ctx context.Context, uuid, cmd string) (string, error) {
	l.mu.Lock()
	if l.conn == nil {
		c, err := libvirtconn.Dial(ctx, l.cfg)
		if err != nil {
			l.mu.Unlock()
			return "", fmt.Errorf("libvirt (read-write, for QMP): %w", err)
		}
		l.conn = c
	}
	c := l.conn
	l.mu.Unlock()
	return c.QEMUMonitorCommand(ctx, libvirtconn.DomainRef{UUID: uuid}, cmd)
}

func (l *lazyConn) Close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn != nil {
		_ = l.conn.Close()
	}
}
