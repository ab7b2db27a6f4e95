package reconverge_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/rarp-announce/rarp-announce/pkg/rarp"
	"github.com/rarp-announce/rarp-announce/pkg/reconverge"
)

// A Linux router on the far side of the uplink answers the probe; the reply
// comes back to this host's uplink, addressed to the VM's MAC.
func TestProbeGetsTheGatewaysReplyThroughThisHost(t *testing.T) {
	host, router := watchRig(t)
	router.Exec(t, "ip", "addr", "add", "10.66.0.1/24", "dev", "sw")
	vm := rarp.MustParseMAC("52:54:00:aa:bb:cc")
	ifi := host.Interface(t, "upl")
	p := reconverge.Probe{Interface: ifi, MAC: vm, IP: netip.MustParseAddr("10.66.0.10"), Gateway: netip.MustParseAddr("10.66.0.1")}
	var res reconverge.ProbeResult
	err := host.Do(func() (err error) { res, err = p.Run(context.Background(), 2*time.Second); return err })
	if err != nil {
		t.Fatal(err)
	}
	if !res.Answered {
		t.Fatal("the router's ARP reply did not come back through the uplink")
	}
	rmac := router.Interface(t, "sw").HardwareAddr.String()
	if res.GatewayMAC.String() != rmac {
		t.Errorf("gateway MAC %s, want the router's %s", res.GatewayMAC, rmac)
	}
	t.Logf("probe answered in %v", res.RTT)

	// Nobody owns 10.66.0.2: no reply, within the timeout, no error.
	p.Gateway = netip.MustParseAddr("10.66.0.2")
	start := time.Now()
	err = host.Do(func() (err error) { res, err = p.Run(context.Background(), 300*time.Millisecond); return err })
	if err != nil || res.Answered {
		t.Fatalf("unanswered probe: %+v, %v; want not answered, no error", res, err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("unanswered probe took %v with a 300ms timeout", d)
	}

	// A context already ended (Ctrl-C, a parent's timeout) ends the
	// probe at once, not after its timeout: the cancel used to be undone
	// by the read deadline set after it.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start = time.Now()
	err = host.Do(func() (err error) { res, err = p.Run(ctx, 5*time.Second); return err })
	if d := time.Since(start); err != nil || res.Answered || d > time.Second {
		t.Errorf("probe with an ended context: %+v, %v after %v; want not answered, no error, at once", res, err, d)
	}
}

func TestProbeRefusesBadInput(t *testing.T) {
	p := reconverge.Probe{MAC: rarp.MustParseMAC("52:54:00:aa:bb:cc"), IP: netip.MustParseAddr("fe80::1"), Gateway: netip.MustParseAddr("10.0.0.1")}
	if _, err := p.Run(context.Background(), time.Second); err == nil {
		t.Error("IPv6 VM address: no error")
	}
	p.IP, p.MAC = netip.MustParseAddr("10.0.0.2"), rarp.MustParseMAC("ff:ff:ff:ff:ff:ff")
	if _, err := p.Run(context.Background(), time.Second); err == nil {
		t.Error("broadcast MAC: no error")
	}
}
