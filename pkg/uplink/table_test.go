package uplink

import (
	"syscall"
	"testing"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// linkMsg builds an RTM_NEWLINK/RTM_DELLINK as the kernel sends it.
func linkMsg(typ uint16, family, index int, flags uint32, attrs ...*nl.RtAttr) syscall.NetlinkMessage {
	m := nl.NewIfInfomsg(family)
	m.Index = int32(index)
	m.Flags = flags
	b := m.Serialize()
	for _, a := range attrs {
		b = append(b, a.Serialize()...)
	}
	return syscall.NetlinkMessage{Header: syscall.NlMsghdr{Type: typ}, Data: b}
}

func u32(typ int, v uint32) *nl.RtAttr { return nl.NewRtAttr(typ, nl.Uint32Attr(v)) }
func name(n string) *nl.RtAttr         { return nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(n)) }

func TestTableApply(t *testing.T) {
	up := uint32(unix.IFF_UP | unix.IFF_LOWER_UP)
	tb := table{}
	must := func(m syscall.NetlinkMessage) (*Link, *Link, uint32) {
		t.Helper()
		old, cur, ev, err := tb.apply(m)
		if err != nil {
			t.Fatal(err)
		}
		return old, cur, ev
	}
	// A port of bridge 1 appears, with a carrier-up count.
	if old, cur, _ := must(linkMsg(unix.RTM_NEWLINK, unix.AF_UNSPEC, 5, up, name("eth0"), u32(unix.IFLA_MASTER, 1), u32(unix.IFLA_CARRIER_UP_COUNT, 3))); old != nil || cur.Master != 1 || !cur.Up() || cur.CarrierUps != 3 {
		t.Fatalf("new port: old %v, cur %+v", old, cur)
	}
	// The bridge reports its VLAN table (compressed ranges).
	spec := nl.NewRtAttr(unix.IFLA_AF_SPEC, append(vlanInfo(10, nl.BRIDGE_VLAN_INFO_RANGE_BEGIN), vlanInfo(11, nl.BRIDGE_VLAN_INFO_RANGE_END)...))
	if _, cur, _ := must(linkMsg(unix.RTM_NEWLINK, unix.AF_BRIDGE, 5, up, spec)); !cur.VLANsKnown || len(cur.VLANs) != 2 {
		t.Fatalf("bridge VLANs: %+v", cur)
	}
	// A generic notification keeps the VLANs; a flap shorter than the
	// link watcher's delay shows only in the counter.
	old, cur, _ := must(linkMsg(unix.RTM_NEWLINK, unix.AF_UNSPEC, 5, up, name("eth0"), u32(unix.IFLA_MASTER, 1), u32(unix.IFLA_CARRIER_UP_COUNT, 4)))
	if len(cur.VLANs) != 2 || !carrierCameUp(old, cur) {
		t.Fatalf("after a short flap: old %+v cur %+v", old, cur)
	}
	// An IFLA_EVENT is passed on.
	if _, _, ev := must(linkMsg(unix.RTM_NEWLINK, unix.AF_UNSPEC, 5, up, name("eth0"), u32(unix.IFLA_EVENT, unix.IFLA_EVENT_BONDING_FAILOVER))); ev != unix.IFLA_EVENT_BONDING_FAILOVER {
		t.Fatalf("event %d", ev)
	}
	// The bridge's RTM_DELLINK: the port left, the link stays.
	if _, cur, _ := must(linkMsg(unix.RTM_DELLINK, unix.AF_BRIDGE, 5, up)); cur == nil || len(cur.VLANs) != 0 || tb[5] == nil {
		t.Fatalf("port left the bridge: %+v, table %v", cur, tb[5])
	}
	// The generic RTM_DELLINK: gone.
	if old, cur, _ := must(linkMsg(unix.RTM_DELLINK, unix.AF_UNSPEC, 5, 0, name("eth0"))); old == nil || cur != nil || tb[5] != nil {
		t.Fatalf("deleted: old %v cur %v", old, cur)
	}
	// Garbage is an error, not a panic.
	bad := linkMsg(unix.RTM_NEWLINK, unix.AF_UNSPEC, 6, up)
	bad.Data = append(bad.Data, 0xff, 0x00, 0x03, 0x00)
	if _, _, _, err := tb.apply(bad); err == nil {
		t.Fatal("a bad attribute length was accepted")
	}
}
