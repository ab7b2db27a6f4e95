package uplink

import (
	"fmt"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// Port names one network device by index and name, as the kernel knew it
// when the answer was computed.
type Port struct {
	Index int
	Name  string
}

func (p Port) String() string { return fmt.Sprintf("%s(%d)", p.Name, p.Index) }

// PortVLAN is one entry of a bridge port's VLAN table (`bridge vlan show`).
type PortVLAN struct {
	ID       uint16
	PVID     bool // untagged frames entering the port are classified into ID
	Untagged bool // frames of ID leave the port without a tag
}

// BondMode is a kernel bonding mode (IFLA_BOND_MODE).
type BondMode int

// Bonding modes; only those the watcher treats differently are named.
const (
	BondNone         BondMode = -1
	BondBalanceRR    BondMode = 0
	BondActiveBackup BondMode = 1
	BondBalanceXOR   BondMode = 2
	BondBroadcast    BondMode = 3
	Bond8023AD       BondMode = 4
	BondBalanceTLB   BondMode = 5
	BondBalanceALB   BondMode = 6
)

// LAG reports whether the switch sees the bond's legs as one link
// aggregation group (802.3ad, or a static EtherChannel for balance-rr,
// balance-xor and broadcast): a leg failing over moves nothing on the
// switch, so it is no reason to re-announce.
func (m BondMode) LAG() bool {
	switch m {
	case BondBalanceRR, BondBalanceXOR, BondBroadcast, Bond8023AD:
		return true
	}
	return false
}

// Link is what the topology knows about one device: enough to classify
// bridge ports and to see the changes the watcher reports.
type Link struct {
	Port
	Kind    string // netlink link type: "bridge", "veth", "tuntap", "macvtap", "bond", "vlan", "vxlan", "device"...
	Master  int    // ifindex of the bridge or bond it is enslaved to, 0 for none
	Parent  int    // lower device of a VLAN sub-interface or macvtap/macvlan, 0 for none
	AdminUp bool   // IFF_UP
	Carrier bool   // IFF_LOWER_UP
	// CarrierUps counts the times the carrier came up
	// (IFLA_CARRIER_UP_COUNT). The kernel's link watcher reports a
	// carrier change up to a second late, so a flap shorter than that
	// arrives as one notification with the carrier up before and after:
	// only this counter shows it happened.
	CarrierUps    uint32
	VLANFiltering bool // a bridge with vlan_filtering 1
	BondMode      BondMode
	BondActive    int // ifindex of an active-backup bond's active leg, 0 for none or unknown
	// VLANs is the port's bridge VLAN table; VLANsKnown tells an empty
	// table from one never read.
	VLANs      []PortVLAN
	VLANsKnown bool
}

// Up reports whether frames written to the link can leave it now.
func (l *Link) Up() bool { return l.AdminUp && l.Carrier }

// VLAN returns the port's entry for vid.
func (l *Link) VLAN(vid uint16) (PortVLAN, bool) {
	for _, v := range l.VLANs {
		if v.ID == vid {
			return v, true
		}
	}
	return PortVLAN{}, false
}

// PVID returns the VLAN untagged frames entering the port belong to.
func (l *Link) PVID() (uint16, bool) {
	for _, v := range l.VLANs {
		if v.PVID {
			return v.ID, true
		}
	}
	return 0, false
}

// table is the topology: every link of the namespace by index.
type table map[int]*Link

// linkFrom converts a deserialized netlink link.
func linkFrom(nl netlink.Link) *Link {
	a := nl.Attrs()
	l := &Link{
		Port:     Port{Index: a.Index, Name: a.Name},
		Kind:     nl.Type(),
		Master:   a.MasterIndex,
		AdminUp:  a.RawFlags&unix.IFF_UP != 0,
		Carrier:  carrier(a),
		BondMode: BondNone,
	}
	switch v := nl.(type) {
	case *netlink.Bridge:
		l.VLANFiltering = v.VlanFiltering != nil && *v.VlanFiltering
	case *netlink.Bond:
		l.BondMode = BondMode(v.Mode)
		// IFLA_BOND_ACTIVE_SLAVE is present only while there is one.
		l.BondActive = v.ActiveSlave
	case *netlink.Vlan, *netlink.Macvtap, *netlink.Macvlan:
		// IFLA_LINK is the lower device only for stacked devices; for
		// a veth it is the peer, possibly in another namespace.
		l.Parent = a.ParentIndex
	}
	return l
}

// carrier reports IFF_LOWER_UP confirmed by the operational state. The
// flag is set the moment the driver sees carrier, and any notification
// (a bridge port's, a counter's) may show it; the operational state
// follows when the kernel's link watcher handles the change, up to a
// second later, and only then does a bridge enable the port: a frame sent
// before that does not leave. UNKNOWN is what devices without an
// operational state report.
func carrier(a *netlink.LinkAttrs) bool {
	if a.RawFlags&unix.IFF_LOWER_UP == 0 {
		return false
	}
	return a.OperState == netlink.OperUp || a.OperState == netlink.OperUnknown
}

// vlansFrom expands the IFLA_BRIDGE_VLAN_INFO entries of an IFLA_AF_SPEC
// attribute. Dumps list each VLAN; notifications use the compressed form,
// where RANGE_BEGIN and RANGE_END entries bound a run of VLAN IDs with the
// same flags.
func vlansFrom(afSpec []byte) ([]PortVLAN, error) {
	attrs, err := parseAttrs(afSpec)
	if err != nil {
		return nil, fmt.Errorf("IFLA_AF_SPEC: %w", err)
	}
	var out []PortVLAN
	begin := -1
	for _, a := range attrs {
		if a.typ != nl.IFLA_BRIDGE_VLAN_INFO {
			continue
		}
		if len(a.value) < 4 {
			return nil, fmt.Errorf("IFLA_BRIDGE_VLAN_INFO: %d bytes", len(a.value))
		}
		info := nl.DeserializeBridgeVlanInfo(a.value)
		pv := PortVLAN{ID: info.Vid, PVID: info.PortVID(), Untagged: info.EngressUntag()}
		switch {
		case info.Flags&nl.BRIDGE_VLAN_INFO_RANGE_BEGIN != 0:
			begin = int(info.Vid)
		case info.Flags&nl.BRIDGE_VLAN_INFO_RANGE_END != 0:
			if begin < 0 || begin > int(info.Vid) {
				return nil, fmt.Errorf("IFLA_BRIDGE_VLAN_INFO: range end %d without begin", info.Vid)
			}
			for vid := begin; vid <= int(info.Vid); vid++ {
				out = append(out, PortVLAN{ID: uint16(vid), PVID: pv.PVID, Untagged: pv.Untagged})
			}
			begin = -1
		default:
			out = append(out, pv)
		}
	}
	return out, nil
}

// apply updates t with one RTM_NEWLINK/RTM_DELLINK message from the
// subscription and returns the link before and after (nil when absent) and
// the IFLA_EVENT the kernel attached (0 for none).
func (t table) apply(m syscall.NetlinkMessage) (old, cur *Link, event uint32, err error) {
	if m.Header.Type != unix.RTM_NEWLINK && m.Header.Type != unix.RTM_DELLINK {
		return nil, nil, 0, nil
	}
	if len(m.Data) < unix.SizeofIfInfomsg {
		return nil, nil, 0, fmt.Errorf("short ifinfomsg: %d bytes", len(m.Data))
	}
	info := nl.DeserializeIfInfomsg(m.Data)
	idx := int(info.Index)
	attrs, err := parseAttrs(m.Data[unix.SizeofIfInfomsg:])
	if err != nil {
		return nil, nil, 0, err
	}
	prev := t[idx]
	if prev != nil {
		c := *prev
		old = &c
	}
	if info.Family == unix.AF_BRIDGE {
		// The bridge's view of a port: its VLAN table. RTM_DELLINK here
		// means the port left the bridge, not that the link is gone.
		if prev == nil {
			return nil, nil, 0, nil
		}
		var vlans []PortVLAN
		if m.Header.Type == unix.RTM_NEWLINK {
			for _, a := range attrs {
				if a.typ == unix.IFLA_AF_SPEC {
					if vlans, err = vlansFrom(a.value); err != nil {
						return nil, nil, 0, err
					}
				}
			}
		}
		prev.VLANs, prev.VLANsKnown = vlans, true
		c := *prev
		return old, &c, 0, nil
	}
	if m.Header.Type == unix.RTM_DELLINK {
		delete(t, idx)
		return old, nil, 0, nil
	}
	var ups uint32
	for _, a := range attrs {
		switch {
		case a.typ == unix.IFLA_EVENT && len(a.value) >= 4:
			event = nl.NativeEndian().Uint32(a.value)
		case a.typ == unix.IFLA_CARRIER_UP_COUNT && len(a.value) >= 4:
			ups = nl.NativeEndian().Uint32(a.value)
		}
	}
	hdr := unix.NlMsghdr(m.Header)
	nlk, err := netlink.LinkDeserialize(&hdr, m.Data)
	if err != nil {
		return nil, nil, 0, err
	}
	l := linkFrom(nlk)
	l.CarrierUps = ups
	if prev != nil {
		// Notifications of the generic family carry no bridge VLAN
		// table; keep the one the bridge family last reported.
		// A port leaving the bridge clears it (bridge RTM_DELLINK).
		l.VLANs, l.VLANsKnown = prev.VLANs, prev.VLANsKnown
	}
	t[idx] = l
	c := *l
	return old, &c, event, nil
}

type attr struct {
	typ   uint16
	value []byte
}

// parseAttrs splits a run of netlink attributes. nl.ParseRouteAttr panics
// on a length that runs past the buffer (found by FuzzVLANsFrom); this
// returns an error instead.
func parseAttrs(b []byte) ([]attr, error) {
	var out []attr
	for len(b) >= unix.SizeofRtAttr {
		n := int(nl.NativeEndian().Uint16(b[0:2]))
		if n < unix.SizeofRtAttr || n > len(b) {
			return nil, fmt.Errorf("attribute length %d of %d bytes", n, len(b))
		}
		out = append(out, attr{typ: nl.NativeEndian().Uint16(b[2:4]) &^ (unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER), value: b[unix.SizeofRtAttr:n]})
		adv := (n + unix.NLA_ALIGNTO - 1) &^ (unix.NLA_ALIGNTO - 1)
		if adv >= len(b) {
			break
		}
		b = b[adv:]
	}
	return out, nil
}
