package ovs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/internal/ovstest"
	"github.com/rarp-announce/rarp-announce/pkg/announce"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

func oneFrame() announce.Schedule { return announce.Schedule{Rounds: 1, Bursts: 1} }

// rarpLines returns tshark's vlan.id|eth.src for every RARP request in a
// capture.
func rarpLines(t *testing.T, path string) []string {
	t.Helper()
	var out []string
	for _, l := range netnstest.Tshark(t, path, "arp.opcode", "vlan.id", "eth.src") {
		if rest, ok := strings.CutPrefix(l, "3|"); ok {
			out = append(out, rest)
		}
	}
	return out
}

// TestTrunkPortGetsTaggedFrames: a VM port that trunks VLANs 200 and 300
// (libvirt's <vlan trunk='yes'>) gets one frame per XML tag, tagged as the
// guest would send them; a tag the port does not carry is skipped (OVS
// would drop it) and the rest still go out.
func TestTrunkPortGetsTaggedFrames(t *testing.T) {
	tp := newTopo(t, "trunks=200,300")
	onSwitch := netnstest.StartCapture(t, tp.Sw, swToOVS, "")
	cfg := tp.config(t)
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
	got := rarpLines(t, onSwitch.Stop())
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
	tp := newTopo(t)
	tp.OVS.Ofctl(t, "add-flow", bridge, fmt.Sprintf("priority=100,in_port=%d,dl_src=%s,actions=NORMAL", tp.VMPort, vmMAC))
	tp.OVS.Ofctl(t, "add-flow", bridge, fmt.Sprintf("cookie=0x2,priority=90,in_port=%d,actions=drop", tp.VMPort))
	onSwitch := netnstest.StartCapture(t, tp.Sw, swToOVS, "")
	a := newAnnouncer(t, tp.config(t))
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
	if got := rarpLines(t, onSwitch.Stop()); !slices.Equal(got, []string{"100|" + vmMAC}) {
		t.Fatalf("uplink saw %q, want only the VM's announce in VLAN 100", got)
	}
	if _, ok := tp.Sw.FDB(t, swBridge)[spoofed.String()]; ok {
		t.Fatalf("the switch learned the spoofed MAC %s", spoofed)
	}
}

// TestInternalPortInjectionLearnsOnLocal documents the alternative this
// package rejects: sending the announce (tagged with the port's VLAN) on
// the bridge's internal port, as the host strategy does on a Linux bridge.
// The uplink does see it tagged, but OVS learns the VM's MAC on LOCAL
// (the host), not on the VM's port, and floods the frame to the VM itself.
func TestInternalPortInjectionLearnsOnLocal(t *testing.T) {
	tp := newTopo(t)
	tp.learnOnOld(t)
	onSwitch := netnstest.StartCapture(t, tp.Sw, swToOVS, "")
	onVM := netnstest.StartCapture(t, tp.VM, "eth0", "")
	var s announce.Sender
	if err := tp.Hyp.Do(func() (err error) { s, err = announce.OpenPacket(bridge); return err }); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	f := rarp.Announce(vm, rarp.VLAN{ID: 100})
	frame, _ := f.MarshalBinary()
	if err := s.Send(frame); err != nil {
		t.Fatal(err)
	}
	if got := tp.OVS.WaitFDB(t, bridge, vmMAC, "LOCAL", 100, 2*time.Second); !slices.Contains(got, ovstest.FDBEntry{Port: "LOCAL", VLAN: 100, MAC: vmMAC}) {
		t.Fatalf("OVS fdb %v: expected the VM's MAC on LOCAL", got)
	}
	if got := rarpLines(t, onSwitch.Stop()); !slices.Equal(got, []string{"100|" + vmMAC}) {
		t.Fatalf("uplink saw %q", got)
	}
	if got := rarpLines(t, onVM.Stop()); len(got) != 1 {
		t.Fatalf("the VM saw %q; expected its own announce flooded back to it", got)
	}
}

