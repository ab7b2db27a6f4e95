package ovs

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/internal/ovstest"
	"github.com/rarp-announce/rarp-announce/pkg/announce"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// The test topology's names (ovstest.Topo).
const bridge, vmPort, upPort, swToOVS, vmMAC = ovstest.Bridge, ovstest.VMPort, ovstest.UpPort, ovstest.SwToOVS, ovstest.VMMAC

var vm = ovstest.VM

// TestInternalPortInjectionLearnsOnLocal documents the alternative this
// package rejects: sending the announce (tagged with the port's VLAN) on
// the bridge's internal port, as the host strategy does on a Linux bridge.
// The uplink does see it tagged, but OVS learns the VM's MAC on LOCAL
// (the host), not on the VM's port, and floods the frame to the VM itself.
func TestInternalPortInjectionLearnsOnLocal(t *testing.T) {
	tp := ovstest.NewTopo(t)
	tp.LearnOnOld(t)
	onSwitch := netnstest.StartCapture(t, tp.Sw, swToOVS, "")
	onVM := netnstest.StartCapture(t, tp.VM, "eth0", "")
	var s announce.Sender
	if err := tp.Hyp.Do(func() (err error) { s, err = announce.OpenPacket(bridge); return err }); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	f := rarp.Announce(vm, rarp.VLAN{ID: 100})
	frame, _ := f.MarshalBinary()
	if err := s.Send(frame); err != nil {
		t.Fatal(err)
	}
	if got := tp.OVS.WaitFDB(t, bridge, vmMAC, "LOCAL", 100, 2*time.Second); !slices.Contains(got, ovstest.FDBEntry{Port: "LOCAL", VLAN: 100, MAC: vmMAC}) {
		t.Fatalf("OVS fdb %v: expected the VM's MAC on LOCAL", got)
	}
	if got := ovstest.RARPRequests(t, onSwitch.Stop()); !slices.Equal(got, []string{"100|" + vmMAC}) {
		t.Fatalf("uplink saw %q", got)
	}
	if got := ovstest.RARPRequests(t, onVM.Stop()); len(got) != 1 {
		t.Fatalf("the VM saw %q; expected its own announce flooded back to it", got)
	}
}

// TestOpenFlowVersions: the client negotiates OpenFlow 1.0 or 1.3 with a
// bridge that allows only that one (Neutron and OVN enable 1.3), and
// reports a bridge that allows only 1.5 as an OpenFlow error.
func TestOpenFlowVersions(t *testing.T) {
	tp := ovstest.NewTopo(t)
	for _, c := range []struct {
		protocols string
		version   uint8
	}{{"OpenFlow10", 1}, {"OpenFlow13", 4}, {"OpenFlow10,OpenFlow11,OpenFlow12,OpenFlow13,OpenFlow14,OpenFlow15", 5}, {"OpenFlow15", 0}} {
		t.Run(c.protocols, func(t *testing.T) {
			tp.OVS.Vsctl(t, "set", "Bridge", bridge, "protocols="+c.protocols)
			j := NewOpenFlowInjector(tp.OVS.Dir)
			defer j.Close()
			f := rarp.Announce(vm, rarp.VLAN{})
			frame, _ := f.MarshalBinary()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			err := j.Inject(ctx, bridge, tp.VMPort, frame)
			if c.version == 0 {
				if !errors.Is(err, ErrOpenFlow) {
					t.Fatalf("err %v, want ErrOpenFlow", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if v := j.Version(bridge); v != c.version {
				t.Fatalf("negotiated wire version %d, want %d", v, c.version)
			}
		})
	}
}

// TestReconnectAfterSwitchRestart: an idle OpenFlow connection broken by
// an ovs-vswitchd restart is redialled on the next frame, which succeeds.
func TestReconnectAfterSwitchRestart(t *testing.T) {
	tp := ovstest.NewTopo(t)
	j := NewOpenFlowInjector(tp.OVS.Dir)
	defer j.Close()
	f := rarp.Announce(vm, rarp.VLAN{})
	frame, _ := f.MarshalBinary()
	inject := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return j.Inject(ctx, bridge, tp.OVS.OFPort(t, vmPort), frame)
	}
	if err := inject(); err != nil {
		t.Fatal(err)
	}
	tp.OVS.RestartSwitch(t)
	tp.OVS.Appctl(t, "fdb/flush", bridge)
	if err := inject(); err != nil {
		t.Fatalf("after restart: %v", err)
	}
	port := strconv.Itoa(tp.OVS.OFPort(t, vmPort))
	if got := tp.OVS.WaitFDB(t, bridge, vmMAC, port, 100, 2*time.Second); len(got) != 1 {
		t.Fatalf("after restart OVS fdb has %v", got)
	}
}
