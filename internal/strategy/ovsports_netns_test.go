package strategy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap/zaptest"

	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/internal/ovstest"
	"github.com/rarp-announce/rarp-announce/pkg/announce"
	"github.com/rarp-announce/rarp-announce/pkg/ovs"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// ovsConfig is what a test sets of the switch, the announcer and
// OVSPorts.
type ovsConfig struct {
	ovs.Config
	OVSPortsConfig
	Pacing  announce.Pacing
	OnFrame func(announce.Sent)
}

// vm, vmMAC and the other names are ovstest.Topo's.
var vm = ovstest.VM

const bridge, vmPort, swBridge, swToOVS, vmMAC = ovstest.Bridge, ovstest.VMPort, ovstest.SwBridge, ovstest.SwToOVS, ovstest.VMMAC

func topoConfig(t *testing.T, tp *ovstest.Topo) ovsConfig {
	return ovsConfig{Config: ovs.Config{DB: tp.OVS.DB, RunDir: tp.OVS.Dir}, OVSPortsConfig: OVSPortsConfig{Logger: zaptest.NewLogger(t), Metrics: ovs.NewMetrics(nil)}}
}

func newAnnouncer(t testing.TB, c ovsConfig) *OVSPorts {
	t.Helper()
	sw, err := ovs.Open(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	c.Switch = sw
	a := NewOVSPorts(c.OVSPortsConfig)
	a.ann = newTestAnnouncer(sw, c.Pacing, func(s announce.Sent) {
		a.Sent(s)
		if c.OnFrame != nil {
			c.OnFrame(s)
		}
	})
	t.Cleanup(func() { a.ann.Close(); a.Close() })
	return a
}

// newTestAnnouncer is an announcer as internal/app builds it for OVS
// ports: injected through sw, pacing per bridge, every frame to onFrame.
func newTestAnnouncer(sw *ovs.Switch, pacing announce.Pacing, onFrame func(announce.Sent)) *announce.Announcer {
	if pacing == (announce.Pacing{}) {
		pacing = announce.DefaultPacing()
	}
	return announce.New(announce.Options{OpenPort: sw.Opener(), Pacing: pacing, OnFrame: onFrame})
}

// failures is the count for reason; totalFailures sums every reason.
func failures(m *ovs.Metrics, reason string) float64 {
	ch := make(chan prometheus.Metric, len(ovs.Reasons))
	m.Collect(ch)
	close(ch)
	for pm := range ch {
		var d dto.Metric
		if err := pm.Write(&d); err == nil && d.GetLabel()[0].GetValue() == reason {
			return d.GetCounter().GetValue()
		}
	}
	return 0
}

func twoFrames() announce.Schedule {
	s := announce.DefaultSchedule()
	s.Rounds = 2
	return s
}

// countFrames hooks cfg.OnFrame; the returned function waits until n
// frames were reported (or timeout) and returns them all.
func countFrames(cfg *ovsConfig) func(n int, timeout time.Duration) []announce.Sent {
	ch := make(chan announce.Sent, 100)
	cfg.OnFrame = func(s announce.Sent) { ch <- s }
	var got []announce.Sent
	return func(n int, timeout time.Duration) []announce.Sent {
		deadline := time.After(timeout)
		for len(got) < n {
			select {
			case s := <-ch:
				got = append(got, s)
			case <-deadline:
				return got
			}
		}
		return got
	}
}

func totalFailures(m *ovs.Metrics) float64 {
	var n float64
	for _, r := range ovs.Reasons {
		n += failures(m, r)
	}
	return n
}

// flowPackets is the packet count of the flow added with cookie (ovs-ofctl
// dump-flows cannot select by priority).
func flowPackets(t *testing.T, o *ovstest.OVS, cookie int) int {
	t.Helper()
	match := fmt.Sprintf("cookie=%#x/-1", cookie)
	out := o.Ofctl(t, "dump-flows", bridge, match)
	for _, l := range strings.Split(out, "\n") {
		if i := strings.Index(l, "n_packets="); i >= 0 {
			n, err := strconv.Atoi(strings.TrimRight(strings.Fields(l[i+len("n_packets="):])[0], ","))
			if err != nil {
				t.Fatalf("dump-flows: %q", l)
			}
			return n
		}
	}
	t.Fatalf("no flow %q in\n%s", match, out)
	return 0
}

// TestAnnounceEntersFromTheVMPort is the proof of the ovs strategy: the
// frames enter OVS as if the VM sent them on its access port (tag 100), go
// through the OpenFlow table (a flow matching in_port=vm0 counts them),
// leave on the trunk tagged 100, move the switch's entry to the port
// toward this host, move OVS's own stale entry from the uplink to the VM's
// port, and never reach the VM itself.
func TestAnnounceEntersFromTheVMPort(t *testing.T) {
	for _, c := range []struct{ lookup, inj string }{{ovs.LookupOVSDB, ovs.InjectOpenFlow}, {ovs.LookupVsctl, ovs.InjectOfctl}} {
		t.Run(c.lookup+"+"+c.inj, func(t *testing.T) {
			tp := ovstest.NewTopo(t)
			tp.OVS.Ofctl(t, "add-flow", bridge, fmt.Sprintf("cookie=0x1,priority=100,in_port=%d,rarp,actions=NORMAL", tp.VMPort))
			tp.LearnOnOld(t)
			onSwitch := netnstest.StartCapture(t, tp.Sw, swToOVS, "")
			onVM := netnstest.StartCapture(t, tp.VM, "eth0", "")

			cfg := topoConfig(t, tp)
			cfg.Lookup, cfg.Injection = c.lookup, c.inj
			wait := countFrames(&cfg)
			a := newAnnouncer(t, cfg)
			// The XML's <vlan><tag id='100'/> on an access port: the guest
			// sends untagged, so must we; OVS adds the tag.
			if _, err := a.Announce(context.Background(), vmPort, vm, []rarp.VLAN{{ID: 100}}, twoFrames(), time.Now()); err != nil {
				t.Fatal(err)
			}
			if got := wait(2, 5*time.Second); len(got) != 2 || got[0].Err != nil || got[1].Err != nil {
				t.Fatalf("frames: %+v", got)
			}
			if got := tp.Sw.WaitFDB(t, swBridge, vmMAC, swToOVS, 2*time.Second); got != swToOVS {
				t.Fatalf("switch has %s on %q after the announce, want %s", vmMAC, got, swToOVS)
			}
			port := strconv.Itoa(tp.VMPort)
			got := tp.OVS.WaitFDB(t, bridge, vmMAC, port, 100, 2*time.Second)
			if len(got) != 1 || got[0] != (ovstest.FDBEntry{Port: port, VLAN: 100, MAC: vmMAC}) {
				t.Fatalf("OVS fdb for %s: %v, want only port %s (%s) VLAN 100", vmMAC, got, port, vmPort)
			}
			if n := flowPackets(t, tp.OVS, 1); n != 2 {
				t.Fatalf("the in_port=%s rarp flow matched %d packets, want 2", vmPort, n)
			}

			lines := netnstest.Tshark(t, onSwitch.Stop(), "frame.len", "vlan.id", "eth.src", "eth.dst", "arp.opcode", "arp.src.hw_mac", "arp.dst.hw_mac")
			want := "64|100|" + vmMAC + "|ff:ff:ff:ff:ff:ff|3|" + vmMAC + "|" + vmMAC
			var rarps []string
			for _, l := range lines {
				if strings.Contains(l, "|3|") {
					rarps = append(rarps, l)
				}
			}
			if len(rarps) != 2 || rarps[0] != want || rarps[1] != want {
				t.Fatalf("switch side saw %q (all: %q), want 2 x %q", rarps, lines, want)
			}
			if vmSaw := netnstest.Tshark(t, onVM.Stop(), "arp.opcode"); len(vmSaw) != 0 {
				t.Fatalf("the VM received %d frames (%q); an announce must not come back to it", len(vmSaw), vmSaw)
			}
			if n := totalFailures(cfg.Metrics); n != 0 {
				t.Fatalf("%v failures counted", n)
			}
		})
	}
}

func oneFrame() announce.Schedule { return announce.Schedule{Rounds: 1, Bursts: 1} }

// TestTrunkPortGetsTaggedFrames: a VM port that trunks VLANs 200 and 300
// (libvirt's <vlan trunk='yes'>) gets one frame per XML tag, tagged as the
// guest would send them; a tag the port does not carry is skipped (OVS
// would drop it) and the rest still go out.
func TestTrunkPortGetsTaggedFrames(t *testing.T) {
	tp := ovstest.NewTopo(t, "trunks=200,300")
	onSwitch := netnstest.StartCapture(t, tp.Sw, swToOVS, "")
	cfg := topoConfig(t, tp)
	wait := countFrames(&cfg)
	a := newAnnouncer(t, cfg)
	_, err := a.Announce(context.Background(), vmPort, vm, []rarp.VLAN{{ID: 200}, {ID: 300}, {ID: 400}}, oneFrame(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if got := wait(2, 5*time.Second); len(got) != 2 {
		t.Fatalf("frames: %+v", got)
	}
	port := strconv.Itoa(tp.VMPort)
	for _, v := range []int{200, 300} {
		if got := tp.OVS.WaitFDB(t, bridge, vmMAC, port, v, 2*time.Second); !slices.Contains(got, ovstest.FDBEntry{Port: port, VLAN: v, MAC: vmMAC}) {
			t.Fatalf("OVS fdb has %v, want %s on port %s in VLAN %d", got, vmMAC, port, v)
		}
	}
	if got := tp.Sw.WaitFDB(t, swBridge, vmMAC, swToOVS, 2*time.Second); got != swToOVS {
		t.Fatalf("switch has %s on %q", vmMAC, got)
	}
	got := ovstest.RARPRequests(t, onSwitch.Stop())
	slices.Sort(got)
	if want := []string{"200|" + vmMAC, "300|" + vmMAC}; !slices.Equal(got, want) {
		t.Fatalf("uplink saw RARPs %q, want %q", got, want)
	}
}

// TestAnnounceObeysOpenFlowRules: injected frames meet the bridge's flows
// exactly as the VM's own would. With Neutron-style anti-spoofing (only
// the port's MAC may enter from it), the VM's announce passes and an
// announce of a MAC that is not the port's is dropped by the flow.
func TestAnnounceObeysOpenFlowRules(t *testing.T) {
	tp := ovstest.NewTopo(t)
	tp.OVS.Ofctl(t, "add-flow", bridge, fmt.Sprintf("priority=100,in_port=%d,dl_src=%s,actions=NORMAL", tp.VMPort, vmMAC))
	tp.OVS.Ofctl(t, "add-flow", bridge, fmt.Sprintf("cookie=0x2,priority=90,in_port=%d,actions=drop", tp.VMPort))
	onSwitch := netnstest.StartCapture(t, tp.Sw, swToOVS, "")
	a := newAnnouncer(t, topoConfig(t, tp))
	spoofed := rarp.MAC{0x52, 0x54, 0, 0, 0, 0x99}
	for _, m := range []rarp.MAC{vm, spoofed} {
		// Both are injected without error: a drop is the pipeline's
		// decision, not a failure of the packet-out.
		if _, err := a.Announce(context.Background(), vmPort, m, nil, oneFrame(), time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	if got := tp.Sw.WaitFDB(t, swBridge, vmMAC, swToOVS, 2*time.Second); got != swToOVS {
		t.Fatalf("switch has %s on %q", vmMAC, got)
	}
	if n := flowPackets(t, tp.OVS, 2); n != 1 {
		t.Fatalf("the anti-spoofing drop flow matched %d packets, want 1 (the spoofed MAC)", n)
	}
	if got := ovstest.RARPRequests(t, onSwitch.Stop()); !slices.Equal(got, []string{"100|" + vmMAC}) {
		t.Fatalf("uplink saw %q, want only the VM's announce in VLAN 100", got)
	}
	if _, ok := tp.Sw.FDB(t, swBridge)[spoofed.String()]; ok {
		t.Fatalf("the switch learned the spoofed MAC %s", spoofed)
	}
}

// TestFailuresAreReportedAndCounted: each way the ovs strategy can fail
// returns promptly with its own error and reason, is counted, and never
// panics.
func TestFailuresAreReportedAndCounted(t *testing.T) {
	tp := ovstest.NewTopo(t)
	tp.OVS.Vsctl(t, "add-port", bridge, "nosuchdev") // ofport -1
	netnstest.Veth(t, tp.Hyp, "parked", tp.VM, "eth1")
	tp.OVS.Vsctl(t, "add-port", bridge, "parked", "tag=4095")
	netnstest.Veth(t, tp.Hyp, "trunk1", tp.VM, "eth2")
	tp.OVS.Vsctl(t, "add-port", bridge, "trunk1", "trunks=10")

	type failure struct {
		name   string
		cfg    func(ovs.Config) ovs.Config
		port   string
		vlans  []rarp.VLAN
		want   error
		reason string
	}
	vsctl := func(c ovs.Config) ovs.Config { c.Lookup = ovs.LookupVsctl; return c }
	cases := []failure{
		{"ovs not running", func(c ovs.Config) ovs.Config { c.DB = "unix:" + tp.OVS.Dir + "/nosuch.sock"; return c }, vmPort, nil, ovs.ErrNotRunning, "not_running"},
		{"unknown port", nil, "vnet99", nil, ovs.ErrPortNotFound, "port_not_found"},
		{"port without ofport", nil, "nosuchdev", nil, ovs.ErrNoOFPort, "no_ofport"},
		{"port on the dead VLAN", nil, "parked", nil, ovs.ErrPortNotWired, "port_not_wired"},
		{"VLAN not carried", nil, "trunk1", []rarp.VLAN{{ID: 20}}, ovs.ErrVLANNotCarried, "vlan_not_carried"},
		{"no bridge socket", func(c ovs.Config) ovs.Config { c.RunDir = tp.OVS.Dir + "/elsewhere"; return c }, vmPort, nil, ovs.ErrNotRunning, "not_running"},
		{"no ovs-vsctl", func(c ovs.Config) ovs.Config { c.Vsctl = "/nonexistent/ovs-vsctl"; return vsctl(c) }, vmPort, nil, ovs.ErrCommand, "command"},
	}
	// The lookup cases again through ovs-vsctl.
	for _, c := range cases[:5] {
		prev := c.cfg
		c.name += " (vsctl)"
		c.cfg = func(cfg ovs.Config) ovs.Config {
			if prev != nil {
				cfg = prev(cfg)
			}
			return vsctl(cfg)
		}
		cases = append(cases, c)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := topoConfig(t, tp)
			if c.cfg != nil {
				cfg.Config = c.cfg(cfg.Config)
			}
			a := newAnnouncer(t, cfg)
			start := time.Now()
			_, err := a.Announce(context.Background(), c.port, vm, c.vlans, oneFrame(), start)
			if !errors.Is(err, c.want) || ovs.Reason(err) != c.reason {
				t.Fatalf("err %v (reason %s), want %v (%s)", err, ovs.Reason(err), c.want, c.reason)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("took %v", d)
			}
			if n := failures(cfg.Metrics, c.reason); n != 1 {
				t.Fatalf("%s counted %v times, want 1", c.reason, n)
			}
			if n := totalFailures(cfg.Metrics); n != 1 {
				t.Fatalf("%v failures counted in all, want 1", n)
			}
		})
	}
}

// TestHungOVSTimesOut: a stopped (SIGSTOP) ovs-vswitchd accepts
// connections but answers nothing; a stopped ovsdb-server hangs ovs-vsctl.
// Each ends in a timeout after the configured limit, counted, and the
// announcer still closes.
func TestHungOVSTimesOut(t *testing.T) {
	for _, c := range []struct {
		name, daemon, injection, lookup string
	}{
		{"vswitchd stopped, openflow", "ovs-vswitchd", ovs.InjectOpenFlow, ovs.LookupOVSDB},
		{"vswitchd stopped, ofctl", "ovs-vswitchd", ovs.InjectOfctl, ovs.LookupOVSDB},
		{"ovsdb-server stopped, ovsdb", "ovsdb-server", ovs.InjectOpenFlow, ovs.LookupOVSDB},
		{"ovsdb-server stopped, vsctl", "ovsdb-server", ovs.InjectOpenFlow, ovs.LookupVsctl},
	} {
		t.Run(c.name, func(t *testing.T) {
			tp := ovstest.NewTopo(t)
			cfg := topoConfig(t, tp)
			cfg.Injection, cfg.Lookup = c.injection, c.lookup
			cfg.FrameTimeout = 300 * time.Millisecond
			cfg.LookupTimeout = 500 * time.Millisecond
			a := newAnnouncer(t, cfg)
			tp.OVS.Signal(t, c.daemon, syscall.SIGSTOP)
			defer tp.OVS.Signal(t, c.daemon, syscall.SIGCONT)
			start := time.Now()
			_, err := a.Announce(context.Background(), vmPort, vm, nil, oneFrame(), start)
			took := time.Since(start)
			if !errors.Is(err, ovs.ErrTimeout) || ovs.Reason(err) != "timeout" {
				t.Fatalf("err %v, want a timeout", err)
			}
			if took > 2*time.Second {
				t.Fatalf("took %v to time out", took)
			}
			if n := failures(cfg.Metrics, "timeout"); n != 1 {
				t.Fatalf("timeouts counted %v, want 1", n)
			}
			t.Logf("timed out after %v", took)
			closed := make(chan struct{})
			go func() { a.Close(); close(closed) }()
			select {
			case <-closed:
			case <-time.After(3 * time.Second):
				t.Fatal("Close hangs on a stopped OVS")
			}
		})
	}
}

// TestSwitchGoneMidSchedule: ovs-vswitchd dies after the first frame; the
// remaining frames fail as not_running, each counted, and none panics.
func TestSwitchGoneMidSchedule(t *testing.T) {
	tp := ovstest.NewTopo(t)
	cfg := topoConfig(t, tp)
	wait := countFrames(&cfg)
	a := newAnnouncer(t, cfg)
	s := announce.Schedule{Rounds: 3, Initial: 300 * time.Millisecond, Max: 300 * time.Millisecond, Bursts: 1}
	if _, err := a.Announce(context.Background(), vmPort, vm, nil, s, time.Now()); err != nil {
		t.Fatal(err)
	}
	tp.OVS.StopSwitch(t)
	got := wait(3, 5*time.Second)
	if len(got) != 3 || got[0].Err != nil || !errors.Is(got[1].Err, ovs.ErrNotRunning) || !errors.Is(got[2].Err, ovs.ErrNotRunning) {
		t.Fatalf("frames: %+v", got)
	}
	if n := failures(cfg.Metrics, "not_running"); n != 2 {
		t.Fatalf("not_running counted %v, want 2", n)
	}
}

// BenchmarkAnnounceFirstFrame is the latency of Announce with the
// defaults: lookup, start, first frame injected (its barrier reply
// received).
func BenchmarkAnnounceFirstFrame(b *testing.B) {
	tp := ovstest.NewTopo(b)
	a := newAnnouncer(b, ovsConfig{Config: ovs.Config{DB: tp.OVS.DB, RunDir: tp.OVS.Dir}})
	one := announce.Schedule{Rounds: 1, Bursts: 1}
	for b.Loop() {
		if _, err := a.Announce(context.Background(), vmPort, vm, nil, one, time.Now()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAnnounce100Concurrent is a mass landing: 100 announces started
// at once (distinct MACs, one port), timed until every Announce returned,
// i.e. every first frame is out, with each lookup method.
func BenchmarkAnnounce100Concurrent(b *testing.B) {
	tp := ovstest.NewTopo(b)
	for _, lookup := range []string{ovs.LookupOVSDB, ovs.LookupVsctl} {
		b.Run(lookup, func(b *testing.B) {
			a := newAnnouncer(b, ovsConfig{Config: ovs.Config{DB: tp.OVS.DB, RunDir: tp.OVS.Dir, Lookup: lookup}})
			one := announce.Schedule{Rounds: 1, Bursts: 1}
			for b.Loop() {
				var wg sync.WaitGroup
				errs := make(chan error, 100)
				for i := range 100 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						m := rarp.MAC{0x52, 0x54, 0, 0, 3, byte(i)}
						if _, err := a.Announce(context.Background(), vmPort, m, nil, one, time.Now()); err != nil {
							errs <- err
						}
					}()
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					b.Fatal(err)
				}
			}
		})
	}
}
