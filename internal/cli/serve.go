package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/rarp-announce/rarp-announce/internal/app"
	"github.com/rarp-announce/rarp-announce/internal/config"
	"github.com/rarp-announce/rarp-announce/pkg/rarptable"
	"github.com/rarp-announce/rarp-announce/pkg/responder"
)

const serveExamples = `  # Answer diskless hosts on eth0 from /etc/ethers, as "rarpd -e eth0" does.
  rarp-announce serve --interface eth0 --ethers /etc/ethers

  # Two VLANs, a YAML mapping file next to ethers, Prometheus metrics on :9410.
  rarp-announce serve -i eth0.100,eth0.200 --ethers /etc/ethers --map /etc/rarp-announce/map.yaml \
      --metrics-address 127.0.0.1:9410

  # rarpd's defaults: answer only when /tftpboot holds a boot file for the address.
  rarp-announce serve -i eth0 --ethers /etc/ethers --boot-dir /tftpboot

Signals: SIGHUP reloads the table (and re-resolves host names), SIGUSR1 logs at
debug level (every request), SIGUSR2 goes back to the --log-level. The table also
reloads when its files change. A table with a bad line is refused and the
previous one keeps serving; the log says file:line: reason.
`

// listFlag collects comma-separated or repeated values.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error {
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*l = append(*l, p)
		}
	}
	return nil
}

// serveFlags are serve's flags.
type serveFlags struct {
	ifaces          listFlag
	ethers, mapFile string
	offLink         bool
	bootDir         string
	obs             observeFlags
	coalesce        time.Duration
	noWatch         bool
	arpAdvise       bool
}

func (f *serveFlags) register(fs *flag.FlagSet) {
	fs.Var(&f.ifaces, "interface", "answer on interface `IF`; several comma-separated or repeated (required)")
	fs.Var(&f.ifaces, "i", "short for --interface `IF`")
	fs.StringVar(&f.ethers, "ethers", "", "ethers(5) file: \"MAC IPv4-or-host-name\" per line")
	fs.StringVar(&f.mapFile, "map", "", "YAML mapping file (mappings: [{mac, ip or host, interface}]); wins over --ethers")
	fs.BoolVar(&f.offLink, "off-link", false, "also answer with addresses off the interface's subnet, with sender IP 0.0.0.0 (rarpd -o)")
	fs.StringVar(&f.bootDir, "boot-dir", "", "answer only if this directory has a file named by the address in 8 upper-case hex digits (rarpd without -e)")
	// The agent's defaults: one log format for the binary.
	def := config.Default().Log
	f.obs.register(fs, def.Level, def.Format)
	fs.DurationVar(&f.coalesce, "coalesce", responder.DefaultCoalesce, "under load, wait this long for more requests before answering the next batch (fewer wake-ups per reply); 0 turns it off")
	fs.BoolVar(&f.noWatch, "no-watch", false, "reload the table only on SIGHUP, not when its files change")
	fs.BoolVar(&f.arpAdvise, "arp-advise", false, "add each answered client to this host's neighbour (ARP) table, as rarpd does, for boot PROMs that cannot answer ARP")
}

// check returns what is wrong with the flags, or "".
func (f *serveFlags) check() string {
	switch {
	case len(f.ifaces) == 0:
		return "--interface is required"
	case f.ethers == "" && f.mapFile == "":
		return "give the table: --ethers FILE, --map FILE or both"
	case f.coalesce < 0:
		return "--coalesce must not be negative"
	}
	for _, name := range f.ifaces {
		if err := rarptable.CheckInterfaceName(name); err != nil {
			return fmt.Sprintf("--interface: %v", err)
		}
	}
	if f.obs.MetricsAddress != "" {
		if err := config.CheckListenAddress(f.obs.MetricsAddress); err != nil {
			return fmt.Sprintf("--metrics-address: %v", err)
		}
	}
	if f.bootDir != "" {
		if err := config.CheckBootDir(f.bootDir); err != nil {
			return fmt.Sprintf("--boot-dir: %v", err)
		}
	}
	if _, err := zapcore.ParseLevel(f.obs.LogLevel); err != nil {
		return fmt.Sprintf("--log-level: %v", err)
	}
	if f.obs.LogFormat != "console" && f.obs.LogFormat != "json" {
		return fmt.Sprintf("--log-format: %q is neither console nor json", f.obs.LogFormat)
	}
	return ""
}

