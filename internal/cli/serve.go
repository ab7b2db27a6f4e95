package cli

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/rarp-announce/rarp-announce/internal/httpapi"
	"github.com/rarp-announce/rarp-announce/internal/logging"
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

func runServe(ctx context.Context, env *Env, args []string) int {
	fs := flagSet(env, "serve", "--interface IF[,IF...] --ethers FILE [--map FILE] [flags]", serveExamples)
	var (
		ifaces    listFlag
		ethers    string
		mapFile   string
		offLink   bool
		bootDir   string
		obs       observeFlags
		coalesce  time.Duration
		noWatch   bool
		arpAdvise bool
	)
	fs.Var(&ifaces, "interface", "answer on interface `IF`; several comma-separated or repeated (required)")
	fs.Var(&ifaces, "i", "short for --interface `IF`")
	fs.StringVar(&ethers, "ethers", "", "ethers(5) file: \"MAC IPv4-or-host-name\" per line")
	fs.StringVar(&mapFile, "map", "", "YAML mapping file (mappings: [{mac, ip or host, interface}]); wins over --ethers")
	fs.BoolVar(&offLink, "off-link", false, "also answer with addresses off the interface's subnet, with sender IP 0.0.0.0 (rarpd -o)")
	fs.StringVar(&bootDir, "boot-dir", "", "answer only if this directory has a file named by the address in 8 upper-case hex digits (rarpd without -e)")
	obs.register(fs, "info", "console")
	fs.DurationVar(&coalesce, "coalesce", responder.DefaultCoalesce, "under load, wait this long for more requests before answering the next batch (fewer wake-ups per reply); 0 turns it off")
	fs.BoolVar(&noWatch, "no-watch", false, "reload the table only on SIGHUP, not when its files change")
	fs.BoolVar(&arpAdvise, "arp-advise", false, "add each answered client to this host's neighbour (ARP) table, as rarpd does, for boot PROMs that cannot answer ARP")
	if code, ok := parse(env, fs, args); !ok {
		return code
	}
	metricsAddr, logLevel, logFormat := obs.MetricsAddress, obs.LogLevel, obs.LogFormat
	switch {
	case len(ifaces) == 0:
		return usageErr(env, "serve", "--interface is required")
	case ethers == "" && mapFile == "":
		return usageErr(env, "serve", "give the table: --ethers FILE, --map FILE or both")
	case coalesce < 0:
		return usageErr(env, "serve", "--coalesce must not be negative")
	}
	if coalesce == 0 {
		coalesce = -1 // responder: negative = off
	}
	base, err := zapcore.ParseLevel(logLevel)
	if err != nil {
		return usageErr(env, "serve", fmt.Sprintf("--log-level: %v", err))
	}
	if logFormat != "console" && logFormat != "json" {
		return usageErr(env, "serve", fmt.Sprintf("--log-format: %q is neither console nor json", logFormat))
	}
	// The agent's logger: one format for every command of the binary.
	log, level, err := logging.New(logLevel, logFormat)
	if err != nil {
		return usageErr(env, "serve", err.Error())
	}
	defer func() { _ = log.Sync() }()

	holder := rarptable.NewHolder(nil)
	tableMetrics := rarptable.NewMetrics(holder)
	reloader := &rarptable.Reloader{
		Loader:  &rarptable.Loader{Files: rarptable.Files{Ethers: ethers, Map: mapFile}},
		Holder:  holder,
		Logger:  log,
		Metrics: tableMetrics,
	}
	if err := reloader.Reload(ctx, "start"); err != nil {
		fmt.Fprintf(env.Stderr, "rarp-announce serve: table not loaded:\n%v\n", err)
		return ExitUsage
	}
	for _, i := range holder.Load().Interfaces() {
		if !contains(ifaces, i) {
			log.Warn("the table has mappings for an interface this server does not answer on", zap.String("interface", i))
		}
	}

	metrics := responder.NewMetrics()
	r, err := responder.New(responder.Config{
		Interfaces: ifaces,
		Table:      holder,
		OffLink:    offLink,
		BootDir:    bootDir,
		Logger:     log,
		Metrics:    metrics,
		Coalesce:   coalesce,
		ARPAdvise:  arpAdvise,
	})
	if err != nil {
		return failure(env, "serve", err)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if metricsAddr != "" {
		// The agent's registry and HTTP endpoint (/metrics, /healthz,
		// /readyz), so dashboards list serve's hosts like the agent's.
		reg := httpapi.NewRegistry()
		reg.MustRegister(metrics, tableMetrics)
		srv, err := httpapi.Listen(metricsAddr, reg, nil, log.Named("http"))
		if err != nil {
			return failure(env, "serve", fmt.Errorf("--metrics-address: %w", err))
		}
		go func() {
			if err := srv.Serve(ctx); err != nil {
				log.Error("metrics server", zap.Error(err))
			}
		}()
		log.Info("metrics", zap.String("address", srv.Addr()))
	}
	if !noWatch {
		go func() {
			if err := reloader.Watch(ctx); err != nil {
				log.Error("table files are not watched; reload with SIGHUP", zap.Error(err))
			}
		}()
	}

	logging.HandleLevelSignals(ctx, log, level, base)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				_ = reloader.Reload(ctx, "SIGHUP")
				if err := r.RefreshBootDir(); err != nil {
					log.Error("boot directory not read; keeping the previous list", zap.Error(err))
				}
			}
		}
	}()

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

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
