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
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/rarp-announce/rarp-announce/pkg/rarp"
	"github.com/rarp-announce/rarp-announce/pkg/uplink"
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
	neigh   *neighConn // the lookup of one entry and the deletions
	metrics *Metrics
	links   Links // nil: every link is looked up by netlink

	forceDump bool         // tests: take the VLAN-filtering path on this kernel, which has none
	getLinks  atomic.Int64 // tests: RTM_GETLINK requests made
	// library, set by tests: look up and delete through the netlink
	// package, the way before neighConn (BenchmarkRepair compares them).
	library map[int]*nl.SocketHandle
}

// Links is a view of the namespace's links that netlink notifications keep
// current: *uplink.Resolver, the agent's topology. With it, a repair names the
// bridge, the VM's port and the removed entries' ports from memory instead
// of one RTM_GETLINK each: in a landing storm those lookups were most of
// the repair's cost (BenchmarkRepair, BenchmarkStorm). A device the view
// does not know (yet), or that it does not know as a bridge where one is
// asked for, is looked up by netlink as without a view, so the view can
// lag behind the kernel only by the notifications in flight: a tap deleted
// and re-created under the same name within that instant is spared under
// its old ifindex.
type Links interface {
	Link(name string) (uplink.Link, bool)
	LinkByIndex(index int) (uplink.Link, bool)
}

// SetLinks makes r look links up in l first. Call it before the first
// Repair.
func (r *Repairer) SetLinks(l Links) { r.links = l }

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
	c, err := newNeighConn(s)
	if err != nil {
		h.Close()
		return nil, err
	}
	return &Repairer{nl: h, neigh: c, metrics: m}, nil
}

// Close releases the Repairer's sockets.
func (r *Repairer) Close() {
	r.nl.Close()
	_ = r.neigh.Close()
	for _, sh := range r.library {
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
	br, err := r.bridge(bridge)
	if err != nil {
		return nil, err
	}
	own := 0
	if ownPort != "" {
		own = r.index(ownPort)
	}
	neighs, err := r.lookup(br, mac)
	if err != nil {
		return nil, fmt.Errorf("fdb: look up %s in %s: %w", mac, bridge, err)
	}
	stale := Stale(neighs, br.index, own, mac)
	if len(stale) > 0 && br.filtering {
		vlans, err := r.portVLANs(own)
		if err != nil {
			return nil, fmt.Errorf("fdb: VLANs of %s on %s: %w", ownPort, bridge, err)
		}
		stale = InVLANs(stale, vlans)
	}
	var removed []Entry
	var errs []error
	for _, n := range stale {
		err := r.del(n)
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

// bridgeLink is the bridge a repair works on.
type bridgeLink struct {
	index int
	// filtering: a VLAN-filtering bridge, whose entries are removed only
	// in the VM port's VLANs; getOne: known not to filter VLANs, so it
	// holds at most one entry per MAC, found without a dump.
	filtering, getOne bool
}

// bridge finds the bridge called name: in the view if it knows it as a
// bridge, else by netlink, which tells a missing device (ErrNoBridge) from
// another kind (ErrNotBridge).
func (r *Repairer) bridge(name string) (bridgeLink, error) {
	if r.links != nil {
		if l, ok := r.links.Link(name); ok && l.Kind == "bridge" {
			return bridgeLink{index: l.Index, filtering: l.VLANFiltering, getOne: !l.VLANFiltering}, nil
		}
	}
	br, err := r.linkByName(name)
	if err != nil {
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) {
			return bridgeLink{}, fmt.Errorf("fdb: %s: %w", name, ErrNoBridge)
		}
		return bridgeLink{}, fmt.Errorf("fdb: look up bridge %s: %w", name, err)
	}
	b, ok := br.(*netlink.Bridge)
	if !ok || br.Type() != "bridge" {
		return bridgeLink{}, fmt.Errorf("fdb: %s is a %s device: %w", name, br.Type(), ErrNotBridge)
	}
	known := b.VlanFiltering != nil
	return bridgeLink{index: br.Attrs().Index, filtering: known && *b.VlanFiltering, getOne: known && !*b.VlanFiltering}, nil
}

// index returns the ifindex of the device called name, 0 if there is none.
func (r *Repairer) index(name string) int {
	if r.links != nil {
		if l, ok := r.links.Link(name); ok {
			return l.Index
		}
	}
	if l, err := r.linkByName(name); err == nil {
		return l.Attrs().Index
	}
	return 0
}

func (r *Repairer) linkByName(name string) (netlink.Link, error) {
	r.getLinks.Add(1)
	return r.nl.LinkByName(name)
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
func (r *Repairer) lookup(br bridgeLink, mac rarp.MAC) ([]netlink.Neigh, error) {
	if br.getOne && !r.forceDump {
		return r.getOne(br.index, mac)
	}
	return r.dump()
}

// getOne asks the bridge with index bridge for its VLAN 0 entry for mac.
func (r *Repairer) getOne(bridge int, mac rarp.MAC) ([]netlink.Neigh, error) {
	if r.library == nil {
		return r.neigh.get(bridge, mac)
	}
	req := getNeighRequest(bridge, mac)
	req.Sockets = r.library
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

// del deletes the bridge's entry n.
func (r *Repairer) del(n netlink.Neigh) error {
	if r.library == nil {
		return r.neigh.del(n)
	}
	return r.nl.NeighDel(&netlink.Neigh{
		LinkIndex:    n.LinkIndex,
		Family:       unix.AF_BRIDGE,
		Flags:        netlink.NTF_MASTER, // the bridge's table, not the port's own
		HardwareAddr: n.HardwareAddr,
		Vlan:         n.Vlan,
	})
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

// portName names the port with ifindex index, for the log.
func (r *Repairer) portName(index int) string {
	if r.links != nil {
		if l, ok := r.links.LinkByIndex(index); ok {
			return l.Name
		}
	}
	r.getLinks.Add(1)
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
