// Package plan decides, for each NIC of a domain that landed, how and where
// to announce it: the strategy by NIC kind, the device to send on, the VM's
// own port to wait for, and the VLAN tags. It is pure (no I/O), so every
// rule of where to send (docs/ARCHITECTURE.md, docs/host-networking.md) is a table test here.
package plan

import (
	"fmt"

	"github.com/rarp-announce/rarp-announce/pkg/domxml"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// Kind is a NIC kind, the key of the strategy table.
type Kind string

// NIC kinds.
const (
	KindBridge      Kind = "bridge"      // <interface type='bridge'> on a Linux bridge
	KindNetwork     Kind = "network"     // <interface type='network'> on a Linux bridge
	KindDirect      Kind = "direct"      // macvtap, or a network of macvtaps
	KindOpenVSwitch Kind = "openvswitch" // any type with <virtualport type='openvswitch'>
	KindVhostUser   Kind = "vhostuser"
	KindEthernet    Kind = "ethernet"
	KindHostdev     Kind = "hostdev"
	KindOther       Kind = "other" // user, mcast, udp, vdpa, ...
)

// Strategy is how a NIC is announced.
type Strategy string

// Strategies.
const (
	Host Strategy = "host" // RARP frames sent by this host (AF_PACKET)
	QEMU Strategy = "qemu" // QMP announce-self through libvirt
	OVS  Strategy = "ovs"  // injected into Open vSwitch as if from the VM's port
	Skip Strategy = "skip"
)

// Strategies maps kinds to strategies; a missing kind is skipped.
type Strategies map[Kind]Strategy

// Options are the planner's inputs besides the domain.
type Options struct {
	Strategies Strategies
	RepairFDB  bool
	// Force overrides the strategy of every NIC that supports it
	// (rarp-announce announce --strategy); "" keeps the table.
	Force Strategy
}

// Target is one NIC's plan.
type Target struct {
	NIC      domxml.Interface
	Kind     Kind
	Strategy Strategy
	// Skip says why the NIC is not announced (Strategy == Skip).
	Skip string

	// Host strategy: send on Device, once per entry of VLANs (the zero
	// VLAN is untagged), after Port is ready (attached to Master, if set).
	Device    string
	VLANs     []rarp.VLAN
	Port      string
	Master    string
	RepairFDB bool
	// Uplinks, when not empty, restricts the host strategy to these
	// uplink ports (a re-announce after an uplink failover goes out of
	// that uplink only); empty: every uplink the resolver gives.
	Uplinks []string

	// QEMU strategy: the NIC's alias for announce-self's "interfaces".
	Alias string
}

func (t Target) String() string {
	switch t.Strategy {
	case Host:
		return fmt.Sprintf("%s %s: host on %s (port %s, vlans %v)", t.Kind, t.NIC.MAC, t.Device, t.Port, t.VLANs)
	case QEMU:
		return fmt.Sprintf("%s %s: qemu announce-self on %s", t.Kind, t.NIC.MAC, t.Alias)
	case OVS:
		return fmt.Sprintf("%s %s: ovs port %s", t.Kind, t.NIC.MAC, t.Port)
	}
	return fmt.Sprintf("%s %s: skipped: %s", t.Kind, t.NIC.MAC, t.Skip)
}

// KindOf classifies a NIC of the live XML.
func KindOf(n domxml.Interface) Kind {
	if n.VirtualPort == "openvswitch" {
		return KindOpenVSwitch
	}
	switch n.Type {
	case "bridge":
		// libvirt's live XML shows a type='network' NIC on a bridged
		// network as type='bridge' with the network named in <source>.
		if n.SourceNetwork != "" {
			return KindNetwork
		}
		return KindBridge
	case "network":
		// A network of macvtaps shows a source dev, not a bridge.
		if n.SourceBridge == "" && n.SourceDev != "" {
			return KindDirect
		}
		return KindNetwork
	case "direct":
		return KindDirect
	case "vhostuser":
		return KindVhostUser
	case "ethernet":
		return KindEthernet
	case "hostdev":
		return KindHostdev
	}
	return KindOther
}

// allowed lists the strategies that can work for a kind, best first.
var allowed = map[Kind][]Strategy{
	KindBridge:      {Host, QEMU},
	KindNetwork:     {Host, QEMU},
	KindDirect:      {Host, QEMU},
	KindOpenVSwitch: {OVS, QEMU},
	KindVhostUser:   {QEMU},
	KindEthernet:    {QEMU},
}

// why a kind cannot be announced at all.
var never = map[Kind]string{
	KindHostdev: "hostdev (SR-IOV VF) passes the NIC to the guest: no host device can send for it",
	KindOther:   "this interface type has no switch port to announce on",
}

// Plan returns one Target per NIC, in XML order.
func Plan(dom *domxml.Domain, o Options) []Target {
	out := make([]Target, 0, len(dom.Interfaces))
	for _, n := range dom.Interfaces {
		out = append(out, planNIC(n, o))
	}
	return out
}

func planNIC(n domxml.Interface, o Options) Target {
	t := Target{NIC: n, Kind: KindOf(n)}
	skip := func(why string) Target { t.Strategy, t.Skip = Skip, why; return t }
	if why, ok := never[t.Kind]; ok {
		return skip(why)
	}
	if err := n.MAC.ValidateUnicast(); err != nil {
		return skip("MAC " + err.Error())
	}
	s := o.Strategies[t.Kind]
	if o.Force != "" {
		s = o.Force
	}
	if s == "" || s == Skip {
		return skip(fmt.Sprintf("strategy for %s NICs is skip", t.Kind))
	}
	ok := false
	for _, a := range allowed[t.Kind] {
		ok = ok || a == s
	}
	if !ok {
		return skip(fmt.Sprintf("strategy %s cannot announce a %s NIC", s, t.Kind))
	}
	t.Strategy = s
	switch s {
	case QEMU:
		if n.Alias == "" {
			return skip("qemu strategy needs the NIC's alias, which the live XML lacks")
		}
		t.Alias = n.Alias
	case OVS:
		if n.Target == "" {
			return skip("ovs strategy needs the port name (<target dev>), which the live XML lacks")
		}
		t.Port = n.Target
		t.VLANs = vlans(n)
	case Host:
		switch t.Kind {
		case KindBridge, KindNetwork:
			if n.SourceBridge == "" {
				return skip("no bridge in the live XML's <source>")
			}
			// The bridge floods the frame to every port, the uplink
			// included; the VM's tap would deliver it to the guest.
			t.Device, t.Master, t.Port = n.SourceBridge, n.SourceBridge, n.Target
			t.RepairFDB = o.RepairFDB && n.Target != ""
			t.VLANs = vlans(n)
		case KindDirect:
			if n.Target == "" {
				return skip("no macvtap device (<target dev>) in the live XML")
			}
			// The macvtap sends through its lower device. It has no
			// bridge FDB of ours to repair, and a VLAN of a direct NIC
			// is applied by the VF, not by us.
			t.Device, t.Port = n.Target, n.Target
			t.VLANs = []rarp.VLAN{{}}
		}
	}
	return t
}

// vlans returns the tags to announce on: the untagged frame when the NIC
// has no <vlan>; each tag of a trunk (the native one untagged when its
// nativeMode is untagged); the single tag of an access port.
func vlans(n domxml.Interface) []rarp.VLAN {
	if len(n.VLANs) == 0 {
		return []rarp.VLAN{{}}
	}
	var out []rarp.VLAN
	untagged := false
	for _, tag := range n.VLANs {
		if tag.ID < 1 || tag.ID > 4094 {
			continue
		}
		if tag.NativeMode == "untagged" {
			untagged = true
			continue
		}
		out = append(out, rarp.VLAN{ID: tag.ID})
	}
	if untagged || len(out) == 0 {
		out = append([]rarp.VLAN{{}}, out...)
	}
	return out
}