func runServe(ctx context.Context, env *Env, args []string) int {
	fs := flagSet(env, "serve", "--interface IF[,IF...] --ethers FILE [--map FILE] [flags]", serveExamples)
	var f serveFlags
	f.register(fs)
	if code, ok := parse(env, fs, args); !ok {
		return code
	}
	if msg := f.check(); msg != "" {
		return usageErr(env, "serve", msg)
	}
	coalesce := f.coalesce
	if coalesce == 0 {
		coalesce = -1 // responder: negative = off
	}
	// The agent's logger: one format for every command of the binary.
	// Buffered: a journald that reads late drops lines instead of
	// stalling the receive loop; sampled: debug logs every request.
	logs, err := app.NewLog(config.Log{Level: f.obs.LogLevel, Format: f.obs.LogFormat}, true)
	if err != nil {
		return usageErr(env, "serve", err.Error())
	}
	defer logs.Close()
	logs.CatchSignals() // a SIGHUP while a large table loads must not kill the server
	log := logs.Sampled()

	reg := app.NewRegistry()
	rp, err := app.NewResponder(ctx, rarptable.Files{Ethers: f.ethers, Map: f.mapFile}, responder.Config{
		Interfaces: f.ifaces, OffLink: f.offLink, BootDir: f.bootDir, Coalesce: coalesce, ARPAdvise: f.arpAdvise,
	}, log, reg, false)
	if err != nil {
		if ctx.Err() != nil {
			// SIGTERM while the table loads (a host name's lookup
			// waits on DNS): a stop, not a bad table.
			log.Info("stopped before the table was loaded", zap.Error(err))
			return ExitOK
		}
		return startFailed(env, "serve", "table not loaded", err, errors.As(err, new(*app.TableError)))
	}
	r, reloader := rp.Server, rp.Reloader
	for _, i := range rp.Table.Load().Interfaces() {
		if !slices.Contains(f.ifaces, i) {
			log.Warn("the table has mappings for an interface this server does not answer on", zap.String("interface", i))
		}
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := serveMetrics(ctx, f.obs.MetricsAddress, log, reg); err != nil {
		return failure(env, "serve", fmt.Errorf("--metrics-address: %w", err))
	}
	if !f.noWatch {
		go func() {
			if err := reloader.Watch(ctx); err != nil {
				log.Error("table files are not watched; reload with SIGHUP", zap.Error(err))
			}
		}()
	}
	logs.HandleSignals(ctx, func() {
		_ = reloader.Reload(ctx, "SIGHUP")
		if err := r.RefreshBootDir(); err != nil {
			log.Error("boot directory not read; keeping the previous list", zap.Error(err))
		}
	})

	err = r.Run(ctx)
	for name, s := range r.Stats() {
		log.Info("stopped", zap.String("interface", name), zap.Uint64("requests", s.Requests), zap.Uint64("replies", s.Replies),
			zap.Uint64("unknown", s.Unknown), zap.Uint64("off_link", s.OffLink), zap.Uint64("send_errors", s.SendErrors))
	}
	if err != nil {
		return failure(env, "serve", err)
	}
	return ExitOK
}

// serveMetrics serves the agent's registry and HTTP endpoint (/metrics,
// /healthz, /readyz) on addr until ctx ends, so dashboards list serve's
// hosts like the agent's; nothing if addr is empty.
func serveMetrics(ctx context.Context, addr string, log *zap.Logger, reg *prometheus.Registry) error {
	if addr == "" {
		return nil
	}
	srv, err := app.ListenHTTP(addr, reg, nil, log)
	if err != nil {
		return err
	}
	go func() {
		if err := srv.Serve(ctx); err != nil {
			log.Error("metrics server", zap.Error(err))
		}
	}()
	log.Info("metrics", zap.String("address", srv.Addr()))
	return nil
}
