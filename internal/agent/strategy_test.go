package agent_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/rarp-announce/rarp-announce/internal/agent"
	"github.com/rarp-announce/rarp-announce/internal/libvirtfake"
	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/pkg/announce"
	"github.com/rarp-announce/rarp-announce/pkg/libvirtwatch"
	"github.com/rarp-announce/rarp-announce/pkg/plan"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// oneDomain is a libvirt with one running domain.
type oneDomain struct{ xml string }

func (o oneDomain) DomainXML(context.Context, libvirtwatch.DomainRef) ([]byte, error) {
	return []byte(o.xml), nil
}
func (oneDomain) DomainRunning(context.Context, libvirtwatch.DomainRef) (bool, error) {
	return true, nil
}

// recording is a strategy that records what the landing gave it.
type recording struct {
	mu       sync.Mutex
	landings []agent.Landing
	targets  [][]plan.Target
	cancels  []rarp.MAC
}

func (r *recording) Announce(_ context.Context, l agent.Landing, ts []plan.Target) []agent.NICResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.landings = append(r.landings, l)
	r.targets = append(r.targets, ts)
	out := make([]agent.NICResult, len(ts))
	for i, t := range ts {
		out[i] = agent.NICResult{Target: t, Result: agent.ResultStarted}
	}
	return out
}

func (r *recording) CancelMAC(m rarp.MAC) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cancels = append(r.cancels, m)
	return 1
}

// A strategy plugs in through Deps.Strategies (here in place of the
// built-in host one): the landing hands it all the domain's NICs planned
// for it, at once, with the trigger; a cancel reaches it; NICs of a
// strategy the agent lacks are not handled.
func TestStrategySeam(t *testing.T) {
	const uuid = "6c61622d-766d-4000-8000-00000000b001"
	xml := libvirtfake.LiveXML("vm1", uuid, 1,
		libvirtfake.NIC{MAC: "52:54:00:00:b0:01", Target: "vnet1"},
		libvirtfake.NIC{MAC: "52:54:00:00:b0:02", Target: "vnet2"},
		libvirtfake.NIC{Type: "ethernet", MAC: "52:54:00:00:b0:03", Target: "tap3"})
	rec := &recording{}
	ann := announce.New(announce.Options{})
	defer ann.Close()
	a := agent.New(agent.Deps{
		Libvirt: oneDomain{xml}, Announcer: ann,
		// It replaces the built-in host strategy; qemu is missing.
		Strategies: map[plan.Strategy]agent.Strategy{plan.Host: rec},
	}, agent.Settings{
		Plan:     plan.Options{Strategies: plan.Strategies{plan.KindBridge: plan.Host, plan.KindEthernet: plan.QEMU}},
		Schedule: announce.DefaultSchedule(),
	})
	ref := libvirtwatch.DomainRef{Name: "vm1", UUID: uuid}
	res, err := a.AnnounceDomain(context.Background(), ref, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.targets) != 1 || len(rec.targets[0]) != 2 {
		t.Fatalf("strategy called with %v, want one call with both bridge NICs", rec.targets)
	}
	if l := rec.landings[0]; l.Trigger != announce.TriggerManual || l.Domain != ref || l.Log == nil {
		t.Errorf("landing %+v, want the manual trigger of vm1 with a logger", l)
	}
	want := map[string]string{"52:54:00:00:b0:01": agent.ResultStarted, "52:54:00:00:b0:02": agent.ResultStarted, "52:54:00:00:b0:03": agent.ResultNotHandled}
	for _, r := range res {
		if got := r.Result; got != want[r.Target.NIC.MAC.String()] {
			t.Errorf("%s: %s, want %s", r.Target.NIC.MAC, got, want[r.Target.NIC.MAC.String()])
		}
	}

	// A landing's cancel reaches every strategy with the domain's MACs.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a.Handle(ctx, libvirtwatch.Event{Kind: libvirtwatch.Landed, Domain: ref, Event: libvirtwatch.EventResumed, Detail: libvirtwatch.DetailResumedMigrated})
	netnstest.Eventually(t, 5*time.Second, func() error {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		if n := len(rec.targets); n != 2 {
			return fmt.Errorf("strategy called %d times, want 2 (the landing's)", n)
		}
		return nil
	})
	a.Handle(ctx, libvirtwatch.Event{Kind: libvirtwatch.Cancel, Domain: ref, Event: libvirtwatch.EventStopped})
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.landings[1].Trigger != announce.TriggerLanding || len(rec.cancels) != 3 {
		t.Errorf("landing trigger %v, cancels %v; want landed and the 3 MACs", rec.landings[1].Trigger, rec.cancels)
	}
}
