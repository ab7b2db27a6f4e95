// Package fdb repairs a local Linux bridge's MAC table (forwarding database)
// for a VM that has just landed on this host.
//
// While the VM ran on another host, its frames reached this host's bridge
// through the uplink, so the bridge learned "VM MAC -> uplink". The bridge
// does not learn from frames the host itself sends, so an announce sent on
// the bridge fixes the upstream switches but not this entry: traffic for the
// VM that arrives on the uplink is dropped (its destination is the port it
// came in on) until the entry ages out, 300 s by default. Repair deletes that
// entry, so such traffic is flooded, reaches the VM's port, and the bridge
// re-learns the MAC there as soon as the VM sends.
package fdb

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

var (
	// ErrPermission reports that the kernel refused to change the MAC
	// table: the process lacks CAP_NET_ADMIN. The agent logs it once and
	// carries on announcing without repairs.
	ErrPermission = errors.New("FDB repair needs CAP_NET_ADMIN")
	// ErrNoBridge reports that the named bridge does not exist.
	ErrNoBridge = errors.New("no such bridge")
	// ErrNotBridge reports that the named device is not a Linux bridge.
	ErrNotBridge = errors.New("not a Linux bridge")
)

// ntfExtLocked marks an entry the bridge holds for a locked port (802.1X
// MAC authentication bypass, NDA_FLAGS_EXT): it belongs to the
// authenticator in user space. Not exported by the netlink library.
const ntfExtLocked = 1 << 1

// userHZ is the unit of the kernel's ndm cacheinfo ages (USER_HZ, always 100
// on Linux).
const userHZ = 100

// Entry is one MAC table entry Repair removed.
type Entry struct {
	Port      string        // the bridge port the entry pointed at
	PortIndex int           // its interface index
	VLAN      int           // the entry's VLAN ID; 0 when it has none
	Age       time.Duration // time since the bridge last saw the MAC on Port
}

// Repairer removes a VM's stale learned entries from local bridges. It is
// safe for concurrent use.
type Repairer struct {
	nl      *netlink.Handle
	get     map[int]*nl.SocketHandle // for single-entry lookups, which the netlink package lacks
	metrics *Metrics

	forceDump bool // tests: take the VLAN-filtering path on this kernel, which has none
}

// New returns a Repairer for the network namespace ns (nil: the caller's),
// counting into m (nil: no metrics). Tests pass a test namespace. Close
// releases its netlink sockets.
func New(ns *netns.NsHandle, m *Metrics) (*Repairer, error) {
	target := netns.None()
	if ns != nil {
		target = *ns
	}
	h, err := netlink.NewHandleAt(target, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("fdb: netlink: %w", err)
	}
	s, err := nl.GetNetlinkSocketAt(target, netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("fdb: netlink: %w", err)
	}
	tv := nl.SocketTimeoutTv
	_ = s.SetReceiveTimeout(&tv)
	_ = s.SetSendTimeout(&tv)
	return &Repairer{nl: h, get: map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: {Socket: s}}, metrics: m}, nil
}

// Close releases the Repairer's sockets.
func (r *Repairer) Close() {
	r.nl.Close()
	for _, sh := range r.get {
		sh.Close()
	}
}

// Repair deletes the entries bridge learned for mac on its ports other than
// ownPort (the VM's tap; "" or a missing device: no port is spared) and
// returns what it removed. It touches only dynamic entries the bridge itself
// learned: permanent, static, sticky, externally learned (a control plane
// such as EVPN owns those) and locked-port entries stay, as do entries on the
// bridge device itself and the ports' own addresses (NTF_SELF). On a
// VLAN-filtering bridge only entries in the VLANs of ownPort go: the same MAC
// in another VLAN is another broadcast domain's (the VM's own MAC on another
// tenant's network, or a clash), and removing it would only flood that
// VLAN's traffic. Without ownPort there are no such VLANs, so nothing is
// removed there. Each entry is deleted with the VLAN it has.
//
// Finding nothing to remove is not an error. An error wrapping ErrPermission
// means CAP_NET_ADMIN is missing. When some deletions fail, Repair still
// returns the entries it did remove along with the error.
func (r *Repairer) Repair(bridge string, mac rarp.MAC, ownPort string) ([]Entry, error) {
	r.metrics.repair()
	removed, err := r.repair(bridge, mac, ownPort)
	r.metrics.removed(len(removed))
	if err != nil {
		r.metrics.failure(FailureReason(err))
	}
	return removed, err
}

