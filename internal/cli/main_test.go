package cli_test

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/rarp-announce/rarp-announce/internal/testbin"
)

// The tests of this package run the commands as a user would: the
// rarp-announce binary (built once, with the race detector) in network
// namespaces, next to Debian's rarpd and the peer harness's load
// generator, rarpbench (built from test/peer/rarpbench, its own module).
var binary, rarpbench string

func TestMain(m *testing.M) {
	var cleanBin, cleanBench func()
	var err error
	if binary, cleanBin, err = testbin.Build("../../cmd/rarp-announce", "rarp-announce", "-race"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if rarpbench, cleanBench, err = testbin.Build("../../test/peer/rarpbench", "rarpbench"); err != nil {
		cleanBin()
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	cleanBin()
	cleanBench()
	os.Exit(code)
}

type result = testbin.Result

func run(t *testing.T, cmd *exec.Cmd) result { return testbin.Run(t, cmd) }

// daemon is a long-running process whose stderr the test reads line by
// line as it comes.
type daemon struct {
	*testbin.Proc
	t *testing.T
}

func startDaemon(t *testing.T, cmd *exec.Cmd) *daemon {
	t.Helper()
	return &daemon{testbin.Start(t, cmd), t}
}

// stop ends the process with SIGTERM and returns its exit code.
func (d *daemon) stop() int {
	d.t.Helper()
	code, _ := d.Stop(10 * time.Second)
	return code
}

// waitFrom waits for a line after mark that contains every one of subs,
// and returns it.
func (d *daemon) waitFrom(mark int, timeout time.Duration, subs ...string) string {
	d.t.Helper()
	return d.WaitLine(mark, timeout, fmt.Sprintf("%q", subs), func(l string) bool {
		for _, s := range subs {
			if !strings.Contains(l, s) {
				return false
			}
		}
		return true
	})
}

// linesFrom returns the lines after mark that contain sub.
func (d *daemon) linesFrom(mark int, sub string) []string {
	var out []string
	for _, l := range d.Lines(mark) {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return out
}
