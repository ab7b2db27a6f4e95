package evpn_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"go.uber.org/zap/zaptest"

	"github.com/rarp-announce/rarp-announce/internal/agent"
	"github.com/rarp-announce/rarp-announce/internal/app"
	"github.com/rarp-announce/rarp-announce/internal/config"
	"github.com/rarp-announce/rarp-announce/internal/daemon"
	"github.com/rarp-announce/rarp-announce/internal/libvirtfake"
	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/pkg/announce"
	"github.com/rarp-announce/rarp-announce/pkg/libvirtconn"
	"github.com/rarp-announce/rarp-announce/pkg/libvirtwatch"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// TestEVPNAgentLanding: the agent itself, with ip_announce on, drives the
// rig. A hypervisor namespace (br0, the VM's tap named as Nova names it,
// an uplink) hangs off B's EVPN bridge as a top-of-rack VTEP's server port;
// the fake libvirtd lands a domain whose Nova metadata lists 10.66.0.70 and
// fd66::70 with B's SVI addresses as gateways. B (arp_accept=0,
// accept_untracked_na=0) must advertise the MAC+IP routes within 2 s of the
// landing, and A receive them. (TestEVPNMacIPRoute shows that the RARP
// alone advertises only the MAC.)
func TestEVPNAgentLanding(t *testing.T) {
	r := startRig(t)
	r.sysctl("hvb", "net.ipv4.conf.br100.arp_accept=0")
	r.sysctl("hvb", "net.ipv6.conf.br100.accept_untracked_na=0")
	hv := netnstest.New(t, "evhv")
	hv.Bridge(t, "br0")
	netnstest.Run(t, "ip", "link", "add", "uplink", "netns", hv.Name, "type", "veth", "peer", "name", "hvport", "netns", r.ns("hvb"))
	netnstest.Run(t, "ip", "netns", "exec", r.ns("hvb"), "ip", "link", "set", "hvport", "master", "br100", "up")
	hv.Attach(t, "uplink", "br0")
	hv.Exec(t, "ip", "link", "set", "uplink", "up")
	const tap = "tapa1b2c3d4-e5"
	hv.Exec(t, "ip", "tuntap", "add", "dev", tap, "mode", "tap")
	hv.Attach(t, tap, "br0")
	hv.Exec(t, "ip", "link", "set", "dev", tap, "up")
	netnstest.OpenTap(t, hv, tap)

	dir, err := os.MkdirTemp("", "evag")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	fake := libvirtfake.StartAt(t, filepath.Join(dir, "sock"))
	mac := rarp.MAC{0x52, 0x54, 0, 0x66, 0, 0x70}
	const name, uuid = "evpnvm", "65767061-6e00-4000-8000-000000000070"
	xml := fmt.Sprintf(`<domain type='kvm' id='1'>
  <name>%s</name>
  <uuid>%s</uuid>
  <metadata>
    <nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.1">
      <nova:ports><nova:port uuid="a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d">
        <nova:ip type="fixed" address="10.66.0.70" ipVersion="4"/>
        <nova:ip type="fixed" address="fd66::70" ipVersion="6"/>
      </nova:port></nova:ports>
    </nova:instance>
  </metadata>
  <devices>
    <interface type='bridge'><mac address='%s'/><source bridge='br0'/><target dev='%s'/><alias name='net0'/></interface>
  </devices>
</domain>
`, name, uuid, mac, tap)
	if err := fake.AddDomain(libvirtfake.Domain{Name: name, UUID: uuid, State: 5, XML: xml}); err != nil {
		t.Fatal(err)
	}

	nsh, err := netns.GetFromName(hv.Name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nsh.Close() })
	cfg := config.Default()
	cfg.FDBRepair = false
	cfg.Strategies.OpenVSwitch = config.StrategySkip
	cfg.IPAnnounce.Enabled = true
	cfg.IPAnnounce.Gateways = []string{"10.66.0.2", "fd66::2"}
	cfg.IPAnnounce.Count = 2
	log := zaptest.NewLogger(t)
	ctx, cancel := context.WithCancel(context.Background())
	parts, err := app.Build(ctx, cfg, app.Options{Netns: &nsh, Open: netnstest.OpenIn(hv, announce.OpenPacket), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	w := libvirtwatch.New(libvirtwatch.Config{Conn: libvirtconn.Config{Socket: fake.Path(), URI: "test:///default", RPCTimeout: 2 * time.Second},
		BackoffMin: 10 * time.Millisecond, BackoffMax: 100 * time.Millisecond, Logger: log.Named("libvirt")})
	ag := agent.New(parts.Deps(w, log.Named("agent")), daemon.Settings(cfg))
	events := make(chan libvirtwatch.Event, 64)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = w.Run(ctx, events) }()
	go func() { defer wg.Done(); ag.Run(ctx, events) }()
	t.Cleanup(func() { cancel(); wg.Wait(); parts.Close() })
	if err := fake.WaitSubscribers(1, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	for !w.Ready() {
		time.Sleep(5 * time.Millisecond)
	}

	if got := r.macip("hvb", mac); len(got) != 0 {
		t.Fatalf("B has routes for %s before the landing: %v", mac, got)
	}
	if _, err := fake.Emit(name, libvirtwatch.EventStarted, libvirtwatch.DetailStartedMigrated); err != nil {
		t.Fatal(err)
	}
	landed, err := fake.Emit(name, libvirtwatch.EventResumed, libvirtwatch.DetailResumedMigrated)
	if err != nil {
		t.Fatal(err)
	}
	for _, ip := range []string{"10.66.0.70", "fd66::70"} {
		if _, ok := r.waitMacIP("hvb", mac, ip, 2*time.Second-time.Since(landed)); !ok {
			t.Fatalf("no MAC+IP route for %s on B within 2 s of the landing\nB:\n%s", ip, r.run("macip", "hvb"))
		}
		t.Logf("B advertises %s %s %s after the landing", mac, ip, time.Since(landed).Round(time.Millisecond))
	}
	for _, ip := range []string{"10.66.0.70", "fd66::70"} {
		if _, ok := r.waitMacIP("hva", mac, ip, 2*time.Second); !ok {
			t.Fatalf("A did not receive the MAC+IP route for %s\nA:\n%s", ip, r.run("macip", "hva"))
		}
	}
}
