//go:build kernelrig

package kernel

import (
	"os"
	"slices"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/rarp-announce/rarp-announce/internal/netnstest"
)

// EnvFail makes TestBridgePortVLANs assert a wrong PVID: the way to check
// that a failing test inside the rig fails the rig (KRIG_ENV=RARP_KERNELRIG_FAIL=1).
const EnvFail = "RARP_KERNELRIG_FAIL"

// TestRigKernel: every kernel object the rig exists for can be made.
func TestRigKernel(t *testing.T) {
	netnstest.Require(t)
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	t.Logf("kernel %s", unix.ByteSliceToString(u.Release[:]))
	ns := netnstest.New(t, "feat")
	ns.Exec(t, "ip", "link", "add", "d0", "type", "dummy")
	ns.Exec(t, "ip", "link", "add", "link", "d0", "name", "d0.100", "type", "vlan", "id", "100")
	ns.Exec(t, "ip", "link", "add", "br0", "type", "bridge", "vlan_filtering", "1")
	ns.Exec(t, "ip", "link", "add", "bond0", "type", "bond", "mode", "active-backup")
	br, err := ns.Netlink().LinkByName("br0")
	if err != nil {
		t.Fatal(err)
	}
	if b, ok := br.(*netlink.Bridge); !ok || b.VlanFiltering == nil || !*b.VlanFiltering {
		t.Fatalf("br0 is not a VLAN-filtering bridge: %#v", br)
	}
}

// TestBridgePortVLANs: a VLAN-aware bridge with taps on PVIDs 100 and 200
// and a trunk uplink carrying both, read back through netlink as the
// announce path will read it (port VLANs, PVID, egress untagged).
func TestBridgePortVLANs(t *testing.T) {
	netnstest.Require(t)
	ns := netnstest.Uplinked(t, "vbr", "br0", true, "uplink", "trunk")
	ns.Exec(t, "bridge", "vlan", "del", "dev", "uplink", "vid", "1")
	for _, vid := range []string{"100", "200"} {
		tap := "tap" + vid
		ns.Exec(t, "ip", "tuntap", "add", "dev", tap, "mode", "tap")
		ns.Attach(t, tap, "br0")
		ns.Exec(t, "bridge", "vlan", "del", "dev", tap, "vid", "1")
		ns.Exec(t, "bridge", "vlan", "add", "dev", tap, "vid", vid, "pvid", "untagged")
		ns.Exec(t, "bridge", "vlan", "add", "dev", "uplink", "vid", vid)
	}

	vlans, err := ns.Netlink().BridgeVlanList()
	if err != nil {
		t.Fatal(err)
	}
	type portVLAN struct {
		VID            uint16
		PVID, Untagged bool
	}
	read := func(port string) []portVLAN {
		var out []portVLAN
		for _, v := range vlans[int32(ns.Interface(t, port).Index)] {
			out = append(out, portVLAN{v.Vid, v.PortVID(), v.EngressUntag()})
		}
		return out
	}
	wantPVID := uint16(100)
	if os.Getenv(EnvFail) == "1" {
		wantPVID = 101 // deliberately wrong: the rig must fail
	}
	for port, want := range map[string][]portVLAN{
		"tap100": {{wantPVID, true, true}},
		"tap200": {{200, true, true}},
		"uplink": {{100, false, false}, {200, false, false}},
	} {
		if got := read(port); !slices.Equal(got, want) {
			t.Errorf("%s: VLANs %+v, want %+v", port, got, want)
		}
	}
}

// TestBondFailoverEvent: an active-backup bond under a bridge whose active
// slave loses carrier fails over, and netlink shows it: an RTM_NEWLINK for the bond
// carrying IFLA_EVENT_BONDING_FAILOVER, and the new active slave in the
// bond's attributes.
func TestBondFailoverEvent(t *testing.T) {
	netnstest.Require(t)
	ns, peer := netnstest.New(t, "bond"), netnstest.New(t, "bpeer")
	ns.Exec(t, "ip", "link", "add", "bond0", "type", "bond", "mode", "active-backup", "miimon", "10")
	for _, e := range []string{"e0", "e1"} {
		netnstest.Veth(t, ns, e, peer, "p"+e[1:])
		ns.Exec(t, "ip", "link", "set", e, "down")
		ns.Exec(t, "ip", "link", "set", e, "master", "bond0")
	}
	ns.Exec(t, "ip", "link", "set", "bond0", "up")
	// Under a bridge, as a hypervisor's uplink.
	ns.Bridge(t, "br0")
	ns.Attach(t, "bond0", "br0")
	e0, e1 := ns.Interface(t, "e0").Index, ns.Interface(t, "e1").Index
	if got := activeSlave(t, ns); got != e0 {
		t.Fatalf("active slave %d, want e0 (%d)", got, e0)
	}

	h, err := netns.GetFromName(ns.Name)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	s, err := nl.SubscribeAt(h, netns.None(), unix.NETLINK_ROUTE, unix.RTNLGRP_LINK)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tv := unix.NsecToTimeval((200 * time.Millisecond).Nanoseconds())
	if err := s.SetReceiveTimeout(&tv); err != nil {
		t.Fatal(err)
	}

	peer.Exec(t, "ip", "link", "set", "p0", "down") // e0 loses carrier
	bond := ns.Interface(t, "bond0").Index
	deadline := time.Now().Add(5 * time.Second)
	for !failoverSeen(t, s, bond) {
		if time.Now().After(deadline) {
			t.Fatal("no RTM_NEWLINK with IFLA_EVENT_BONDING_FAILOVER for bond0 within 5s")
		}
	}
	if got := activeSlave(t, ns); got != e1 {
		t.Fatalf("after failover: active slave %d, want e1 (%d)", got, e1)
	}
}

func activeSlave(t *testing.T, ns *netnstest.NS) int {
	t.Helper()
	l, err := ns.Netlink().LinkByName("bond0")
	if err != nil {
		t.Fatal(err)
	}
	b, ok := l.(*netlink.Bond)
	if !ok {
		t.Fatalf("bond0 is a %s", l.Type())
	}
	return b.ActiveSlave
}

// failoverSeen reads one batch of link notifications and reports whether
// one is the bond's failover event.
func failoverSeen(t *testing.T, s *nl.NetlinkSocket, bond int) bool {
	t.Helper()
	msgs, _, err := s.Receive()
	if err != nil {
		if err == unix.EAGAIN || err == unix.EWOULDBLOCK || err == unix.EINTR {
			return false
		}
		t.Fatal(err)
	}
	for _, m := range msgs {
		if m.Header.Type != unix.RTM_NEWLINK {
			continue
		}
		ifi := nl.DeserializeIfInfomsg(m.Data)
		if int(ifi.Index) != bond {
			continue
		}
		attrs, err := nl.ParseRouteAttr(m.Data[unix.SizeofIfInfomsg:])
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range attrs {
			if a.Attr.Type == unix.IFLA_EVENT && len(a.Value) >= 4 &&
				nl.NativeEndian().Uint32(a.Value) == unix.IFLA_EVENT_BONDING_FAILOVER {
				return true
			}
		}
	}
	return false
}
