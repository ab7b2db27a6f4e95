package announce

import (
	"errors"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// Issue 11 #8: frames a host interface refuses (down, gone) are logged,
// not only counted: which interface, MAC, VLAN and why; at most one line
// per interface per 10 s, the next saying how many failed in between.
// Before, the log said nothing at all.
func TestHostSendErrorsLoggedRateLimited(t *testing.T) {
	netnstest.Require(t)
	rig := netnstest.NewRig(t)
	rig.Host.Exec(t, "ip", "link", "set", netnstest.RigHostBridge, "down")
	core, logs := observer.New(zap.WarnLevel)
	a := New(Options{Open: openIn(rig.Host), Logger: zap.New(core)})
	defer a.Close()
	announceOn := func(ifname string, rounds int) {
		t.Helper()
		h := mustAnnounce(t, a, Request{MAC: rarp.MAC{0x52, 0x54, 0, 0, 0, 1}, Interface: ifname,
			Schedule: Schedule{Initial: time.Millisecond, Step: time.Millisecond, Max: time.Millisecond, Rounds: rounds, Bursts: 1}})
		<-h.Done()
		if h.Failed() != rounds {
			t.Fatalf("%s: %d of %d frames failed", ifname, h.Failed(), rounds)
		}
	}
	announceOn(netnstest.RigHostBridge, 5)
	announceOn(netnstest.RigHostBridge, 5) // same interface, within 10 s: counted, not logged
	announceOn("nosuch0", 2)               // another interface: its own line

	lines := logs.FilterMessage("announce frame not sent").All()
	if len(lines) != 2 {
		t.Fatalf("%d log lines for 12 failed frames on 2 interfaces, want 2: %v", len(lines), lines)
	}
	byPort := map[string]observer.LoggedEntry{}
	for _, l := range lines {
		byPort[l.ContextMap()["port"].(string)] = l
	}
	down, ok := byPort[netnstest.RigHostBridge]
	if !ok {
		t.Fatalf("no line names %s: %v", netnstest.RigHostBridge, lines)
	}
	if !errors.Is(errorOf(down), ErrInterfaceDown) {
		t.Errorf("line for %s does not say the interface is down: %v", netnstest.RigHostBridge, down.ContextMap())
	}
	if _, ok := byPort["nosuch0"]; !ok {
		t.Fatalf("no line names nosuch0: %v", lines)
	}

	// The next line for an interface counts the failures not logged.
	s := newSendErrors()
	core2, logs2 := observer.New(zap.WarnLevel)
	r := Request{MAC: rarp.MAC{0x52, 0x54, 0, 0, 0, 2}, Interface: "br0"}
	t0 := time.Now()
	for i := range 5 {
		s.note(zap.New(core2), r, ErrInterfaceDown, t0.Add(time.Duration(i)*time.Second))
	}
	s.note(zap.New(core2), r, ErrInterfaceDown, t0.Add(sendErrorEvery))
	got := logs2.All()
	if len(got) != 2 || got[1].ContextMap()["more_failures_since_last_logged"] != int64(4) {
		t.Fatalf("lines %v, want 2, the second counting 4 more failures", got)
	}
}

func errorOf(e observer.LoggedEntry) error {
	for _, f := range e.Context {
		if err, ok := f.Interface.(error); ok {
			return err
		}
	}
	return nil
}