// TestOpenFlowVersions: the client negotiates OpenFlow 1.0 or 1.3 with a
// bridge that allows only that one (Neutron and OVN enable 1.3), and
// reports a bridge that allows only 1.5 as an OpenFlow error.
func TestOpenFlowVersions(t *testing.T) {
	tp := newTopo(t)
	for _, c := range []struct {
		protocols string
		version   uint8
	}{{"OpenFlow10", 1}, {"OpenFlow13", 4}, {"OpenFlow10,OpenFlow11,OpenFlow12,OpenFlow13,OpenFlow14,OpenFlow15", 5}, {"OpenFlow15", 0}} {
		t.Run(c.protocols, func(t *testing.T) {
			tp.OVS.Vsctl(t, "set", "Bridge", bridge, "protocols="+c.protocols)
			j := NewOpenFlowInjector(tp.OVS.Dir)
			defer j.Close()
			f := rarp.Announce(vm, rarp.VLAN{})
			frame, _ := f.MarshalBinary()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			err := j.Inject(ctx, bridge, tp.VMPort, frame)
			if c.version == 0 {
				if !errors.Is(err, ErrOpenFlow) {
					t.Fatalf("err %v, want ErrOpenFlow", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if v := j.Version(bridge); v != c.version {
				t.Fatalf("negotiated wire version %d, want %d", v, c.version)
			}
		})
	}
}

// TestReconnectAfterSwitchRestart: an idle OpenFlow connection broken by
// an ovs-vswitchd restart is redialled on the next frame, which succeeds.
func TestReconnectAfterSwitchRestart(t *testing.T) {
	tp := newTopo(t)
	j := NewOpenFlowInjector(tp.OVS.Dir)
	defer j.Close()
	f := rarp.Announce(vm, rarp.VLAN{})
	frame, _ := f.MarshalBinary()
	inject := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return j.Inject(ctx, bridge, tp.OVS.OFPort(t, vmPort), frame)
	}
	if err := inject(); err != nil {
		t.Fatal(err)
	}
	tp.OVS.RestartSwitch(t)
	tp.OVS.Appctl(t, "fdb/flush", bridge)
	if err := inject(); err != nil {
		t.Fatalf("after restart: %v", err)
	}
	port := strconv.Itoa(tp.OVS.OFPort(t, vmPort))
	if got := tp.OVS.WaitFDB(t, bridge, vmMAC, port, 100, 2*time.Second); len(got) != 1 {
		t.Fatalf("after restart OVS fdb has %v", got)
	}
}

// TestFailuresAreReportedAndCounted: each way the ovs strategy can fail
// returns promptly with its own error and reason, is counted, and never
// panics.
func TestFailuresAreReportedAndCounted(t *testing.T) {
	tp := newTopo(t)
	tp.OVS.Vsctl(t, "add-port", bridge, "nosuchdev") // ofport -1
	netnstest.Veth(t, tp.Hyp, "parked", tp.VM, "eth1")
	tp.OVS.Vsctl(t, "add-port", bridge, "parked", "tag=4095")
	netnstest.Veth(t, tp.Hyp, "trunk1", tp.VM, "eth2")
	tp.OVS.Vsctl(t, "add-port", bridge, "trunk1", "trunks=10")

	type failure struct {
		name   string
		cfg    func(Config) Config
		port   string
		vlans  []rarp.VLAN
		want   error
		reason string
	}
	vsctl := func(c Config) Config { c.Lookup = LookupVsctl; return c }
	cases := []failure{
		{"ovs not running", func(c Config) Config { c.DB = "unix:" + tp.OVS.Dir + "/nosuch.sock"; return c }, vmPort, nil, ErrNotRunning, "not_running"},
		{"unknown port", nil, "vnet99", nil, ErrPortNotFound, "port_not_found"},
		{"port without ofport", nil, "nosuchdev", nil, ErrNoOFPort, "no_ofport"},
		{"port on the dead VLAN", nil, "parked", nil, ErrPortNotWired, "port_not_wired"},
		{"VLAN not carried", nil, "trunk1", []rarp.VLAN{{ID: 20}}, ErrVLANNotCarried, "vlan_not_carried"},
		{"no bridge socket", func(c Config) Config { c.RunDir = tp.OVS.Dir + "/elsewhere"; return c }, vmPort, nil, ErrNotRunning, "not_running"},
		{"no ovs-vsctl", func(c Config) Config { c.Vsctl = "/nonexistent/ovs-vsctl"; return vsctl(c) }, vmPort, nil, ErrCommand, "command"},
	}
	// The lookup cases again through ovs-vsctl.
	for _, c := range cases[:5] {
		prev := c.cfg
		c.name += " (vsctl)"
		c.cfg = func(cfg Config) Config {
			if prev != nil {
				cfg = prev(cfg)
			}
			return vsctl(cfg)
		}
		cases = append(cases, c)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := tp.config(t)
			if c.cfg != nil {
				cfg = c.cfg(cfg)
			}
			a := newAnnouncer(t, cfg)
			start := time.Now()
			_, err := a.Announce(context.Background(), c.port, vm, c.vlans, oneFrame(), start)
			if !errors.Is(err, c.want) || Reason(err) != c.reason {
				t.Fatalf("err %v (reason %s), want %v (%s)", err, Reason(err), c.want, c.reason)
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
		{"vswitchd stopped, openflow", "ovs-vswitchd", InjectOpenFlow, LookupOVSDB},
		{"vswitchd stopped, ofctl", "ovs-vswitchd", InjectOfctl, LookupOVSDB},
		{"ovsdb-server stopped, ovsdb", "ovsdb-server", InjectOpenFlow, LookupOVSDB},
		{"ovsdb-server stopped, vsctl", "ovsdb-server", InjectOpenFlow, LookupVsctl},
	} {
		t.Run(c.name, func(t *testing.T) {
			tp := newTopo(t)
			cfg := tp.config(t)
			cfg.Injection, cfg.Lookup = c.injection, c.lookup
			cfg.FrameTimeout = 300 * time.Millisecond
			cfg.LookupTimeout = 500 * time.Millisecond
			a := newAnnouncer(t, cfg)
			tp.OVS.Signal(t, c.daemon, syscall.SIGSTOP)
			defer tp.OVS.Signal(t, c.daemon, syscall.SIGCONT)
			start := time.Now()
			_, err := a.Announce(context.Background(), vmPort, vm, nil, oneFrame(), start)
			took := time.Since(start)
			if !errors.Is(err, ErrTimeout) || Reason(err) != "timeout" {
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
	tp := newTopo(t)
	cfg := tp.config(t)
	wait := countFrames(&cfg)
	a := newAnnouncer(t, cfg)
	s := announce.Schedule{Rounds: 3, Initial: 300 * time.Millisecond, Max: 300 * time.Millisecond, Bursts: 1}
	if _, err := a.Announce(context.Background(), vmPort, vm, nil, s, time.Now()); err != nil {
		t.Fatal(err)
	}
	tp.OVS.StopSwitch(t)
	got := wait(3, 5*time.Second)
	if len(got) != 3 || got[0].Err != nil || !errors.Is(got[1].Err, ErrNotRunning) || !errors.Is(got[2].Err, ErrNotRunning) {
		t.Fatalf("frames: %+v", got)
	}
	if n := failures(cfg.Metrics, "not_running"); n != 2 {
		t.Fatalf("not_running counted %v, want 2", n)
	}
}
