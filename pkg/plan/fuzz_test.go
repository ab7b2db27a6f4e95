package plan

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/rarp-announce/rarp-announce/pkg/announce"
	"github.com/rarp-announce/rarp-announce/pkg/domxml"
)

// FuzzPlanXML: whatever live XML domxml.Parse accepts, Plan gives one
// target per parsed NIC, and every host or ovs target becomes announce
// requests the announcer accepts (Request.Validate): a unicast MAC, a
// device or port name, at least one VLAN and each VLAN valid; with the
// strategy table as shipped, and with each strategy forced (rarp-announce
// announce --strategy). A target the announcer would refuse is a VM the
// agent plans to announce and then cannot.
func FuzzPlanXML(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("..", "domxml", "testdata", "*.xml"))
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(`<domain><name>v</name><uuid>6c61622d-766d-4000-8000-000000000001</uuid><devices>` +
		`<interface type='bridge'><mac address='52:54:00:00:00:01'/><source bridge='br0'/><target dev='vnet0'/>` +
		`<vlan trunk='yes'><tag id='10'/><tag id='4094' nativeMode='untagged'/></vlan></interface>` +
		`<interface type='bridge'><mac address='52:54:00:00:00:02'/><source bridge='ovsbr'/><virtualport type='openvswitch'/><target dev='vnet1'/></interface>` +
		`<interface type='direct'><mac address='52:54:00:00:00:03'/><source dev='eth0' mode='bridge'/><target dev='macvtap0'/></interface>` +
		`</devices></domain>`))
	schedule := announce.Schedule{Initial: 1, Step: 1, Max: 1, Rounds: 1, Bursts: 1}
	if err := schedule.Validate(); err != nil {
		f.Fatal(err)
	}
	shipped := Options{
		Strategies: Strategies{KindBridge: Host, KindNetwork: Host, KindDirect: Host, KindOpenVSwitch: OVS, KindVhostUser: QEMU, KindEthernet: Skip},
		RepairFDB:  true,
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		dom, _ := domxml.Parse(data)
		if dom == nil {
			return
		}
		for _, force := range []Strategy{"", Host, OVS, QEMU} {
			o := shipped
			o.Force = force
			targets := Plan(dom, o)
			if len(targets) != len(dom.Interfaces) {
				t.Fatalf("force %q: %d targets for %d NICs", force, len(targets), len(dom.Interfaces))
			}
			for _, tg := range targets {
				var reqs []announce.Request
				switch tg.Strategy {
				case Host:
					for _, v := range tg.VLANs {
						reqs = append(reqs, announce.Request{MAC: tg.NIC.MAC, Interface: tg.Device, VLAN: v, Schedule: schedule})
					}
				case OVS:
					if tg.Port == "" {
						t.Fatalf("force %q: ovs target without a port: %s", force, tg)
					}
					for _, v := range tg.VLANs {
						reqs = append(reqs, announce.Request{MAC: tg.NIC.MAC, Port: announce.OVSPort(tg.Port, "br-int", 1), VLAN: v, Schedule: schedule})
					}
				default:
					continue
				}
				if len(reqs) == 0 {
					t.Fatalf("force %q: %s target with no VLAN (not even untagged): %s", force, tg.Strategy, tg)
				}
				for _, r := range reqs {
					if err := r.Validate(); err != nil {
						t.Fatalf("force %q: target %s gives a request the announcer refuses: %v", force, tg, err)
					}
				}
			}
		}
	})
}
