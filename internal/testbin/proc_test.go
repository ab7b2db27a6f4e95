package testbin

import (
	"fmt"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// fatalRecorder is a testing.TB whose Fatalf records the message and ends
// the goroutine, as the real one does.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (r *fatalRecorder) Helper() {}

func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// failure runs f on a goroutine of its own (Fatalf ends it) and returns
// what it failed with, "" if nothing.
func (r *fatalRecorder) failure(f func()) string {
	r.msg = ""
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	<-done
	return r.msg
}

func TestProcLinesAndStop(t *testing.T) {
	p := Start(t, exec.Command("sh", "-c", "echo one >&2; echo two >&2; exec sleep 30"))
	if got := p.WaitLine(0, 5*time.Second, "two", func(l string) bool { return l == "two" }); got != "two" {
		t.Fatalf("WaitLine = %q", got)
	}
	if got := p.Lines(0); !slices.Equal(got, []string{"one", "two"}) {
		t.Errorf("Lines(0) = %q, want [one two]", got)
	}
	mark := p.Mark()
	if mark != 2 || len(p.Lines(mark)) != 0 {
		t.Errorf("Mark = %d, Lines(Mark) = %q; want 2 and none", mark, p.Lines(mark))
	}
	if !p.Running() {
		t.Fatal("not running before Stop")
	}
	code, took := p.Stop(5 * time.Second)
	if code != -1 || p.Running() {
		t.Errorf("after SIGTERM: exit code %d, running %v; want -1 (a signal), false", code, p.Running())
	}
	if took > 2*time.Second {
		t.Errorf("Stop took %v for a shell that dies on SIGTERM", took)
	}
}

func TestProcExitCodeAndStderr(t *testing.T) {
	p := Start(t, exec.Command("sh", "-c", "echo first >&2; echo second >&2; exit 3"))
	<-p.Done()
	if p.ExitCode() != 3 {
		t.Errorf("ExitCode = %d, want 3", p.ExitCode())
	}
	if got := p.Stderr(); got != "first\nsecond" {
		t.Errorf("Stderr = %q", got)
	}
	if got := p.Lines(1); !slices.Equal(got, []string{"second"}) {
		t.Errorf("Lines(1) = %q, want [second]", got)
	}
}

func TestProcWaitLineFails(t *testing.T) {
	r := &fatalRecorder{TB: t}

	exited := Start(r, exec.Command("sh", "-c", "echo ready >&2"))
	<-exited.Done()
	msg := r.failure(func() { exited.WaitLine(0, 5*time.Second, "a listener", func(l string) bool { return l == "listening" }) })
	if !strings.Contains(msg, "exited") || !strings.Contains(msg, "a listener") {
		t.Errorf("waiting on an exited process failed with %q", msg)
	}

	quiet := Start(r, exec.Command("sh", "-c", "echo ready >&2; exec sleep 30"))
	start := time.Now()
	msg = r.failure(func() { quiet.WaitLine(0, 100*time.Millisecond, "a listener", func(l string) bool { return l == "listening" }) })
	if took := time.Since(start); took < 100*time.Millisecond || took > 3*time.Second {
		t.Errorf("gave up after %v, want about 100ms", took)
	}
	if !strings.Contains(msg, "within 100ms") {
		t.Errorf("timing out failed with %q", msg)
	}
	// A line already seen before mark does not count.
	msg = r.failure(func() { quiet.WaitLine(1, 50*time.Millisecond, "ready", func(l string) bool { return l == "ready" }) })
	if msg == "" {
		t.Error("WaitLine(1) found the line before the mark")
	}
}
