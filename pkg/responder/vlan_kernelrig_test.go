//go:build kernelrig

package responder

import (
	"fmt"
	"testing"
	"time"

	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
	"github.com/rarp-announce/rarp-announce/pkg/rarptable"
)

// These run in the kernel rig (test/kernel): they need 802.1Q
// sub-interfaces and VLAN-filtering bridges.

// rarpVLANs returns the VLAN of each RARP frame in frames, -1 for an
// untagged one.
func rarpVLANs(frames [][]byte) []int {
	var out []int
	for _, f := range frames {
		if vid, et, ok := netnstest.VLANOf(f); ok && et == rarp.EtherTypeRARP {
			out = append(out, int(vid))
		} else if !ok && len(f) >= 14 && uint16(f[12])<<8|uint16(f[13]) == rarp.EtherTypeRARP {
			out = append(out, -1)
		}
	}
	return out
}

func wantReply(t *testing.T, reply []byte, sender, target string) {
	t.Helper()
	if reply == nil {
		t.Fatal("no answer")
	}
	var f rarp.Frame
	if err := f.UnmarshalBinary(reply); err != nil || f.SenderIP.String() != sender || f.TargetIP.String() != target {
		t.Fatalf("reply %v %v, want %s answering %s", &f, err, sender, target)
	}
}

// vlan100Pair is newPair with VLAN 100 on both ends: srv0.100
// (10.100.0.254/24) and cli0.100, up, and a table that maps
// 52:54:00:00:00:01 to 10.100.0.1.
func vlan100Pair(t *testing.T) (*pair, *rarptable.Holder) {
	t.Helper()
	netnstest.Require(t)
	p := newPair(t, "10.99.255.254/16")
	tbl := holderOf(t, "52:54:00:00:00:01 10.100.0.1")
	p.srv.Exec(t, "ip", "link", "add", "link", "srv0", "name", "srv0.100", "type", "vlan", "id", "100")
	p.cli.Exec(t, "ip", "link", "add", "link", "cli0", "name", "cli0.100", "type", "vlan", "id", "100")
	p.srv.Exec(t, "ip", "addr", "add", "10.100.0.254/24", "dev", "srv0.100")
	p.cli.Exec(t, "ip", "addr", "add", "10.100.0.253/24", "dev", "cli0.100")
	p.srv.Exec(t, "ip", "link", "set", "srv0.100", "up")
	p.cli.Exec(t, "ip", "link", "set", "cli0.100", "up")
	return p, tbl
}

// TestVLANSubInterface: on a VLAN sub-interface the request is answered,
// and request and reply cross the trunk tagged; the same request untagged
// reaches the parent, where nobody answers.
func TestVLANSubInterface(t *testing.T) {
	p, tbl := vlan100Pair(t)
	sniff := netnstest.Sniff(t, p.cli, "cli0")
	r, _ := serve(t, p.srv, Config{Interfaces: []string{"srv0.100"}, Table: tbl})

	sub := newClient(t, p.cli, "cli0.100")
	wantReply(t, sub.ask(t, request(t, cliMAC, cliMAC, "52:54:00:00:00:01"), 2*time.Second), "10.100.0.254", "10.100.0.1")
	c := newClient(t, p.cli, "cli0")
	if reply := c.ask(t, request(t, cliMAC, cliMAC, "52:54:00:00:00:01"), 300*time.Millisecond); reply != nil {
		t.Fatalf("answered an untagged request on the parent: %x", reply)
	}
	if got := rarpVLANs(sniff.Stop()); len(got) != 3 || got[0] != 100 || got[1] != 100 || got[2] != -1 {
		t.Fatalf("RARP frames on the trunk by VLAN %v, want request and reply on 100, then the untagged request", got)
	}
	waitStats(t, r, "srv0.100", func(s Stats) bool { return s.Replies == 1 && s.Requests == 1 })
}

// TestVLANParentAndSubInterface: served on both the parent and its VLAN
// sub-interface, a request in VLAN 100 is answered once, by the
// sub-interface, tagged. The kernel also hands the frame, untagged, to
// what is bound to the parent: the parent must not answer it into the
// native VLAN, nor count it (found in review: it did both).
func TestVLANParentAndSubInterface(t *testing.T) {
	p, tbl := vlan100Pair(t)
	sniff := netnstest.Sniff(t, p.cli, "cli0")
	r, _ := serve(t, p.srv, Config{Interfaces: []string{"srv0", "srv0.100"}, Table: tbl, OffLink: true})

	sub := newClient(t, p.cli, "cli0.100")
	wantReply(t, sub.ask(t, request(t, cliMAC, cliMAC, "52:54:00:00:00:01"), 2*time.Second), "10.100.0.254", "10.100.0.1")
	time.Sleep(300 * time.Millisecond) // a second reply would be out by now
	if got := rarpVLANs(sniff.Stop()); len(got) != 2 || got[0] != 100 || got[1] != 100 {
		t.Fatalf("RARP frames on the trunk by VLAN %v, want the request and one reply, both in VLAN 100", got)
	}
	waitStats(t, r, "srv0.100", func(s Stats) bool { return s.Replies == 1 && s.Requests == 1 })
	if s := r.Stats()["srv0"]; s.Requests != 0 || s.Replies != 0 {
		t.Errorf("the parent saw the sub-interface's request: %+v", s)
	}
}

