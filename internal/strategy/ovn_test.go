package strategy

import (
	"context"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/rarp-announce/rarp-announce/internal/agent"
	"github.com/rarp-announce/rarp-announce/pkg/announce"
	"github.com/rarp-announce/rarp-announce/pkg/domxml"
	"github.com/rarp-announce/rarp-announce/pkg/ovs"
	"github.com/rarp-announce/rarp-announce/pkg/plan"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// The adapter's OVN logic (the readiness itself is proven against real
// ovn-controller in test/lab's TestLabEndToEndOVN and pkg/ovs's
// TestOVNReadiness): no announce before OVN installed the port, one after,
// one more per re-install within the window while the domain runs.

type countingOVS struct {
	mu    sync.Mutex
	calls int
}

func (c *countingOVS) Announce(context.Context, string, rarp.MAC, []rarp.VLAN, announce.Schedule, time.Time) ([]*announce.Handle, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	return nil, nil
}
func (c *countingOVS) CancelMAC(rarp.MAC) int { return 0 }
func (c *countingOVS) n() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls
}

type stubOVN struct {
	port     ovs.OVNPort
	err      error
	reinstal int // re-installs Watch reports
}

func (s stubOVN) Wait(context.Context, string, time.Duration) (ovs.OVNPort, error) {
	return s.port, s.err
}
func (s stubOVN) Watch(ctx context.Context, _ string, _ time.Duration) <-chan ovs.OVNPort {
	ch := make(chan ovs.OVNPort)
	go func() {
		defer close(ch)
		for range s.reinstal {
			select {
			case ch <- s.port:
			case <-ctx.Done():
				return
			}
		}
	}()
	return ch
}

func TestOVSWaitsForOVNAndReannouncesOnReinstall(t *testing.T) {
	installed := ovs.OVNPort{Interface: "tap1", OFPort: 3, IfaceID: "lsp-1", Installed: true}
	notOVN := ovs.OVNPort{Interface: "tap1", OFPort: 3}
	for _, tc := range []struct {
		name    string
		ovn     stubOVN
		running bool
		result  string
		calls   int
	}{
		{"not installed in time", stubOVN{port: ovs.OVNPort{Interface: "tap1", OFPort: 3, IfaceID: "lsp-1"}, err: ovs.ErrOVNNotInstalled}, true, agent.ResultNotReady, 0},
		{"installed", stubOVN{port: installed}, true, agent.ResultStarted, 1},
		{"re-installed twice", stubOVN{port: installed, reinstal: 2}, true, agent.ResultStarted, 3},
		{"re-installed, domain gone", stubOVN{port: installed, reinstal: 2}, false, agent.ResultStarted, 1},
		{"not OVN's: no re-install watch", stubOVN{port: notOVN, reinstal: 2}, true, agent.ResultStarted, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ann := &countingOVS{}
			o := OVS{Announcer: ann, OVN: tc.ovn}
			l := agent.Landing{
				Since: time.Now(), Log: zap.NewNop(),
				Settings: agent.Settings{ReadyTimeout: time.Second, WatchWindow: time.Minute, Schedule: announce.Schedule{Rounds: 1, Bursts: 1}},
				Running:  func(context.Context) (bool, error) { return tc.running, nil },
			}
			target := plan.Target{Strategy: plan.OVS, Port: "tap1", NIC: domxml.Interface{MAC: rarp.MAC{0x52, 0x54, 0, 0, 0, 1}}}
			res := o.Announce(context.Background(), l, []plan.Target{target})
			if res[0].Result != tc.result {
				t.Fatalf("result %s (%v), want %s", res[0].Result, res[0].Err, tc.result)
			}
			deadline := time.Now().Add(2 * time.Second)
			for ann.n() < tc.calls && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			time.Sleep(50 * time.Millisecond) // no extra announce comes late
			if got := ann.n(); got != tc.calls {
				t.Fatalf("%d announces, want %d", got, tc.calls)
			}
		})
	}
}
