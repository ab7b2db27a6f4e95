package cli_test

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
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
	t     *testing.T
	cmd   *exec.Cmd
	mu    sync.Mutex
	cond  *sync.Cond
	lines []string
	done  chan struct{}
	err   error
}

func startDaemon(t *testing.T, cmd *exec.Cmd) *daemon {
	t.Helper()
	d := &daemon{t: t, cmd: cmd, done: make(chan struct{})}
	d.cond = sync.NewCond(&d.mu)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatalf("%v: %v", cmd.Args, err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			d.mu.Lock()
			d.lines = append(d.lines, sc.Text())
			d.cond.Broadcast()
			d.mu.Unlock()
		}
		err := cmd.Wait()
		d.mu.Lock()
		d.err = err
		close(d.done)
		d.cond.Broadcast()
		d.mu.Unlock()
	}()
	t.Cleanup(func() { d.stop() })
	return d
}

// stop ends the process with SIGTERM and returns its exit code.
func (d *daemon) stop() int {
	select {
	case <-d.done:
	default:
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.done:
		case <-time.After(10 * time.Second):
			_ = d.cmd.Process.Kill()
			<-d.done
		}
	}
	if ee, ok := d.err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return 0
}

func (d *daemon) signal(s syscall.Signal) {
	if err := d.cmd.Process.Signal(s); err != nil {
		d.t.Fatal(err)
	}
}

// mark returns the number of lines so far, for waitFrom.
func (d *daemon) mark() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.lines)
}

// waitFrom waits for a line after mark that contains every one of subs,
// and returns it.
func (d *daemon) waitFrom(mark int, timeout time.Duration, subs ...string) string {
	d.t.Helper()
	deadline := time.Now().Add(timeout)
	timer := time.AfterFunc(timeout, func() { d.mu.Lock(); d.cond.Broadcast(); d.mu.Unlock() })
	defer timer.Stop()
	d.mu.Lock()
	defer d.mu.Unlock()
	for i := mark; ; {
		for ; i < len(d.lines); i++ {
			ok := true
			for _, s := range subs {
				if !strings.Contains(d.lines[i], s) {
					ok = false
					break
				}
			}
			if ok {
				return d.lines[i]
			}
		}
		select {
		case <-d.done:
			d.t.Fatalf("%s exited (%v) without logging %q:\n%s", d.cmd.Args[0], d.err, subs, strings.Join(d.lines, "\n"))
		default:
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("no log line with %q within %s:\n%s", subs, timeout, strings.Join(d.lines, "\n"))
		}
		d.cond.Wait()
	}
}

// linesFrom returns the lines after mark that contain sub.
func (d *daemon) linesFrom(mark int, sub string) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for _, l := range d.lines[mark:] {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return out
}
