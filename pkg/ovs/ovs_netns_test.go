package ovs

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap/zaptest"

	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/internal/ovstest"
	"github.com/rarp-announce/rarp-announce/pkg/announce"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

const vmMAC = "52:54:00:aa:bb:cc"

var vm = rarp.MAC{0x52, 0x54, 0, 0xaa, 0xbb, 0xcc}

// topo is a hypervisor running OVS with a VM port, uplinked to a switch
// that also reaches the host the VM came from:
//
//	VM: eth0 ── vm0 (tag 100) ┐
//	                         ovsbr (OVS, netdev) ── up0 (trunk) ── swh ┐
//	                                                                   sw0 (Linux bridge, the switch)
//	Old: o0 ────────────────────────────────────────────────────── swo ┘
type topo struct {
	OVS                *ovstest.OVS
	Hyp, VM, Sw, Old   *netnstest.NS
	VMPort, UplinkPort int // ofports
}

const (
	bridge   = "ovsbr"
	vmPort   = "vm0"
	upPort   = "up0"
	swBridge = "sw0"
	swToOVS  = "swh"
	swToOld  = "swo"
)

func newTopo(t testing.TB, vmPortSettings ...string) *topo {
	t.Helper()
	netnstest.Require(t, append(slices.Clone(ovstest.Tools), "tcpdump", "tshark")...)
	tp := &topo{Hyp: netnstest.New(t, "hv"), VM: netnstest.New(t, "vm"), Sw: netnstest.New(t, "sw"), Old: netnstest.New(t, "old")}
	tp.OVS = ovstest.Start(t, tp.Hyp)
	tp.OVS.AddBridge(t, bridge)
	netnstest.Veth(t, tp.Hyp, vmPort, tp.VM, "eth0")
	netnstest.Veth(t, tp.Hyp, upPort, tp.Sw, swToOVS)
	netnstest.Veth(t, tp.Old, "o0", tp.Sw, swToOld)
	tp.Sw.Bridge(t, swBridge)
	tp.Sw.Attach(t, swToOVS, swBridge)
	tp.Sw.Attach(t, swToOld, swBridge)
	if len(vmPortSettings) == 0 {
		vmPortSettings = []string{"tag=100"}
	}
	tp.OVS.Vsctl(t, append([]string{"add-port", bridge, vmPort}, vmPortSettings...)...)
	tp.OVS.Vsctl(t, "add-port", bridge, upPort)
	tp.VMPort, tp.UplinkPort = tp.OVS.OFPort(t, vmPort), tp.OVS.OFPort(t, upPort)
	return tp
}

// learnOnOld makes the switch learn the VM's MAC behind the old host, in
// VLAN 100, as while the VM ran there; the flood also teaches OVS the MAC
// on its uplink: the stale local entry of DESIGN-NOTES section 3.
func (tp *topo) learnOnOld(t *testing.T) {
	t.Helper()
	learnTagged(t, tp.Old, "o0", vm, 100)
	if got := tp.Sw.WaitFDB(t, swBridge, vmMAC, swToOld, 2*time.Second); got != swToOld {
		t.Fatalf("switch did not learn %s on %s (has %q)", vmMAC, swToOld, got)
	}
	up := strconv.Itoa(tp.UplinkPort)
	if got := tp.OVS.WaitFDB(t, bridge, vmMAC, up, 100, 2*time.Second); !slices.Contains(got, ovstest.FDBEntry{Port: up, VLAN: 100, MAC: vmMAC}) {
		t.Fatalf("OVS did not learn %s on its uplink (port %s) in VLAN 100: %v", vmMAC, up, got)
	}
}

// learnTagged sends one broadcast frame from mac tagged vlan out of dev
// in ns (this kernel has no 8021q module for VLAN devices).
func learnTagged(t *testing.T, ns *netnstest.NS, dev string, mac rarp.MAC, vlan uint16) {
	t.Helper()
	frame := make([]byte, 64)
	copy(frame, rarp.Broadcast[:])
	copy(frame[6:], mac[:])
	binary.BigEndian.PutUint16(frame[12:], rarp.EtherTypeVLAN)
	binary.BigEndian.PutUint16(frame[14:], vlan)
	binary.BigEndian.PutUint16(frame[16:], 0x88b5) // local experimental: not RARP
	netnstest.Send(t, ns, dev, frame)
}

func (tp *topo) config(t *testing.T) Config {
	return Config{DB: tp.OVS.DB, RunDir: tp.OVS.Dir, Logger: zaptest.NewLogger(t), Metrics: NewMetrics(nil)}
}

func newAnnouncer(t *testing.T, cfg Config) *Announcer {
	t.Helper()
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

func twoFrames() announce.Schedule {
	s := announce.DefaultSchedule()
	s.Rounds = 2
	return s
}

// countFrames hooks cfg.OnFrame; the returned function waits until n
// frames were reported (or timeout) and returns them all.
func countFrames(cfg *Config) func(n int, timeout time.Duration) []announce.Sent {
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

// failures is the count for reason; totalFailures sums every reason.
func failures(m *Metrics, reason string) float64 {
	return testutil.ToFloat64(m.failures.WithLabelValues(reason))
}

func totalFailures(m *Metrics) float64 {
	var n float64
	for _, r := range Reasons {
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
	for _, c := range []struct{ lookup, inj string }{{LookupOVSDB, InjectOpenFlow}, {LookupVsctl, InjectOfctl}} {
		t.Run(c.lookup+"+"+c.inj, func(t *testing.T) {
			tp := newTopo(t)
			tp.OVS.Ofctl(t, "add-flow", bridge, fmt.Sprintf("cookie=0x1,priority=100,in_port=%d,rarp,actions=NORMAL", tp.VMPort))
			tp.learnOnOld(t)
			onSwitch := netnstest.StartCapture(t, tp.Sw, swToOVS, "")
			onVM := netnstest.StartCapture(t, tp.VM, "eth0", "")

			cfg := tp.config(t)
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
