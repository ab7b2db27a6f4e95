package agent_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/rarp-announce/rarp-announce/internal/libvirtfake"
	"github.com/rarp-announce/rarp-announce/pkg/announce"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// heldOVS stands in for the ovs strategy's announcer (pkg/ovs has its own
// tests against a real Open vSwitch): Announce blocks until released, as
// an OVSDB lookup or the wait for the first frame can, then "starts" an
// announce that runs until CancelMAC.
type heldOVS struct {
	entered chan rarp.MAC
	release chan struct{}
	mu      sync.Mutex
	running map[rarp.MAC]int
}

func (o *heldOVS) Announce(ctx context.Context, port string, mac rarp.MAC, vlans []rarp.VLAN, s announce.Schedule, since time.Time) ([]*announce.Handle, error) {
	o.entered <- mac
	<-o.release
	o.mu.Lock()
	o.running[mac]++
	o.mu.Unlock()
	return nil, nil
}

func (o *heldOVS) CancelMAC(mac rarp.MAC) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := o.running[mac]
	delete(o.running, mac)
	return n
}

func (o *heldOVS) runningFor(mac rarp.MAC) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.running[mac]
}

// The ovs strategy's counterpart of TestCancelBetweenReadinessAndSend: a
// domain that stops while its OVS announce is being set up leaves no OVS
// announce running.
func TestCancelDuringAnOVSAnnounce(t *testing.T) {
	o := &heldOVS{entered: make(chan rarp.MAC, 4), release: make(chan struct{}), running: map[rarp.MAC]int{}}
	h := newHost(t, hostOptions{ovs: o})
	h.tap(t, "tap-ovs", tapSpec{up: true, open: true}) // an OVS port: no Linux master
	mac := rarp.MAC{0x52, 0x54, 0x00, 0x0f, 0x00, 0x01}
	d := h.nicDomain(t, stateOff, 0, libvirtfake.NIC{MAC: mac.String(), Bridge: "br-int", OVS: true, InterfaceID: "0b6a6e46-3c39-4bd1-9bbe-3b0a4d3a6a8d", Target: "tap-ovs"})
	h.land(t, d)
	select {
	case <-o.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the landing never called the OVS announcer")
	}
	h.emit(t, d, stoppedDestroyed)
	h.waitLogged(t, "announces cancelled", d.name, 5*time.Second)
	close(o.release)
	h.waitMetric(t, 1, 5*time.Second, "rarp_announce_nic_announces_total", "strategy=ovs", "result=cancelled")
	if n := o.runningFor(mac); n != 0 {
		t.Errorf("%d OVS announces still running for a stopped domain", n)
	}

	// A landing that is not cancelled keeps its OVS announce.
	d2 := h.nicDomain(t, stateOff, 0, libvirtfake.NIC{MAC: "52:54:00:0f:00:02", Bridge: "br-int", OVS: true, Target: "tap-ovs"})
	h.land(t, d2)
	<-o.entered
	h.waitMetric(t, 1, 5*time.Second, "rarp_announce_nic_announces_total", "strategy=ovs", "result=started")
	if n := o.runningFor(rarp.MAC{0x52, 0x54, 0x00, 0x0f, 0x00, 0x02}); n != 1 {
		t.Errorf("%d OVS announces running for a landed domain, want 1", n)
	}
}
