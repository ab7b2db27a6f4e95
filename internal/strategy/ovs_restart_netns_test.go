package strategy_test

import (
	"context"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/rarp-announce/rarp-announce/internal/agent"
	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/internal/ovstest"
	"github.com/rarp-announce/rarp-announce/internal/strategy"
	"github.com/rarp-announce/rarp-announce/pkg/announce"
	"github.com/rarp-announce/rarp-announce/pkg/domxml"
	"github.com/rarp-announce/rarp-announce/pkg/libvirtwatch"
	"github.com/rarp-announce/rarp-announce/pkg/ovs"
	"github.com/rarp-announce/rarp-announce/pkg/plan"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// Issue 11 #8: a VM lands while Open vSwitch restarts (ovs-vswitchd
// stopped: its OpenFlow socket is gone). The ovs strategy retries within
// readiness.timeout instead of failing at once, and the MAC reaches the
// physical switch once ovs-vswitchd is back. Real OVS in a namespace,
// uplinked to a Linux bridge standing for the switch; before the fix the
// strategy returned "failed" (not_running) and nothing was sent.
func TestOVSAnnounceRetriedAcrossARestart(t *testing.T) {
	o := ovstest.StartIn(t, "hv", "ovsbr")
	hyp, vmNS, sw := o.NS, netnstest.New(t, "vm"), netnstest.New(t, "sw")
	netnstest.Veth(t, hyp, "vm0", vmNS, "eth0")
	netnstest.Veth(t, hyp, "up0", sw, "swh")
	sw.Bridge(t, "sw0")
	sw.Attach(t, "swh", "sw0")
	o.Vsctl(t, "add-port", "ovsbr", "vm0")
	o.Vsctl(t, "add-port", "ovsbr", "up0")
	_ = o.OFPort(t, "vm0")

	sw0, err := ovs.Open(ovs.Config{DB: o.DB, RunDir: o.Dir, FrameTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var oa *strategy.OVSPorts
	ann := announce.New(announce.Options{OpenPort: sw0.Opener(), OnFrame: func(s announce.Sent) { oa.Sent(s) }})
	oa = strategy.NewOVSPorts(strategy.OVSPortsConfig{Switch: sw0, Announcer: ann, Logger: zaptest.NewLogger(t), Metrics: ovs.NewMetrics(nil)})
	t.Cleanup(func() { ann.Close(); oa.Close() })
	st := strategy.OVS{Announcer: oa}

	mac := rarp.MAC{0x52, 0x54, 0x00, 0x0e, 0x00, 0x01}
	sched := announce.Schedule{Initial: 10 * time.Millisecond, Step: 10 * time.Millisecond, Max: 50 * time.Millisecond, Rounds: 3, Bursts: 1}
	l := agent.Landing{Domain: libvirtwatch.DomainRef{Name: "vm1", UUID: "6c61622d-766d-4000-8000-000000000001"}, Event: "resumed/migrated",
		Since: time.Now(), Trigger: announce.TriggerLanding, Settings: agent.Settings{Schedule: sched, ReadyTimeout: 10 * time.Second},
		Log: zaptest.NewLogger(t)}
	target := plan.Target{NIC: domxml.Interface{MAC: mac, Type: "bridge", Target: "vm0"}, Kind: plan.KindOpenVSwitch, Strategy: plan.OVS,
		Port: "vm0", VLANs: []rarp.VLAN{{}}}

	o.StopSwitch(t)
	res := make(chan []agent.NICResult, 1)
	go func() { res <- st.Announce(context.Background(), l, []plan.Target{target}) }()
	time.Sleep(1500 * time.Millisecond) // the landing waits on a stopped ovs-vswitchd
	select {
	case r := <-res:
		t.Fatalf("gave up while Open vSwitch restarted: %s %v", r[0].Result, r[0].Err)
	default:
	}
	o.StartSwitch(t)
	var r []agent.NICResult
	select {
	case r = <-res:
	case <-time.After(12 * time.Second):
		t.Fatal("no result within the readiness timeout")
	}
	if r[0].Result != agent.ResultStarted {
		t.Fatalf("result %s (%v), want started", r[0].Result, r[0].Err)
	}
	if got := sw.WaitFDB(t, "sw0", mac.String(), "swh", 5*time.Second); got != "swh" {
		t.Fatalf("switch has %s on %q, want swh (behind the OVS host)", mac, got)
	}
}
