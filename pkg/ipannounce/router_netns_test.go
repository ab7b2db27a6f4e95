package ipannounce

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/packet"

	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// TestRouterLearnsFromGatewayFrames: a Linux router with the default
// arp_accept=0 and accept_untracked_na=0 gets no neighbour entry from a GARP
// or an unsolicited NA, gets a STALE one from the directed ARP request and
// the NS to its own address, and a GARP replaces an existing entry's MAC
// (DESIGN-NOTES section 7, now with this package's frames).
func TestRouterLearnsFromGatewayFrames(t *testing.T) {
	netnstest.Require(t)
	host := netnstest.New(t, "rhost")
	router := netnstest.New(t, "rtr")
	netnstest.Veth(t, host, "up0", router, "eth0")
	router.Exec(t, "sysctl", "-qw", "net.ipv6.conf.eth0.disable_ipv6=0", "net.ipv4.conf.eth0.arp_accept=0",
		"net.ipv6.conf.eth0.accept_untracked_na=0", "net.ipv6.conf.all.forwarding=1")
	router.Exec(t, "ip", "addr", "add", gw4.String()+"/24", "dev", "eth0")
	router.Exec(t, "ip", "addr", "add", gw6.String()+"/64", "dev", "eth0", "nodad")

	ifi := host.Interface(t, "up0")
	var conn *packet.Conn
	if err := host.Do(func() (err error) { conn, err = packet.Listen(ifi, packet.Raw, 0, nil); return err }); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	send := func(f Frame) {
		t.Helper()
		b, err := f.Build()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.WriteTo(b, &packet.Addr{HardwareAddr: b[0:6]}); err != nil {
			t.Fatal(err)
		}
	}
	// neigh returns "MAC STATE" for ip in the router's table, "" if none.
	neigh := func(ip netip.Addr) string {
		out := router.Exec(t, "ip", "neigh", "show", ip.String(), "dev", "eth0")
		f := strings.Fields(out)
		if len(f) < 3 || f[0] != "lladdr" && (len(f) < 4 || f[1] != "lladdr") {
			return ""
		}
		return f[len(f)-2] + " " + f[len(f)-1]
	}
	// wait polls for up to 1 s until ip's entry has mac in a usable state:
	// STALE as made, or DELAY/PROBE once the router sent to it (it answers
	// an NS with an NA), or REACHABLE.
	usable := map[string]bool{"STALE": true, "DELAY": true, "PROBE": true, "REACHABLE": true}
	wait := func(ip netip.Addr, mac rarp.MAC) (string, bool) {
		var got string
		for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			got = neigh(ip)
			if f := strings.Fields(got); len(f) == 2 && f[0] == mac.String() && usable[f[1]] {
				return got, true
			}
		}
		return got, false
	}

	send(Frame{Kind: GARPRequest, MAC: vmMAC, IP: vm4})
	send(Frame{Kind: GARPReply, MAC: vmMAC, IP: vm4})
	send(Frame{Kind: UnsolicitedNA, MAC: vmMAC, IP: vm6})
	time.Sleep(300 * time.Millisecond)
	if got := neigh(vm4) + neigh(vm6); got != "" {
		t.Fatalf("GARP/NA created entries with arp_accept=0, accept_untracked_na=0: %q", got)
	}

	send(Frame{Kind: GatewayARP, MAC: vmMAC, IP: vm4, Gateway: gw4})
	send(Frame{Kind: GatewayNS, MAC: vmMAC, IP: vm6, Gateway: gw6})
	if got, ok := wait(vm4, vmMAC); !ok {
		t.Errorf("after the gateway ARP: %q, want %s STALE", got, vmMAC)
	}
	if got, ok := wait(vm6, vmMAC); !ok {
		t.Errorf("after the gateway NS: %q, want %s STALE", got, vmMAC)
	}

	// The VM moved to a new MAC (or the entry was stale): a GARP and an NA
	// replace the existing entries' MACs. Past locktime (1 s) since the
	// entries were made.
	time.Sleep(MinInterval)
	moved := rarp.MAC{0x52, 0x54, 0x00, 0x66, 0x00, 0x99}
	send(Frame{Kind: GARPRequest, MAC: moved, IP: vm4})
	send(Frame{Kind: UnsolicitedNA, MAC: moved, IP: vm6})
	if got, ok := wait(vm4, moved); !ok {
		t.Errorf("GARP over an existing entry: %q, want %s", got, moved)
	}
	if got, ok := wait(vm6, moved); !ok {
		t.Errorf("NA (override) over an existing entry: %q, want %s", got, moved)
	}
}
