package ovs

import (
	"fmt"

	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// Frames decides which frames to inject for a VM on port, given the
// domain XML's <vlan> tags (the zero VLAN = untagged; none = untagged). The
// frames enter OVS as if the guest had sent them, so they must look like
// what the guest sends, and OVSDB, not the XML, is the authority on what
// the port does with them (libvirt, Neutron and os-vif all write the port's
// tag there):
//
//   - access port: one untagged frame; OVS adds the port's tag wherever
//     the frame leaves on a trunk. A tagged frame would be dropped by OVS
//     on an access port, so XML tags are ignored here.
//   - trunk port: each XML VLAN tagged as given, the untagged entry
//     untagged, each only if the port's trunks carry it.
//   - native-tagged / native-untagged: untagged frames belong to the
//     native VLAN (the tag); other XML VLANs tagged, if carried.
//   - dot1q-tunnel: frames as the XML says; OVS pushes the outer tag.
//
// A port on Neutron's dead VLAN 4095 gets ErrPortNotWired: its traffic is
// dropped until the agent wires it, so the announce must wait for that.
// skipped lists requested VLANs the port would drop.
func Frames(p Port, vlans []rarp.VLAN) (out []rarp.VLAN, skipped []rarp.VLAN, err error) {
	if p.Tag == DeadVLAN {
		return nil, nil, fmt.Errorf("%s: tag %d: %w", p.Name, p.Tag, ErrPortNotWired)
	}
	if len(vlans) == 0 {
		vlans = []rarp.VLAN{{}}
	}
	add := func(v rarp.VLAN) {
		for _, o := range out {
			if o.ID == v.ID {
				return
			}
		}
		out = append(out, v)
	}
	switch p.Mode() {
	case ModeAccess:
		// The guest's priority bits cannot ride on an untagged frame;
		// OVS sets the tag's PCP to 0.
		add(rarp.VLAN{})
		return out, nil, nil
	case ModeNativeTagged, ModeNativeUntagged:
		for _, v := range vlans {
			switch {
			case !v.Tagged() || v.ID == p.Tag:
				add(rarp.VLAN{})
			case p.carries(v.ID):
				add(v)
			default:
				skipped = append(skipped, v)
			}
		}
	case ModeDot1qTunnel:
		for _, v := range vlans {
			add(v)
		}
	default: // trunk
		for _, v := range vlans {
			if p.carries(v.ID) {
				add(v)
			} else {
				skipped = append(skipped, v)
			}
		}
	}
	if len(out) == 0 {
		return nil, skipped, fmt.Errorf("%s: %s port with trunks %v: %w", p.Name, p.Mode(), p.Trunks, ErrVLANNotCarried)
	}
	return out, skipped, nil
}
