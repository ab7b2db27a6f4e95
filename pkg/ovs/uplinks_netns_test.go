package ovs

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/internal/ovstest"
)

// Neutron's layout against a real Open vSwitch: br-int holds the VM ports
// (libvirt's external_ids), an uplink of its own and a patch port to
// br-ex; br-ex holds the physical port and an OVS bond of two legs. The
// uplinks of br-int are its own physical port and br-ex's, not the VM
// ports, the internal ports, the patch ports, a tunnel port or the OVS
// bond (OVS announces on its own bond's failover). A bridge that does not
// exist is an error.
func TestUplinksFollowPatchPorts(t *testing.T) {
	o := ovstest.StartIn(t, "hv", "br-int", "br-ex")
	hv, peer := o.NS, netnstest.New(t, "peer")
	for _, p := range [][2]string{{"tapvm1", "p1"}, {"tapvm2", "p2"}, {"intup", "p3"}, {"exup", "p4"}, {"leg1", "p5"}, {"leg2", "p6"}} {
		netnstest.Veth(t, hv, p[0], peer, p[1])
	}
	o.Vsctl(t, "add-port", "br-int", "tapvm1", "--", "set", "Interface", "tapvm1",
		"external_ids:attached-mac=52:54:00:00:00:01", "external_ids:iface-id=c0ffee00-0000-4000-8000-000000000001")
	o.Vsctl(t, "add-port", "br-int", "tapvm2", "--", "set", "Interface", "tapvm2", "external_ids:attached-mac=52:54:00:00:00:02")
	o.Vsctl(t, "add-port", "br-int", "intup")
	o.Vsctl(t, "add-port", "br-int", "vx0", "--", "set", "Interface", "vx0", "type=vxlan", "options:remote_ip=192.0.2.1")
	o.Vsctl(t, "add-port", "br-int", "int-to-ex", "--", "set", "Interface", "int-to-ex", "type=patch", "options:peer=ex-to-int")
	o.Vsctl(t, "add-port", "br-ex", "ex-to-int", "--", "set", "Interface", "ex-to-int", "type=patch", "options:peer=int-to-ex")
	o.Vsctl(t, "add-port", "br-ex", "exup")
	o.Vsctl(t, "add-bond", "br-ex", "ovsbond", "leg1", "leg2")

	db := &OVSDB{Socket: o.DB, Timeout: 5 * time.Second}
	defer db.Close()
	ctx := context.Background()
	got, err := db.Uplinks(ctx, "br-int")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"exup", "intup"}; !slices.Equal(got, want) {
		t.Errorf("uplinks of br-int: %v, want %v", got, want)
	}
	got, err = db.Uplinks(ctx, "br-ex")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"exup", "intup"}; !slices.Equal(got, want) {
		t.Errorf("uplinks of br-ex (the patch leads back to br-int): %v, want %v", got, want)
	}
	if _, err := db.Uplinks(ctx, "br-none"); !errors.Is(err, ErrPortNotFound) {
		t.Errorf("uplinks of a missing bridge: %v, want ErrPortNotFound", err)
	}
	// The same connection still answers port lookups.
	if p, err := db.Lookup(ctx, "tapvm1"); err != nil || p.Bridge != "br-int" {
		t.Errorf("lookup after uplinks: %+v, %v", p, err)
	}
}
