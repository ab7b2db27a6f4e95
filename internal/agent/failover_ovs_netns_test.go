package agent_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/rarp-announce/rarp-announce/internal/config"
	"github.com/rarp-announce/rarp-announce/internal/libvirtfake"
	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/internal/ovstest"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// Names of the Open vSwitch failover test, in the host namespace.
const (
	ovsBridge   = "br-int"
	ovsUplink   = "ovsup" // br-int's physical port, a veth to the switch
	switchToOVS = "swovs" // its switch side, on sw0
)

// An Open vSwitch bridge whose physical port (a veth to the switch, as a
// kernel bond or NIC would be) loses its carrier and gets it back: the
// switch forgot the MACs behind it. The agent found that port in OVSDB
// (br-int's ports that are not VMs'), watched it, and announces every NIC
// of the domains running here on br-int again, through the ovs strategy:
// an OpenFlow packet-out from each VM's port, which OVS floods out of the
// uplink. The switch learns each running VM's MAC on the OVS host's port;
// the MAC of a domain that stopped here stays where the switch had it.
func TestOVSUplinkCarrierBackReannouncesRunningDomains(t *testing.T) {
	netnstest.Require(t, ovstest.Tools...)
	var o *ovstest.OVS
	macs := []rarp.MAC{{0x52, 0x54, 0x00, 0x0f, 0x14, 0x01}, {0x52, 0x54, 0x00, 0x0f, 0x14, 0x02}, {0x52, 0x54, 0x00, 0x0f, 0x14, 0x03}}
	taps := []string{"tap-ovs1", "tap-ovs2", "tap-ovs3"}
	var doms []domain
	h := newHost(t, hostOptions{settings: uplinkSettings(), holdDown: 200 * time.Millisecond,
		before: func(h *host) {
			o = ovstest.Start(t, h.ns)
			o.AddBridge(t, ovsBridge)
			vm := netnstest.New(t, "ovsvm")
			for i, tap := range taps {
				netnstest.Veth(t, h.ns, tap, vm, fmt.Sprintf("eth%d", i))
				// As libvirt adds a VM's port: external_ids:attached-mac
				// tells it from the bridge's physical ports.
				o.Vsctl(t, "add-port", ovsBridge, tap, "--", "set", "Interface", tap, "external_ids:attached-mac="+macs[i].String())
			}
			netnstest.Veth(t, h.ns, ovsUplink, h.rig.Switch, switchToOVS)
			h.rig.Switch.Attach(t, switchToOVS, netnstest.RigSwitchBridge)
			o.Vsctl(t, "add-port", ovsBridge, ovsUplink)
			for i := range taps {
				doms = append(doms, h.nicDomain(t, stateRunning, reasonBooted,
					// No interfaceid: the port is not OVN's, so no OVN readiness wait.
					libvirtfake.NIC{MAC: macs[i].String(), Bridge: ovsBridge, OVS: true, Target: taps[i]}))
			}
		},
		config: func(c *config.Config) {
			c.Strategies.OpenVSwitch = config.StrategyOVS
			c.OVS.DB, c.OVS.RunDir = o.DB, o.Dir
		},
	})
	running, stopped := doms[:2], doms[2]
	h.waitRegistry(t, 3)
	e := h.waitLogged(t, "Open vSwitch bridge's uplinks watched", "", 10*time.Second)
	if ups, _ := e.ContextMap()["uplinks"].([]any); !slices.Equal(ups, []any{ovsUplink}) {
		t.Fatalf("br-int's uplinks from OVSDB: %v, want [%s] (not the VM ports)", e.ContextMap()["uplinks"], ovsUplink)
	}
	for _, m := range macs {
		h.rig.LearnOnOld(t, m.String())
	}
	h.emit(t, stopped, stoppedDestroyed)

	up := h.flap(t, switchToOVS)
	for i, d := range running {
		fs := h.frames.wait(t, macs[i], uplinkFrames, 5*time.Second)
		// A packet-out with in_port = the VM's port, as at a landing.
		if got, want := interfacesOf(fs), fmt.Sprintf("ovs:%s:%d", ovsBridge, o.OFPort(t, taps[i])); len(got) != 1 || got[0] != want {
			t.Errorf("%s re-announced from %v, want [%s] (a packet-out from its port %s)", d.name, got, want, taps[i])
		}
		t.Logf("%s: first re-announce frame %v after the carrier came back", d.name, fs[0].Time.Sub(up))
		if got := h.rig.Switch.WaitFDB(t, netnstest.RigSwitchBridge, macs[i].String(), switchToOVS, 2*time.Second); got != switchToOVS {
			t.Errorf("switch has %s's MAC on %q, want %s", d.name, got, switchToOVS)
		}
	}
	h.waitMetric(t, 2, 2*time.Second, "rarp_announce_uplink_reannounce_nics_total", "reason=carrier_up")
	if n := h.frames.count(macs[2]); n != 0 {
		t.Errorf("%s stopped here but got %d frames", stopped.name, n)
	}
	if got := h.switchFDB(t, macs[2]); got != netnstest.RigSwitchToOld {
		t.Errorf("switch moved the stopped domain's MAC to %q; it must stay on %s", got, netnstest.RigSwitchToOld)
	}
	es := h.logged("uplink event: re-announced the running domains behind it", "")
	if len(es) == 0 {
		t.Fatal("no log line for the uplink event")
	}
	if n := es[0].ContextMap()["nics"]; n != int64(2) {
		t.Errorf("the uplink event's log line counts %v NICs, want 2", n)
	}
}
