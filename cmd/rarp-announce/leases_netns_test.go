package main

import (
	"bytes"
	be "encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/rarp-announce/rarp-announce/internal/libvirtfake"
	"github.com/rarp-announce/rarp-announce/internal/netnstest"
)

// A NIC on a libvirt network (type='network') with ip_announce's leases
// source alone: at its landing the agent asks libvirt (the read-only
// socket) for the network's DHCP lease of the NIC's MAC and sends GARPs
// for that address, after the RARPs, out of the uplink; another MAC's
// lease on the same network is not announced.
func TestRunAnnouncesLeasedAddresses(t *testing.T) {
	rig := rigWithTap(t)
	fake := libvirtfake.Start(t)
	fake.SetReadOnly(true)
	const name, uuid, mac, other = "vm1", "72756e00-0000-4000-8000-0000000000a1", "52:54:00:72:00:a1", "52:54:00:72:00:a2"
	leased, otherLeased := netip.MustParseAddr("10.77.0.59"), netip.MustParseAddr("10.77.0.60")
	fake.SetNetwork("default", []libvirtfake.Lease{{MAC: mac, IP: leased.String()}, {MAC: other, IP: otherLeased.String()}})
	if err := fake.AddDomain(libvirtfake.Domain{Name: name, UUID: uuid, State: 5,
		XML: libvirtfake.LiveXML(name, uuid, 1, libvirtfake.NIC{Type: "network", Network: "default", Bridge: netnstest.RigHostBridge, MAC: mac, Target: "vnet0"})}); err != nil {
		t.Fatal(err)
	}
	rig.LearnOnOld(t, mac)

	cfg := configFile(t, testConfig(3)+`ip_announce:
  enabled: true
  sources:
    nova: false
    static: false
    carried: false
    leases: true
  count: 2
`)
	d := startDaemon(t, rig.Host, "--config", cfg, "--libvirt-socket", fake.Path(), "--metrics-address", "127.0.0.1:0")
	d.waitStatus("/readyz", 200, 10*time.Second)

	sniff := netnstest.Sniff(t, rig.Switch, netnstest.RigSwitchToHost)
	landMigrated(t, fake, name)
	d.waitMetric(`rarp_announce_ip_addresses_total{source="leases"}`, 1, 5*time.Second)
	d.waitMetric(`rarp_announce_ip_frames_total{kind="garp_request",result="sent"}`, 2, 5*time.Second)
	time.Sleep(200 * time.Millisecond)
	frames := sniff.Stop()

	hw, _ := net.ParseMAC(mac)
	var rarps, garps []int // frame indexes
	for i, f := range frames {
		if len(f) < 42 || !bytes.Equal(f[6:12], hw) {
			continue
		}
		switch be.BigEndian.Uint16(f[12:14]) {
		case 0x8035:
			rarps = append(rarps, i)
		case 0x0806:
			spa, _ := netip.AddrFromSlice(f[28:32])
			tpa, _ := netip.AddrFromSlice(f[38:42])
			if spa == otherLeased || tpa == otherLeased {
				t.Errorf("a GARP for %s, another MAC's lease", otherLeased)
			}
			if be.BigEndian.Uint16(f[20:22]) != 1 || spa != leased || tpa != leased || !bytes.Equal(f[22:28], hw) {
				t.Errorf("ARP frame from the VM's MAC is not a GARP request for %s: % x", leased, f[14:42])
				continue
			}
			garps = append(garps, i)
		}
	}
	if len(rarps) == 0 || len(garps) != 2 {
		t.Fatalf("on the switch's port to the host: %d RARPs and %d GARPs for %s from %s, want RARPs and 2 GARPs", len(rarps), len(garps), leased, mac)
	}
	if garps[0] < rarps[0] {
		t.Errorf("the first GARP came before the first RARP")
	}
	if n := d.metric(`rarp_announce_ip_addresses_total{source="leases"}`); n != 1 {
		t.Errorf("addresses from leases = %v, want 1", n)
	}
}
