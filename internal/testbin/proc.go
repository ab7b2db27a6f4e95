package testbin

import (
	"bufio"
	"io"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rarp-announce/rarp-announce/pkg/wait"
)

// Proc is a command running in the background (a daemon under test) whose
// stderr the test reads line by line as it comes.
type Proc struct {
	Cmd *exec.Cmd
	t   testing.TB

	mu    sync.Mutex
	cond  *sync.Cond // broadcast on each line and at the exit
	lines []string
	done  chan struct{} // closed once the process has been waited for
	err   error         // cmd.Wait's
}

// Start starts cmd (its stdout discarded unless set) and collects its
// stderr. When the test ends, a process still running gets SIGTERM and,
// 10 s later, SIGKILL; if the test failed, its stderr goes to the test log.
// The exit is seen once stderr closes, so a child the command leaves behind
// holding stderr delays it: run daemons directly (or with exec in sh -c).
func Start(t testing.TB, cmd *exec.Cmd) *Proc {
	t.Helper()
	p := &Proc{Cmd: cmd, t: t, done: make(chan struct{})}
	p.cond = sync.NewCond(&p.mu)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if cmd.Stdout == nil {
		cmd.Stdout = io.Discard
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("%v: %v", cmd.Args, err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.cond.Broadcast()
			p.mu.Unlock()
		}
		err := cmd.Wait()
		p.mu.Lock()
		p.err = err
		close(p.done)
		p.cond.Broadcast()
		p.mu.Unlock()
	}()
	t.Cleanup(func() {
		if p.Running() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				<-p.done
			}
		}
		if t.Failed() {
			t.Logf("%s stderr:\n%s", cmd.Args[0], p.Stderr())
		}
	})
	return p
}

// Signal sends sig to the process, failing the test if it cannot.
func (p *Proc) Signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.Cmd.Process.Signal(sig); err != nil {
		p.t.Fatal(err)
	}
}

// Stop sends SIGTERM and waits up to timeout for the exit; it returns the
// exit code and how long the exit took, or fails the test.
func (p *Proc) Stop(timeout time.Duration) (code int, took time.Duration) {
	p.t.Helper()
	start := time.Now()
	if p.Running() {
		p.Signal(syscall.SIGTERM)
	}
	select {
	case <-p.done:
		return p.ExitCode(), time.Since(start)
	case <-time.After(timeout):
		p.t.Fatalf("%s still running %v after SIGTERM", p.Cmd.Args[0], timeout)
		return -1, 0
	}
}

// Running reports whether the process has not exited yet.
func (p *Proc) Running() bool { return !wait.Closed(p.done) }

// Done is closed once the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// ExitCode is the exit code once Done is closed (-1 for a signal).
func (p *Proc) ExitCode() int {
	<-p.done
	return p.Cmd.ProcessState.ExitCode()
}

// Mark returns the number of stderr lines so far, for Lines and WaitLine.
func (p *Proc) Mark() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.lines)
}

// Lines returns the stderr lines after mark.
func (p *Proc) Lines(mark int) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.lines[mark:]...)
}

// Stderr returns all of stderr so far.
func (p *Proc) Stderr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

// WaitLine waits up to timeout for a stderr line after mark that match
// accepts, and returns it; it fails the test (whose log then shows the
// stderr) if the process exits or the time runs out first.
func (p *Proc) WaitLine(mark int, timeout time.Duration, what string, match func(line string) bool) string {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	timer := time.AfterFunc(timeout, func() { p.mu.Lock(); p.cond.Broadcast(); p.mu.Unlock() })
	defer timer.Stop()
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := mark; ; {
		for ; i < len(p.lines); i++ {
			if match(p.lines[i]) {
				return p.lines[i]
			}
		}
		select {
		case <-p.done:
			p.t.Fatalf("%s exited (%v) without logging %s", p.Cmd.Args[0], p.err, what)
		default:
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s logged no line with %s within %v", p.Cmd.Args[0], what, timeout)
		}
		p.cond.Wait()
	}
}
