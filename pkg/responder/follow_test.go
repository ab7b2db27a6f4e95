package responder

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/rarp-announce/rarp-announce/internal/frametest"
	"github.com/rarp-announce/rarp-announce/internal/netnstest"
)

// bridgedPair is newPair with the server's address on bridge br0, srv0 its
// port: srv:br0 (srvMAC, 10.99.255.254/16) - srv0 <-> cli:cli0.
func bridgedPair(t *testing.T) *pair {
	t.Helper()
	p := &pair{srv: netnstest.New(t, "rfsrv"), cli: netnstest.New(t, "rfcli")}
	netnstest.Veth(t, p.srv, "srv0", p.cli, "cli0")
	p.cli.Exec(t, "ip", "link", "set", "cli0", "address", cliMAC)
	p.cli.Exec(t, "ip", "addr", "add", "10.99.255.253/16", "dev", "cli0")
	makeBridge(t, p.srv)
	return p
}

// makeBridge (re)creates br0 the way a network configuration does.
func makeBridge(t *testing.T, ns *netnstest.NS) {
	t.Helper()
	ns.Bridge(t, "br0")
	ns.Exec(t, "ip", "link", "set", "br0", "address", srvMAC)
	ns.Exec(t, "ip", "addr", "add", "10.99.255.254/16", "dev", "br0")
	ns.Attach(t, "srv0", "br0")
}

// askUntil repeats a request every 100 ms until a reply comes or timeout:
// a request sent before the ring is reopened is not seen by anyone.
func askUntil(t *testing.T, c *client, frame []byte, timeout time.Duration) (time.Duration, bool) {
	t.Helper()
	start := time.Now()
	for time.Since(start) < timeout {
		if c.ask(t, frame, 100*time.Millisecond) != nil {
			return time.Since(start), true
		}
	}
	return time.Since(start), false
}

// After a netlink overflow ends the responder's subscriptions, it
// subscribes again and resyncs: a bridge deleted and created again later
// is served within 2 s. (Before, the subscription ended for good and the
// ring stayed on the deleted bridge.)
func TestFollowsABridgeRecreatedAfterAnOverflow(t *testing.T) {
	netnstest.Require(t)
	p := bridgedPair(t)
	var paused atomic.Bool
	entered := make(chan struct{}, 1)
	hold := make(chan struct{})
	r, _ := serve(t, p.srv, Config{
		Interfaces: []string{"br0"}, Table: holderOf(t, "52:54:00:00:00:01 10.99.0.1"),
		receiveBuffer: 4096,
		beforeUpdate: func() {
			if paused.Load() {
				select {
				case entered <- struct{}{}:
				default:
				}
				<-hold
			}
		},
	})
	c := newClient(t, p.cli, "cli0")
	req := frametest.Hex(t, refRequest)
	if c.ask(t, req, 2*time.Second) == nil {
		t.Fatal("no reply before the overflow")
	}

	// Stop taking updates, then flood the subscription: 64 queued in the
	// channel, the rest in a 4 KiB socket buffer that overflows.
	paused.Store(true)
	p.srv.Exec(t, "ip", "link", "set", "dev", "br0", "mtu", "1400") // wakes the loop into the hook
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("update loop did not pause")
	}
	h := p.srv.Netlink()
	for i := range 300 {
		if err := h.LinkAdd(&netlink.Ifb{LinkAttrs: netlink.LinkAttrs{Name: fmt.Sprintf("f%d", i)}}); err != nil {
			t.Fatal(err)
		}
	}
	paused.Store(false)
	close(hold)
	netnstest.WaitFor(t, "a resubscription after the overflow", func() bool { return r.resyncs.Load() != 0 })

	p.srv.Exec(t, "ip", "link", "del", "br0")
	makeBridge(t, p.srv)
	took, ok := askUntil(t, c, req, 2*time.Second)
	if !ok {
		t.Fatalf("no reply on the re-created bridge within %v", took)
	}
	t.Logf("answering on the re-created bridge %v after it was created", took.Round(time.Millisecond))
}

// A port leaving a bridge makes the kernel send an AF_BRIDGE RTM_DELLINK
// for the port: the port is still there and stays served, its ring open.
func TestPortLeavingABridgeIsNotADeletion(t *testing.T) {
	netnstest.Require(t)
	p := newPair(t, "10.99.255.254/16")
	p.srv.Bridge(t, "br1")
	r, _ := serve(t, p.srv, Config{Interfaces: []string{"srv0"}, Table: holderOf(t, "52:54:00:00:00:01 10.99.0.1")})
	ring := r.links[0].ring.Load()
	p.srv.Attach(t, "srv0", "br1")
	p.srv.Exec(t, "ip", "link", "set", "dev", "srv0", "nomaster")
	time.Sleep(300 * time.Millisecond)
	if r.links[0].stop.Load() || r.links[0].ring.Load() != ring {
		t.Fatal("leaving a bridge was taken for a deletion: the ring was closed")
	}
	c := newClient(t, p.cli, "cli0")
	if c.ask(t, frametest.Hex(t, refRequest), 2*time.Second) == nil {
		t.Fatal("no reply after leaving the bridge")
	}
}