// TestVLANFilteringBridge: a hypervisor's VLAN-aware bridge (vlan_filtering
// 1) whose host address is in VLAN 100, a client on an access port with
// PVID 100 and another on PVID 200. The responder answers on the bridge
// (its own PVID 100, untagged) or on the bridge's VLAN sub-interface
// br0.100 (the bridge device a tagged member of 100); the client in VLAN
// 200 is not answered: its request never reaches the host.
func TestVLANFilteringBridge(t *testing.T) {
	for _, tc := range []struct {
		name, ifname string
		self         []string // the bridge device's own VLAN 100 membership
	}{
		{"bridge PVID", "br0", []string{"pvid", "untagged"}},
		{"bridge VLAN sub-interface", "br0.100", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			netnstest.Require(t)
			srv, cli := netnstest.New(t, "vbsrv"), netnstest.New(t, "vbcli")
			srv.Exec(t, "ip", "link", "add", "br0", "type", "bridge", "vlan_filtering", "1", "stp_state", "0", "forward_delay", "0")
			srv.Exec(t, "ip", "link", "set", "br0", "address", srvMAC)
			srv.Exec(t, "bridge", "vlan", "del", "dev", "br0", "vid", "1", "self")
			srv.Exec(t, append([]string{"bridge", "vlan", "add", "dev", "br0", "vid", "100", "self"}, tc.self...)...)
			srv.Exec(t, "ip", "link", "set", "br0", "up")
			for i, vid := range []string{"100", "200"} {
				port, peer := "srv"+string(rune('0'+i)), "cli"+string(rune('0'+i))
				netnstest.Veth(t, srv, port, cli, peer)
				srv.Attach(t, port, "br0")
				srv.Exec(t, "bridge", "vlan", "del", "dev", port, "vid", "1")
				srv.Exec(t, "bridge", "vlan", "add", "dev", port, "vid", vid, "pvid", "untagged")
				cli.Exec(t, "ip", "addr", "add", "10.100.0."+vid[:1]+"3/24", "dev", peer)
			}
			addrOn := "br0"
			if tc.ifname != "br0" {
				srv.Exec(t, "ip", "link", "add", "link", "br0", "name", tc.ifname, "type", "vlan", "id", "100")
				srv.Exec(t, "ip", "link", "set", tc.ifname, "up")
				addrOn = tc.ifname
			}
			srv.Exec(t, "ip", "addr", "add", "10.100.0.254/24", "dev", addrOn)
			waitForwarding(t, srv, "srv0", "srv1")
			tbl := holderOf(t, "52:54:00:00:00:01 10.100.0.1")
			r, _ := serve(t, srv, Config{Interfaces: []string{tc.ifname}, Table: tbl})

			c0 := newClient(t, cli, "cli0")
			c0mac := cli.Interface(t, "cli0").HardwareAddr.String()
			wantReply(t, c0.ask(t, request(t, c0mac, c0mac, "52:54:00:00:00:01"), 2*time.Second), "10.100.0.254", "10.100.0.1")
			c1 := newClient(t, cli, "cli1")
			c1mac := cli.Interface(t, "cli1").HardwareAddr.String()
			if reply := c1.ask(t, request(t, c1mac, c1mac, "52:54:00:00:00:01"), 300*time.Millisecond); reply != nil {
				t.Fatalf("answered a client in VLAN 200: %x", reply)
			}
			waitStats(t, r, tc.ifname, func(s Stats) bool { return s.Replies == 1 && s.Requests == 1 })
		})
	}
}

// waitForwarding waits until the bridge forwards on each port (with
// forward_delay 0 the ports pass through listening and learning at once,
// but not synchronously with `ip link set master`).
func waitForwarding(t *testing.T, ns *netnstest.NS, ports ...string) {
	t.Helper()
	// Ports already forwarding are not read again (they stay forwarding).
	i := 0
	netnstest.Eventually(t, 5*time.Second, func() error {
		for ; i < len(ports); i++ {
			if state := ns.Exec(t, "cat", "/sys/class/net/"+ports[i]+"/brport/state"); state != "3\n" {
				return fmt.Errorf("bridge port %s not forwarding (state %q)", ports[i], state)
			}
		}
		return nil
	})
}
