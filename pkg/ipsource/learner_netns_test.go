package ipsource

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/pkg/ipannounce"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// startLearner opens a Learner on dev inside ns and runs it until cleanup.
func startLearner(t *testing.T, ns *netnstest.NS, dev string, mac rarp.MAC, store *Learned, onEvent func(Event)) {
	t.Helper()
	ifi := ns.Interface(t, dev)
	var l *Learner
	if err := ns.Do(func() (err error) { l, err = Listen(ifi, mac, store); return err }); err != nil {
		t.Fatal(err)
	}
	l.OnEvent = onEvent
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("learner on %s: %v", dev, err)
		}
		l.Close()
	})
}

func waitLearned(t *testing.T, store *Learned, mac rarp.MAC, want []string, timeout time.Duration) {
	t.Helper()
	netnstest.Eventually(t, timeout, func() error {
		var got []string
		for _, ip := range store.Get(mac) {
			got = append(got, ip.String())
		}
		ok := true
		for _, w := range want {
			ok = ok && slices.Contains(got, w)
		}
		if ok {
			return nil
		}
		return fmt.Errorf("learned for %s: %v, want %v", mac, got, want)
	})
}

// TestLearnOnTap: frames a "guest" writes into a real tap reach the
// learner on the host side; its own ARP and NA teach its addresses, another
// MAC's frames teach nothing, the bound holds.
func TestLearnOnTap(t *testing.T) {
	netnstest.Require(t)
	host := netnstest.New(t, "lhost")
	host.Bridge(t, "br0")
	tap := netnstest.OpenTap(t, host, "vnet0")
	host.Attach(t, "vnet0", "br0")
	host.Exec(t, "ip", "link", "set", "dev", "vnet0", "up")

	store := NewLearned(2, 8, 0)
	startLearner(t, host, "vnet0", guestMAC, store, nil)
	time.Sleep(50 * time.Millisecond)

	v4, v6 := netip.MustParseAddr("10.66.0.10"), netip.MustParseAddr("fd66::10")
	for _, f := range []ipannounce.Frame{
		{Kind: ipannounce.GARPRequest, MAC: otherMAC, IP: netip.MustParseAddr("10.66.0.66")},
		// On a VLAN inside the guest: not the NIC's address on its port.
		{Kind: ipannounce.GARPRequest, MAC: guestMAC, IP: netip.MustParseAddr("10.77.0.10"), VLAN: rarp.VLAN{ID: 77}},
		{Kind: ipannounce.GARPRequest, MAC: guestMAC, IP: v4},
		{Kind: ipannounce.UnsolicitedNA, MAC: guestMAC, IP: v6},
		{Kind: ipannounce.GARPRequest, MAC: guestMAC, IP: netip.MustParseAddr("10.66.0.77")}, // over the bound
	} {
		if err := tap.Write(build(t, f)); err != nil {
			t.Fatal(err)
		}
	}
	waitLearned(t, store, guestMAC, []string{"10.66.0.10", "fd66::10"}, 2*time.Second)
	time.Sleep(100 * time.Millisecond)
	if got := store.Get(guestMAC); len(got) != 2 || got[0] != v4 {
		t.Fatalf("learned %v: want only 10.66.0.10 and fd66::10 (a tagged frame teaches nothing; bound of 2)", got)
	}
	if got := store.Get(otherMAC); got != nil {
		t.Fatalf("learned %v for a MAC that is not the NIC's", got)
	}
}

// Only the guest's own frames teach, each in its direction: a GARP any
// host on the segment floods to the guest with the guest's MAC as its
// source, and a DHCP ACK the guest forges for itself, teach nothing; a
// DHCP ACK from the network to the guest does. Before, the first two
// taught their addresses (the socket sees both directions).
func TestLearnOnlyInTheGuestsDirection(t *testing.T) {
	netnstest.Require(t)
	host := netnstest.New(t, "lhost")
	lan := netnstest.New(t, "llan")
	host.Bridge(t, "br0")
	tap := netnstest.OpenTap(t, host, "vnet0")
	host.Attach(t, "vnet0", "br0")
	host.Exec(t, "ip", "link", "set", "dev", "vnet0", "up")
	netnstest.Veth(t, host, "lan0", lan, "eth0")
	host.Attach(t, "lan0", "br0")

	store := NewLearned(8, 8, 0)
	startLearner(t, host, "vnet0", guestMAC, store, nil)
	time.Sleep(50 * time.Millisecond)

	// Flooded to the guest by the bridge: outgoing on its tap.
	netnstest.Send(t, lan, "eth0", build(t, ipannounce.Frame{Kind: ipannounce.GARPRequest, MAC: guestMAC, IP: netip.MustParseAddr("10.66.0.99")}))
	// Forged by the guest: a server's reply coming in from it.
	if err := tap.Write(dhcpAck(guestMAC, "10.66.0.98", 0)); err != nil {
		t.Fatal(err)
	}
	// The real thing, each way: the guest's own GARP, the network's ACK.
	if err := tap.Write(build(t, ipannounce.Frame{Kind: ipannounce.GARPRequest, MAC: guestMAC, IP: netip.MustParseAddr("10.66.0.10")})); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // the bridge learns the guest's MAC on its tap again (the flood taught lan0)
	netnstest.Send(t, lan, "eth0", dhcpAck(guestMAC, "10.66.0.11", 0))
	waitLearned(t, store, guestMAC, []string{"10.66.0.10", "10.66.0.11"}, 2*time.Second)
	time.Sleep(100 * time.Millisecond)
	for _, ip := range store.Get(guestMAC) {
		if s := ip.String(); s == "10.66.0.99" || s == "10.66.0.98" {
			t.Errorf("learned %s from a frame in the wrong direction (all: %v)", s, store.Get(guestMAC))
		}
	}
}