func (r *Repairer) repair(bridge string, mac rarp.MAC, ownPort string) ([]Entry, error) {
	br, err := r.nl.LinkByName(bridge)
	if err != nil {
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) {
			return nil, fmt.Errorf("fdb: %s: %w", bridge, ErrNoBridge)
		}
		return nil, fmt.Errorf("fdb: look up bridge %s: %w", bridge, err)
	}
	if br.Type() != "bridge" {
		return nil, fmt.Errorf("fdb: %s is a %s device: %w", bridge, br.Type(), ErrNotBridge)
	}
	own := 0
	if ownPort != "" {
		if l, err := r.nl.LinkByName(ownPort); err == nil {
			own = l.Attrs().Index
		}
	}
	neighs, err := r.lookup(br, mac)
	if err != nil {
		return nil, fmt.Errorf("fdb: look up %s in %s: %w", mac, bridge, err)
	}
	stale := Stale(neighs, br.Attrs().Index, own, mac)
	if len(stale) > 0 && vlanFiltering(br) {
		vlans, err := r.portVLANs(own)
		if err != nil {
			return nil, fmt.Errorf("fdb: VLANs of %s on %s: %w", ownPort, bridge, err)
		}
		stale = InVLANs(stale, vlans)
	}
	var removed []Entry
	var errs []error
	for _, n := range stale {
		err := r.nl.NeighDel(&netlink.Neigh{
			LinkIndex:    n.LinkIndex,
			Family:       unix.AF_BRIDGE,
			Flags:        netlink.NTF_MASTER, // the bridge's table, not the port's own
			HardwareAddr: n.HardwareAddr,
			Vlan:         n.Vlan,
		})
		port := r.portName(n.LinkIndex)
		switch {
		case err == nil:
			removed = append(removed, Entry{Port: port, PortIndex: n.LinkIndex, VLAN: n.Vlan,
				Age: time.Duration(n.Updated) * time.Second / userHZ})
		case errors.Is(err, unix.ENOENT):
			// Aged out, or re-learned on another port, since the dump.
			// The kernel deletes only an entry that still points at the
			// port named, so a fresh entry on the VM's port is safe.
		case errors.Is(err, unix.EPERM):
			// All further deletions would fail the same way.
			return removed, fmt.Errorf("fdb: remove %s on %s from %s: %w (%w)", mac, port, bridge, ErrPermission, err)
		default:
			errs = append(errs, fmt.Errorf("fdb: remove %s on %s from %s: %w", mac, port, bridge, err))
		}
	}
	return removed, errors.Join(errs...)
}

// vlanFiltering reports whether br is a VLAN-filtering bridge.
func vlanFiltering(br netlink.Link) bool {
	b, ok := br.(*netlink.Bridge)
	return ok && b.VlanFiltering != nil && *b.VlanFiltering
}

// portVLANs returns the VLAN IDs bridge port index (0: none) is a member
// of. The kernel answers a bridge's port VLANs only in a dump of every
// port's (RTM_GETLINK, AF_BRIDGE); it is read only when there is an entry
// to remove.
func (r *Repairer) portVLANs(index int) ([]uint16, error) {
	if index == 0 {
		return nil, nil
	}
	var all map[int32][]*nl.BridgeVlanInfo
	var err error
	for range 3 {
		if all, err = r.nl.BridgeVlanList(); !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return nil, err
	}
	var vids []uint16
	for _, v := range all[int32(index)] {
		vids = append(vids, v.Vid)
	}
	return vids, nil
}

