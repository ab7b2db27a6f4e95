package testbin

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rarp-announce/rarp-announce/internal/helpertest"
)

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
	r := helpertest.New(t)

	exited := Start(r, exec.Command("sh", "-c", "echo ready >&2"))
	<-exited.Done()
	msg := r.Run(func() {
		exited.WaitLine(0, 5*time.Second, "a listener", func(l string) bool { return l == "listening" })
	})
	if !strings.Contains(msg, "exited") || !strings.Contains(msg, "a listener") {
		t.Errorf("waiting on an exited process failed with %q", msg)
	}

	quiet := Start(r, exec.Command("sh", "-c", "echo ready >&2; exec sleep 30"))
	start := time.Now()
	msg = r.Run(func() {
		quiet.WaitLine(0, 100*time.Millisecond, "a listener", func(l string) bool { return l == "listening" })
	})
	if took := time.Since(start); took < 100*time.Millisecond || took > 3*time.Second {
		t.Errorf("gave up after %v, want about 100ms", took)
	}
	if !strings.Contains(msg, "within 100ms") {
		t.Errorf("timing out failed with %q", msg)
	}
	// A line already seen before mark does not count.
	msg = r.Run(func() { quiet.WaitLine(1, 50*time.Millisecond, "ready", func(l string) bool { return l == "ready" }) })
	if msg == "" {
		t.Error("WaitLine(1) found the line before the mark")
	}
}