// TestLearnFromRealGuest: a guest namespace with a real IP stack behind a
// veth (the host side stands for its tap) gets a lease from busybox udhcpd
// and talks ARP and NDP; the learner on the host side learns the leased
// address from the DHCP ACK and the static ones from ARP and NS.
func TestLearnFromRealGuest(t *testing.T) {
	netnstest.Require(t, "busybox")
	host := netnstest.New(t, "lhost")
	guest := netnstest.New(t, "lguest")
	srv := netnstest.New(t, "lsrv")
	host.Bridge(t, "br0")
	netnstest.Veth(t, host, "gst0", guest, "eth0")
	netnstest.Veth(t, host, "srv0", srv, "eth0")
	host.Attach(t, "gst0", "br0")
	host.Attach(t, "srv0", "br0")
	for _, ns := range []*netnstest.NS{guest, srv} {
		ns.Exec(t, "sysctl", "-qw", "net.ipv6.conf.eth0.disable_ipv6=0")
	}
	srv.Exec(t, "ip", "addr", "add", "10.66.0.1/24", "dev", "eth0")
	srv.Exec(t, "ip", "addr", "add", "fd66::1/64", "dev", "eth0", "nodad")

	mac, ok := rarp.MACFrom(guest.Interface(t, "eth0").HardwareAddr)
	if !ok {
		t.Fatal("guest MAC")
	}
	store := NewLearned(4, 8, 0)
	var (
		mu  sync.Mutex
		via = map[string]ipannounce.Proto{}
	)
	startLearner(t, host, "gst0", mac, store, func(e Event) {
		mu.Lock()
		defer mu.Unlock()
		if e.Result == Learnt {
			via[e.IP.String()] = e.Proto
		}
	})
	time.Sleep(50 * time.Millisecond)

	dir := t.TempDir()
	conf := filepath.Join(dir, "udhcpd.conf")
	if err := os.WriteFile(conf, []byte("start 10.66.0.50\nend 10.66.0.60\ninterface eth0\nlease_file "+
		filepath.Join(dir, "leases")+"\noption subnet 255.255.255.0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "leases"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	udhcpd := srv.Command("busybox", "udhcpd", "-f", conf)
	if err := udhcpd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = udhcpd.Process.Kill(); _ = udhcpd.Wait() })
	time.Sleep(200 * time.Millisecond)
	// -s /bin/true: take the lease, configure nothing.
	guest.Exec(t, "busybox", "udhcpc", "-i", "eth0", "-f", "-q", "-n", "-t", "5", "-T", "1", "-s", "/bin/true")
	// udhcpd picks from its pool by a hash of the MAC.
	var leased string
	netnstest.Eventually(t, 2*time.Second, func() error {
		mu.Lock()
		for ip, p := range via {
			a := netip.MustParseAddr(ip)
			if p == ipannounce.ProtoDHCP && a.Compare(netip.MustParseAddr("10.66.0.50")) >= 0 && a.Compare(netip.MustParseAddr("10.66.0.60")) <= 0 {
				leased = ip
			}
		}
		mu.Unlock()
		if leased == "" {
			return fmt.Errorf("no address from udhcpd's pool learned from a DHCP ACK: %v", store.Get(mac))
		}
		return nil
	})

	// The guest's kernel ARPs for its gateway from its own address and
	// sends an NS from its own IPv6 address.
	guest.Exec(t, "ip", "addr", "add", "10.66.0.10/24", "dev", "eth0")
	guest.Exec(t, "ip", "addr", "add", "fd66::10/64", "dev", "eth0", "nodad")
	guest.Exec(t, "ping", "-c", "1", "-W", "2", "10.66.0.1")
	guest.Exec(t, "ping", "-6", "-c", "1", "-W", "2", "fd66::1")
	waitLearned(t, store, mac, []string{leased, "10.66.0.10", "fd66::10"}, 2*time.Second)
	mu.Lock()
	defer mu.Unlock()
	want := map[string]ipannounce.Proto{leased: ipannounce.ProtoDHCP, "10.66.0.10": ipannounce.ProtoARP, "fd66::10": ipannounce.ProtoNDP}
	for ip, p := range want {
		if via[ip] != p {
			t.Errorf("%s learned via %d, want %d (all: %v)", ip, via[ip], p, via)
		}
	}
}
