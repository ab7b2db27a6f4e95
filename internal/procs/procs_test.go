package procs

import (
	"runtime"
	"testing"

	"go.uber.org/zap"
)

// start restores the test binary's GOMAXPROCS after the test, sets the
// environment's GOMAXPROCS to env and the Ps to ps, and starts a Policy.
func start(t *testing.T, env string, ps int) *Policy {
	was := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(was) })
	t.Setenv("GOMAXPROCS", env)
	runtime.GOMAXPROCS(ps)
	return Start(zap.NewNop())
}

func wantPs(t *testing.T, want int, after string) {
	t.Helper()
	if got := runtime.GOMAXPROCS(0); got != want {
		t.Errorf("after %s: %d Ps, want %d", after, got, want)
	}
}

func TestOnePThenOneMorePerReason(t *testing.T) {
	p := start(t, "", 8)
	wantPs(t, 1, "Start")
	p.Flood()
	wantPs(t, 2, "Flood")
	p.Flood() // once per reason
	wantPs(t, 2, "a second Flood")
	p.Responder()
	p.Responder()
	wantPs(t, 3, "Responder twice")
}

func TestResponderAloneTakesTwo(t *testing.T) {
	p := start(t, "", 8)
	p.Responder()
	wantPs(t, 2, "Responder")
}

func TestTheEnvironmentWins(t *testing.T) {
	p := start(t, "5", 5)
	p.Flood()
	p.Responder()
	wantPs(t, 5, "Start, Flood and Responder with GOMAXPROCS=5")
}

func TestNilPolicy(t *testing.T) {
	start(t, "", 4)
	runtime.GOMAXPROCS(4)
	var p *Policy
	p.Flood()
	p.Responder()
	wantPs(t, 4, "a nil Policy's Flood and Responder")
}
