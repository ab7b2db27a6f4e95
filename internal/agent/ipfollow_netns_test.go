package agent_test

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rarp-announce/rarp-announce/internal/config"
	"github.com/rarp-announce/rarp-announce/internal/libvirtfake"
	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/internal/ovstest"
	"github.com/rarp-announce/rarp-announce/pkg/ipannounce"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// bridgeNIC is a Linux bridge NIC on br0 whose tap Nova named.
func bridgeNIC(mac rarp.MAC, tap string) libvirtfake.NIC {
	return libvirtfake.NIC{MAC: mac.String(), Target: tap}
}

// ovsNIC is an Open vSwitch NIC on br-int whose interfaceid is Nova's port.
func ovsNIC(mac rarp.MAC, tap, portID string) libvirtfake.NIC {
	return libvirtfake.NIC{MAC: mac.String(), Bridge: "br-int", OVS: true, InterfaceID: portID, Target: tap}
}

// novaDomain is a domain whose one NIC (nic) is Nova's port portID, with
// Nova's metadata listing ips as the port's fixed IPs (and a floating IP
// that must never be announced).
func (h *host) novaDomain(t testing.TB, nic libvirtfake.NIC, portID string, mac rarp.MAC, ips ...string) domain {
	t.Helper()
	domainSeq++
	d := domain{name: fmt.Sprintf("vm%d", domainSeq), uuid: fmt.Sprintf("6167656e-7400-4000-8000-%012x", domainSeq), macs: []rarp.MAC{mac}}
	var ipx strings.Builder
	for _, ip := range ips {
		v := "4"
		if strings.Contains(ip, ":") {
			v = "6"
		}
		fmt.Fprintf(&ipx, "          <nova:ip type=\"fixed\" address=\"%s\" ipVersion=\"%s\"/>\n", ip, v)
	}
	xml := fmt.Sprintf(`<domain type='kvm' id='1'>
  <name>%s</name>
  <uuid>%s</uuid>
  <metadata>
    <nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.1">
      <nova:ports>
        <nova:port uuid="%s">
%s          <nova:ip type="floating" address="203.0.113.7" ipVersion="4"/>
        </nova:port>
      </nova:ports>
    </nova:instance>
  </metadata>
  <devices>
%s  </devices>
</domain>
`, d.name, d.uuid, portID, ipx.String(), libvirtfake.Interfaces(nic))
	h.addDomain(t, d, stateOff, 0, xml)
	return d
}

// learningRegistry is the options of a host whose agent fills its registry
// of running domains (uplink triggers on) and learns the guests'
// addresses (ip_announce with only the learned source); before as in
// hostOptions.
func learningRegistry(before func(h *host)) hostOptions {
	return hostOptions{settings: uplinkSettings(), holdDown: 200 * time.Millisecond, before: before,
		config: func(c *config.Config) {
			c.IPAnnounce.Enabled = true
			c.IPAnnounce.Sources.Nova = false
			c.IPAnnounce.Sources.Learned = true
		}}
}

// router is a Linux router on the switch with the gateway addresses and
// Linux's defaults (arp_accept=0): it creates a neighbour entry for the VM
// only from an ARP request / NS addressed to it.
func router(t *testing.T, rig *netnstest.Rig) *netnstest.NS {
	t.Helper()
	r := netnstest.New(t, "rtr")
	netnstest.Veth(t, r, "r0", rig.Switch, "swr")
	rig.Switch.Attach(t, "swr", netnstest.RigSwitchBridge)
	r.Exec(t, "sysctl", "-qw", "net.ipv4.conf.all.arp_accept=0", "net.ipv4.conf.r0.arp_accept=0")
	r.Exec(t, "sysctl", "-qw", "net.ipv6.conf.r0.disable_ipv6=0", "net.ipv6.conf.r0.accept_dad=0")
	r.Exec(t, "ip", "addr", "add", "10.66.0.1/24", "dev", "r0")
	r.Exec(t, "ip", "addr", "add", "fd66::1/64", "dev", "r0", "nodad")
	r.Exec(t, "ip", "link", "set", "r0", "up")
	return r
}