// InVLANs keeps the entries whose VLAN is one of vlans: on a VLAN-filtering
// bridge, Repair removes only entries in the VM port's VLANs.
func InVLANs(neighs []netlink.Neigh, vlans []uint16) []netlink.Neigh {
	var out []netlink.Neigh
	for _, n := range neighs {
		if slices.Contains(vlans, uint16(n.Vlan)) {
			out = append(out, n)
		}
	}
	return out
}

// lookup returns the bridge's entries for mac. Without VLAN filtering a
// bridge holds at most one entry per MAC (VLAN 0), and the kernel finds it
// in its hash table (RTM_GETNEIGH for one entry, Linux 4.20+). With VLAN
// filtering there may be one per VLAN, so every table is dumped and
// filtered: its cost grows with the tables (see BenchmarkRepair).
func (r *Repairer) lookup(br netlink.Link, mac rarp.MAC) ([]netlink.Neigh, error) {
	if b, ok := br.(*netlink.Bridge); ok && b.VlanFiltering != nil && !*b.VlanFiltering && !r.forceDump {
		return r.getOne(br.Attrs().Index, mac)
	}
	return r.dump()
}

// getOne asks the bridge with index bridge for its VLAN 0 entry for mac.
func (r *Repairer) getOne(bridge int, mac rarp.MAC) ([]netlink.Neigh, error) {
	req := nl.NewNetlinkRequest(unix.RTM_GETNEIGH, 0)
	req.Sockets = r.get
	req.AddData(&netlink.Ndmsg{Family: unix.AF_BRIDGE})
	req.AddData(nl.NewRtAttr(netlink.NDA_MASTER, nl.Uint32Attr(uint32(bridge))))
	req.AddData(nl.NewRtAttr(netlink.NDA_LLADDR, mac[:]))
	msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWNEIGH)
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []netlink.Neigh
	for _, m := range msgs {
		n, err := netlink.NeighDeserialize(m)
		if err != nil {
			return nil, err
		}
		out = append(out, *n)
	}
	return out, nil
}

// dump lists every bridge MAC table in the namespace. A dump the kernel
// flags as interrupted (the table changed meanwhile) is retried a few times,
// then used as it is: an entry it missed was learned during the dump, after
// the VM landed, and is no staler than the repair.
func (r *Repairer) dump() ([]netlink.Neigh, error) {
	var neighs []netlink.Neigh
	var err error
	for range 3 {
		neighs, err = r.nl.NeighList(0, unix.AF_BRIDGE)
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return neighs, err
		}
	}
	return neighs, nil
}

func (r *Repairer) portName(index int) string {
	if l, err := r.nl.LinkByIndex(index); err == nil {
		return l.Attrs().Name
	}
	return fmt.Sprintf("if%d", index)
}

// Stale picks from a bridge FDB dump the entries Repair deletes: entries of
// the bridge with index bridge, for mac, on a port other than own (0: none),
// that the bridge learned itself. It is exported so the selection can be
// tested on entries this kernel cannot make (VLANs, offloads).
func Stale(neighs []netlink.Neigh, bridge, own int, mac rarp.MAC) []netlink.Neigh {
	var out []netlink.Neigh
	for _, n := range neighs {
		switch {
		case n.Family != unix.AF_BRIDGE,
			n.MasterIndex != bridge,
			!bytes.Equal(n.HardwareAddr, mac[:]),
			n.LinkIndex == 0, n.LinkIndex == bridge, n.LinkIndex == own:
			continue
		case n.State&(netlink.NUD_PERMANENT|netlink.NUD_NOARP) != 0:
			continue // local or static: configured, not learned
		case n.Flags&(netlink.NTF_SELF|netlink.NTF_EXT_LEARNED|netlink.NTF_STICKY) != 0:
			continue
		case n.FlagsExt&ntfExtLocked != 0:
			continue
		}
		out = append(out, n)
	}
	return out
}
