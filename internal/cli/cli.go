// Package cli implements the rarp-announce command line: one file per
// subcommand, each registering itself in init, so that cmd/rarp-announce
// stays a one-line main and tests can run a command in-process.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// Exit codes, the same for every subcommand.
const (
	ExitOK      = 0
	ExitFailure = 1 // the command could not do its job
	ExitUsage   = 2 // bad flags, arguments or configuration
)

// Env is what a command reads and writes besides its arguments.
type Env struct {
	Stdout io.Writer
	Stderr io.Writer
}

// Command is one subcommand.
type Command struct {
	Name    string
	Summary string
	Run     func(ctx context.Context, env *Env, args []string) int
}

// commandList is every subcommand, in the order usage lists them: one
// explicit list, not registrations scattered over init functions.
func commandList() []*Command {
	return []*Command{
		{Name: "announce", Summary: "announce a running domain's NICs now, as the agent would", Run: runAnnounce},
		{Name: "query", Summary: "ask the RARP servers on an interface which IPv4 address a MAC has", Run: runQuery},
		{Name: "run", Summary: "run the agent: announce every VM that lands on this host", Run: runRun},
		{Name: "send", Summary: "announce MACs on an interface now (by hand)", Run: runSend},
		{Name: "serve", Summary: "answer RARP requests from /etc/ethers or a mapping file (like rarpd)", Run: runServe},
		{Name: "verify", Summary: "check now that the network delivers a running domain's traffic to this host", Run: runVerify},
		{Name: "version", Summary: "print the version", Run: runVersion},
	}
}

// lookup returns the subcommand name, or nil.
func lookup(name string) *Command {
	for _, c := range commandList() {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// Main runs the command line args (without the program name) and returns
// the exit code. SIGINT and SIGTERM cancel the command's context.
func Main(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return Run(ctx, &Env{Stdout: os.Stdout, Stderr: os.Stderr}, args)
}

// Run dispatches args to a subcommand.
func Run(ctx context.Context, env *Env, args []string) int {
	if len(args) == 0 {
		usage(env.Stderr)
		return ExitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		if len(args) > 1 {
			c := lookup(args[1])
			if c == nil {
				fmt.Fprintf(env.Stderr, "rarp-announce: unknown command %q\n\n", args[1])
				usage(env.Stderr)
				return ExitUsage
			}
			return c.Run(ctx, env, []string{"--help"})
		}
		usage(env.Stdout)
		return ExitOK
	case "-version", "--version", "-V":
		return lookup("version").Run(ctx, env, args[1:])
	}
	c := lookup(args[0])
	if c == nil {
		fmt.Fprintf(env.Stderr, "rarp-announce: unknown command %q\n\n", args[0])
		usage(env.Stderr)
		return ExitUsage
	}
	return c.Run(ctx, env, args[1:])
}

func usage(w io.Writer) {
	fmt.Fprint(w, `rarp-announce makes switches follow live-migrated VMs: it sends RARP
announces from a VM's MACs when the VM lands on this host, and answers RARP
requests from a mapping table.

Usage: rarp-announce COMMAND [flags]

Commands:
`)
	for _, c := range commandList() {
		fmt.Fprintf(w, "  %-10s %s\n", c.Name, c.Summary)
	}
	fmt.Fprint(w, "\nRun 'rarp-announce COMMAND --help' for a command's flags and examples.\n")
}

// flagSet returns a FlagSet whose errors the caller reports itself, with
// usage text that ends in examples.
func flagSet(env *Env, name, synopsis, examples string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {
		w := env.Stdout
		fmt.Fprintf(w, "Usage: rarp-announce %s %s\n\nFlags:\n", name, synopsis)
		fs.SetOutput(w)
		fs.VisitAll(func(f *flag.Flag) {
			typ, help := flag.UnquoteUsage(f)
			dash := "--"
			if len(f.Name) == 1 {
				dash = "-"
			}
			fmt.Fprintf(w, "  %s%s %s\n    \t%s", dash, f.Name, typ, strings.ReplaceAll(help, "\n", "\n    \t"))
			switch f.DefValue {
			case "", "false", "0", "0s", "[]":
			default:
				fmt.Fprintf(w, " (default %s)", f.DefValue)
			}
			fmt.Fprintln(w)
		})
		fs.SetOutput(io.Discard)
		if examples != "" {
			fmt.Fprintf(w, "\nExamples:\n%s", examples)
		}
	}
	return fs
}

// parse parses args; ok is false when the command must return code.
func parse(env *Env, fs *flag.FlagSet, args []string) (code int, ok bool) {
	// The flag package prints usage on every error; only --help should.
	printUsage := fs.Usage
	fs.Usage = func() {}
	err := fs.Parse(args)
	fs.Usage = printUsage
	if errors.Is(err, flag.ErrHelp) {
		printUsage()
		return ExitOK, false
	}
	if err != nil {
		// The flag package says "flag -x"; the documented spelling is --x.
		msg := strings.Replace(err.Error(), "flag -", "flag --", 1)
		msg = strings.Replace(msg, "flag provided but not defined: -", "unknown flag --", 1)
		return usageErr(env, fs.Name(), msg), false
	}
	if fs.NArg() > 0 {
		return usageErr(env, fs.Name(), fmt.Sprintf("unexpected argument %q", fs.Arg(0))), false
	}
	return 0, true
}

// usageErr reports a usage or configuration error and returns ExitUsage.
func usageErr(env *Env, cmd, msg string) int {
	fmt.Fprintf(env.Stderr, "rarp-announce %s: %s\n(see 'rarp-announce %s --help')\n", cmd, msg, cmd)
	return ExitUsage
}

// failure reports a runtime failure and returns ExitFailure.
func failure(env *Env, cmd string, err error) int {
	fmt.Fprintf(env.Stderr, "rarp-announce %s: %v\n", cmd, err)
	return ExitFailure
}

// startFailed is the exit of a command that could not start: a
// configuration error (usage, exit 2) says what was wrong on its own
// lines; anything else is a failure (exit 1).
func startFailed(env *Env, cmd, what string, err error, usage bool) int {
	if usage {
		fmt.Fprintf(env.Stderr, "rarp-announce %s: %s:\n%v\n", cmd, what, err)
		return ExitUsage
	}
	return failure(env, cmd, err)
}

// observeFlags are the logging and metrics flags of the long-running
// commands (run, serve): the same names, meanings and values.
type observeFlags struct {
	MetricsAddress, LogLevel, LogFormat string
}

// register adds the flags to fs; level and format are the defaults (empty:
// the configuration's).
func (o *observeFlags) register(fs *flag.FlagSet, level, format string) {
	fs.StringVar(&o.MetricsAddress, "metrics-address", "", "host:port for /metrics, /healthz, /readyz")
	fs.StringVar(&o.LogLevel, "log-level", level, "debug, info, warn or error (SIGUSR1 switches to debug, SIGUSR2 back)")
	fs.StringVar(&o.LogFormat, "log-format", format, "console or json")
}