// neigh returns the router's neighbour state for ip ("" if none).
func neigh(t testing.TB, r *netnstest.NS, ip string) string {
	out := strings.TrimSpace(r.Exec(t, "ip", "neigh", "show", ip, "dev", "r0"))
	if out == "" {
		return ""
	}
	f := strings.Fields(out)
	return f[len(f)-1]
}

// TestIPFollowsRARP: a domain whose Nova metadata lists 10.66.0.10 and
// fd66::10 lands; after its first RARP the switch sees, from the host's
// port, GARP requests for the IPv4 address and unsolicited NAs for the
// IPv6 one (tshark-decoded fields), 1.1 s apart, and directed ARP/NS to
// the gateways; the arp_accept=0 router, which had no entry, has one
// within a second of the landing. A second domain claiming 10.66.0.10 on
// this host gets it refused (logged, counted) and nothing sent for it.
func TestIPFollowsRARP(t *testing.T) {
	netnstest.Require(t, "tcpdump", "tshark")
	h := newHost(t, hostOptions{config: func(c *config.Config) {
		c.IPAnnounce.Enabled = true
		c.IPAnnounce.Gateways = []string{"10.66.0.1", "fd66::1"}
		c.IPAnnounce.Count = 2
	}})
	rtr := router(t, h.rig)
	const tap = "tapa1b2c3d4-e5"
	h.tap(t, tap, wired)
	mac := rarp.MAC{0xfa, 0x16, 0x3e, 0x66, 0x00, 0x10}
	d := h.novaDomain(t, bridgeNIC(mac, tap), "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d", mac, "10.66.0.10", "fd66::10")
	if s := neigh(t, rtr, "10.66.0.10"); s != "" {
		t.Fatalf("router knows the VM before the landing: %s", s)
	}
	capt := netnstest.StartCapture(t, h.rig.Switch, netnstest.RigSwitchToHost, "ether src "+mac.String())
	landed := h.land(t, d)

	// The router learns the VM within a second of the landing.
	var state string
	for time.Since(landed) < time.Second {
		if state = neigh(t, rtr, "10.66.0.10"); state == "REACHABLE" || state == "STALE" || state == "DELAY" {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	learned := time.Since(landed)
	if state != "REACHABLE" && state != "STALE" && state != "DELAY" {
		t.Fatalf("router has no entry for 10.66.0.10 a second after the landing (state %q)", state)
	}
	t.Logf("router learned 10.66.0.10 %v after the landing (%s)", learned.Round(time.Millisecond), state)
	h.waitMetric(t, 2, 5*time.Second, "rarp_announce_ip_frames_total", "kind=garp_request", "result=sent")
	h.waitMetric(t, 2, 5*time.Second, "rarp_announce_ip_frames_total", "kind=unsolicited_na", "result=sent")
	h.waitMetric(t, 2, 5*time.Second, "rarp_announce_ip_frames_total", "kind=gateway_ns", "result=sent")
	if s6 := neigh(t, rtr, "fd66::10"); s6 == "" || s6 == "FAILED" || s6 == "INCOMPLETE" {
		t.Errorf("router has no IPv6 entry for fd66::10 (state %q)", s6)
	}
	pcap := capt.Stop()

	lines := netnstest.Tshark(t, pcap, "frame.time_epoch", "eth.type", "arp.opcode", "arp.src.proto_ipv4", "arp.dst.proto_ipv4",
		"arp.dst.hw_mac", "icmpv6.type", "icmpv6.nd.na.flag.o", "icmpv6.nd.na.flag.s", "icmpv6.nd.na.target_address",
		"ipv6.hlim", "ipv6.dst", "icmpv6.opt.linkaddr", "icmpv6.checksum.status")
	var firstRARP float64
	var garps, nas []float64
	var gwARP, gwNS int
	for _, l := range lines {
		f := strings.Split(l, "|")
		at, _ := strconv.ParseFloat(f[0], 64)
		switch {
		case f[1] == "0x8035":
			if firstRARP == 0 {
				firstRARP = at
			}
		case f[1] == "0x0806" && f[2] == "1" && f[3] == "10.66.0.10" && f[4] == "10.66.0.10":
			if f[5] != "00:00:00:00:00:00" {
				t.Errorf("GARP request with tha %s, want zero: %s", f[5], l)
			}
			garps = append(garps, at)
		case f[1] == "0x0806" && f[2] == "1" && f[3] == "10.66.0.10" && f[4] == "10.66.0.1":
			gwARP++
		case f[1] == "0x86dd" && f[6] == "136":
			if f[7] != "1" || f[8] != "0" || f[9] != "fd66::10" || f[10] != "255" || f[11] != "ff02::1" || f[12] != mac.String() || f[13] != "1" {
				t.Errorf("NA fields (O, S, target, hop limit, dst, tlla, checksum status) wrong: %s", l)
			}
			nas = append(nas, at)
		case f[1] == "0x86dd" && f[6] == "135":
			gwNS++
		}
		if strings.Contains(l, "203.0.113.7") {
			t.Errorf("the floating IP was announced: %s", l)
		}
	}
	t.Logf("capture: first RARP %.6f, GARPs %v, NAs %v, gateway ARPs %d, NSs %d", firstRARP, garps, nas, gwARP, gwNS)
	if firstRARP == 0 || len(garps) != 2 || len(nas) != 2 || gwARP != 2 || gwNS != 2 {
		t.Fatalf("want a RARP, 2 GARPs, 2 NAs, 2 gateway ARPs, 2 NSs; capture:\n%s", strings.Join(lines, "\n"))
	}
	if garps[0] < firstRARP || nas[0] < firstRARP {
		t.Errorf("IP frames before the first RARP (%.6f): GARP %.6f NA %.6f", firstRARP, garps[0], nas[0])
	}
	for _, ts := range [][]float64{garps, nas} {
		if gap := ts[1] - ts[0]; gap < 1.1 {
			t.Errorf("repeats %.6f s apart, want >= 1.1 s", gap)
		}
	}
	if n := h.metric(t, "rarp_announce_ip_addresses_total", "source=nova"); n != 2 {
		t.Errorf("ip_addresses_total{source=nova} = %v, want 2", n)
	}

	// A second domain on this host claims the same IPv4 address.
	const tap2 = "tapb1b2c3d4-e5"
	h.tap(t, tap2, wired)
	mac2 := rarp.MAC{0xfa, 0x16, 0x3e, 0x66, 0x00, 0x20}
	d2 := h.novaDomain(t, bridgeNIC(mac2, tap2), "b1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d", mac2, "10.66.0.10")
	h.land(t, d2)
	h.waitMetric(t, 1, 5*time.Second, "rarp_announce_ip_addresses_skipped_total", "reason=claimed_by_other_nic")
	h.frames.wait(t, mac2, framesPerBurst, 5*time.Second) // its RARPs still go out
	time.Sleep(300 * time.Millisecond)
	for _, s := range h.frames.sent(mac2, "") {
		if s.Reason == "ip-follow" {
			t.Fatalf("an IP frame was sent for the second VM: %+v", s)
		}
	}
	e := h.waitLogged(t, "IP not announced", d2.name, time.Second)
	if e.ContextMap()["holder_domain"] != d.uuid {
		t.Errorf("refusal names holder %v, want %s", e.ContextMap()["holder_domain"], d.uuid)
	}
}

// TestIPFollowsOnMacvtap: a direct (macvtap) NIC's IP frames leave where
// its RARPs do, through the macvtap and its lower device; the addresses
// come from the static map file and are announced with the VLAN-less
// path the RARPs took. The switch port of the lower device sees a GARP
// request (and, with garp_reply on, a GARP reply with tha = sha) after the
// first RARP.
func TestIPFollowsOnMacvtap(t *testing.T) {
	netnstest.Require(t, "tcpdump", "tshark")
	mac := rarp.MAC{0x52, 0x54, 0x00, 0xdd, 0x00, 0x07}
	static := filepath.Join(t.TempDir(), "static")
	if err := os.WriteFile(static, []byte("# the operator's map\n"+mac.String()+" 192.0.2.77\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h := newHost(t, hostOptions{config: func(c *config.Config) {
		c.IPAnnounce.Enabled = true
		c.IPAnnounce.Sources.Nova = false
		c.IPAnnounce.StaticMap = static
		c.IPAnnounce.GARPReply = true
		c.IPAnnounce.Count = 1
	}})
	h.macvtap(t)
	d := h.nicDomain(t, stateOff, 0, directNIC(mac))
	capt := netnstest.StartCapture(t, h.rig.Switch, switchToMV, "ether src "+mac.String())
	h.land(t, d)
	h.waitMetric(t, 1, 5*time.Second, "rarp_announce_ip_frames_total", "kind=garp_reply", "result=sent")
	h.waitMetric(t, 1, 5*time.Second, "rarp_announce_ip_frames_total", "kind=garp_request", "result=sent")
	lines := netnstest.Tshark(t, capt.Stop(), "eth.type", "arp.opcode", "arp.src.proto_ipv4", "arp.dst.proto_ipv4", "arp.src.hw_mac", "arp.dst.hw_mac")
	var seq []string
	for _, l := range lines {
		f := strings.Split(l, "|")
		switch {
		case f[0] == "0x8035":
			seq = append(seq, "rarp")
		case f[0] == "0x0806" && f[2] == "192.0.2.77" && f[3] == "192.0.2.77" && f[1] == "1" && f[5] == "00:00:00:00:00:00":
			seq = append(seq, "garp_request")
		case f[0] == "0x0806" && f[2] == "192.0.2.77" && f[3] == "192.0.2.77" && f[1] == "2" && f[5] == mac.String():
			seq = append(seq, "garp_reply")
		default:
			seq = append(seq, "other:"+l)
		}
	}
	if len(seq) < 3 || seq[0] != "rarp" || !slices.Contains(seq, "garp_request") || !slices.Contains(seq, "garp_reply") {
		t.Fatalf("frames from the macvtap's lower device: %v, want the RARP first, then a GARP request and reply", seq)
	}
	if n := h.metric(t, "rarp_announce_ip_addresses_total", "source=static"); n != 1 {
		t.Errorf("ip_addresses_total{source=static} = %v, want 1", n)
	}
}

// TestIPFollowsOVSPacketOut: with a real Open vSwitch (userspace datapath)
// and the ovs strategy, a NIC's IP frames are injected as its RARPs are,
// by OpenFlow packet-out from the VM's port: OVS tags them with the port's
// VLAN (tag=100) on the trunk uplink, and the switch sees the GARP request
// and the NA entering from the uplink, tagged 100, after the RARP.
func TestIPFollowsOVSPacketOut(t *testing.T) {
	netnstest.Require(t, append(slices.Clone(ovstest.Tools), "tcpdump", "tshark")...)
	var o *ovstest.OVS
	mac := rarp.MAC{0xfa, 0x16, 0x3e, 0x66, 0x00, 0x40}
	h := newHost(t, hostOptions{
		before: func(h *host) {
			o = ovstest.Start(t, h.ns)
			o.AddBridge(t, "br-int")
			vm := netnstest.New(t, "ovsvm")
			netnstest.Veth(t, h.ns, "tap-ovs", vm, "eth0")
			netnstest.Veth(t, h.ns, "ovsup", h.rig.Switch, "swovs")
			h.rig.Switch.Attach(t, "swovs", netnstest.RigSwitchBridge)
			o.Vsctl(t, "add-port", "br-int", "tap-ovs", "tag=100")
			o.Vsctl(t, "add-port", "br-int", "ovsup")
		},
		config: func(c *config.Config) {
			c.Strategies.OpenVSwitch = config.StrategyOVS
			c.OVS.DB, c.OVS.RunDir = o.DB, o.Dir
			c.IPAnnounce.Enabled = true
			c.IPAnnounce.Count = 1
		},
	})
	const port = "c1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"
	d := h.novaDomain(t, ovsNIC(mac, "tap-ovs", port), port, mac, "10.66.0.40", "fd66::40")
	capt := netnstest.StartCapture(t, h.rig.Switch, "swovs", "-Q in")
	h.land(t, d)
	h.waitMetric(t, 1, 10*time.Second, "rarp_announce_ip_frames_total", "kind=unsolicited_na", "result=sent")
	h.waitMetric(t, 1, 5*time.Second, "rarp_announce_ip_frames_total", "kind=garp_request", "result=sent")
	lines := netnstest.Tshark(t, capt.Stop(), "eth.src", "vlan.id", "vlan.etype", "arp.src.proto_ipv4", "icmpv6.nd.na.target_address")
	var seq []string
	for _, l := range lines {
		f := strings.Split(l, "|")
		if f[0] != mac.String() {
			continue
		}
		switch {
		case f[1] == "100" && f[2] == "0x8035":
			seq = append(seq, "rarp")
		case f[1] == "100" && f[3] == "10.66.0.40":
			seq = append(seq, "garp")
		case f[1] == "100" && f[4] == "fd66::40":
			seq = append(seq, "na")
		default:
			seq = append(seq, "other:"+l)
		}
	}
	if len(seq) < 3 || seq[0] != "rarp" || !slices.Contains(seq, "garp") || !slices.Contains(seq, "na") {
		t.Fatalf("frames entering the switch from OVS: %v, want the RARP first, then the GARP and the NA, all tagged 100\n%s", seq, strings.Join(lines, "\n"))
	}
}

// TestIPLearnedFromTheGuest: with the learned source on, a landed NIC's
// tap gets a learner; the guest's own ARP teaches it 192.0.2.55, and when
// the domain leaves and lands here again, that address is announced
// (source learned).
func TestIPLearnedFromTheGuest(t *testing.T) {
	h := newHost(t, hostOptions{config: func(c *config.Config) {
		c.IPAnnounce.Enabled = true
		c.IPAnnounce.Sources.Nova = false
		c.IPAnnounce.Sources.Learned = true
		c.IPAnnounce.Count = 1
	}})
	const tap = "vnetlearn"
	guest := h.tap(t, tap, wired)
	d := h.newDomain(t, stateOff, 0, tap)
	mac := d.macs[0]
	h.land(t, d)
	h.frames.wait(t, mac, framesPerBurst, 5*time.Second)
	if n := h.metric(t, "rarp_announce_ip_frames_total", "kind=garp_request", "result=sent"); n != 0 {
		t.Fatalf("%v GARPs before anything was learned", n)
	}
	garp, err := (&ipannounce.Frame{Kind: ipannounce.GARPRequest, MAC: mac, IP: netip.MustParseAddr("192.0.2.55")}).Build()
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // the learner's socket opens after the landing
	for range 3 {
		if err := guest.Write(garp); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// It migrates away and comes back.
	h.emit(t, d, suspendedMigrated, stoppedMigrated)
	h.waitLogged(t, "announces cancelled", d.name, 5*time.Second)
	h.land(t, d)
	h.waitMetric(t, 1, 5*time.Second, "rarp_announce_ip_frames_total", "kind=garp_request", "result=sent")
	if n := h.metric(t, "rarp_announce_ip_addresses_total", "source=learned"); n != 1 {
		t.Errorf("ip_addresses_total{source=learned} = %v, want 1", n)
	}
}

// The NIC's tap is re-plugged while the domain runs (deleted and created
// again, as os-vif does): the learner's socket ends with ENETDOWN. It must
// open the new tap and learn what the guest says there. Before, it logged
// "stopped" and the NIC was never learned from again.
func TestLearnerSurvivesARePlug(t *testing.T) {
	h := newHost(t, hostOptions{config: func(c *config.Config) {
		c.IPAnnounce.Enabled = true
		c.IPAnnounce.Sources.Nova = false
		c.IPAnnounce.Sources.Learned = true
	}})
	const tap = "vnetreplug"
	h.tap(t, tap, wired)
	d := h.newDomain(t, stateOff, 0, tap)
	h.land(t, d)
	h.frames.wait(t, d.macs[0], framesPerBurst, 5*time.Second)
	netnstest.WaitWithin(t, 5*time.Second, "a learner on "+tap, func() bool { return len(h.agent.Learners()) == 1 })

	h.ns.Exec(t, "ip", "link", "del", "dev", tap)
	time.Sleep(300 * time.Millisecond) // os-vif's gap between unplug and plug
	guest := h.tap(t, tap, wired)
	garp, err := (&ipannounce.Frame{Kind: ipannounce.GARPRequest, MAC: d.macs[0], IP: netip.MustParseAddr("192.0.2.56")}).Build()
	if err != nil {
		t.Fatal(err)
	}
	// The guest speaks every 100 ms; the learner must hear it within 5 s.
	netnstest.WaitWithin(t, 5*time.Second, "the guest's GARP on the new tap learned", func() bool {
		if err := guest.Write(garp); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
		return len(h.logged("learned an address of the guest", d.name)) > 0
	})
	if ip := fmt.Sprint(h.logged("learned an address of the guest", d.name)[0].ContextMap()["ip"]); ip != "192.0.2.56" {
		t.Errorf("learned %s, want 192.0.2.56", ip)
	}
	h.waitLogged(t, "learning the guest's addresses again", d.name, time.Second)
}

// The agent stops while a domain runs here: its learner stops too and
// closes its socket (which would otherwise keep the port's network
// namespace alive, and in a test process outlive its test).
func TestAgentStopStopsTheLearners(t *testing.T) {
	h := newHost(t, hostOptions{config: func(c *config.Config) {
		c.IPAnnounce.Enabled = true
		c.IPAnnounce.Sources.Nova = false
		c.IPAnnounce.Sources.Learned = true
	}})
	h.tap(t, "vnetstop", wired)
	d := h.newDomain(t, stateOff, 0, "vnetstop")
	h.land(t, d)
	h.frames.wait(t, d.macs[0], framesPerBurst, 5*time.Second)
	if ls := h.agent.Learners(); len(ls) != 1 {
		t.Fatalf("learners while %s runs: %v, want 1", d.name, ls)
	}
	h.cancel()
	<-h.done
	if ls := h.agent.Learners(); len(ls) != 0 {
		t.Errorf("learners after the agent stopped: %v", ls)
	}
	var stacks strings.Builder
	_ = pprof.Lookup("goroutine").WriteTo(&stacks, 1)
	if strings.Contains(stacks.String(), "ipsource.(*Learner).Run") {
		t.Errorf("a learner still runs after the agent stopped:\n%s", stacks.String())
	}
}

// A VM that ran here without landing (booted here) and was destroyed while
// libvirtd was down: no Cancel event comes for it, and the resync cancels
// only landings. The registry's refresh once libvirtd is back now releases
// it from the IP follower: its learner stops. It ran on, and with
// carry_learned its carrier entry kept a timer that wrote to a domain that
// no longer ran here (found in review).
func TestLearnerOfADomainGoneWhileLibvirtDownStops(t *testing.T) {
	var gone domain
	h := newHost(t, learningRegistry(func(h *host) {
		h.tap(t, "vnetgone", wired)
		gone = h.newDomain(t, stateRunning, reasonBooted, "vnetgone")
	}))
	h.waitRegistry(t, 1)
	netnstest.WaitWithin(t, 5*time.Second, "a learner on the booted domain's tap", func() bool { return len(h.agent.Learners()) == 1 })

	path := h.fake.Path()
	h.fake.Close()
	netnstest.WaitFor(t, "watcher not ready", func() bool { return !h.watcher.Ready() })
	h.fake = libvirtfake.StartAt(t, path) // without the domain: destroyed meanwhile
	h.waitReady(t)
	netnstest.WaitWithin(t, 5*time.Second, "the learner of "+gone.name+" to stop", func() bool { return len(h.agent.Learners()) == 0 })
}
