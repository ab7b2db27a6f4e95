package agent

import (
	"errors"
	"slices"

	"go.uber.org/zap"

	"github.com/rarp-announce/rarp-announce/pkg/announce"
	"github.com/rarp-announce/rarp-announce/pkg/plan"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
	"github.com/rarp-announce/rarp-announce/pkg/uplink"
)

// Uplinks says where a bridge NIC's frames must leave the host
// (uplink.Resolver): the bridge's uplink ports, each with the tag it
// carries the VM port's VLAN with. Written to the bridge device instead, a
// frame is cloned to every tap of the bridge inside sendto, and on a
// vlan_filtering bridge it takes the bridge's own PVID, not the VM's.
type Uplinks interface {
	Targets(bridge, vmPort string, xmlVLANs []rarp.VLAN) ([]uplink.Target, error)
}

// errNoUplink: the frames of this NIC have nowhere to go (an isolated
// bridge, every uplink down, its VLAN carried by none): nothing is sent.
var errNoUplink = errors.New("no uplink to announce on")

// Reasons of rarp_announce_uplink_unsent_total beyond uplink's own: the
// uplinks a re-announce was restricted to are no longer the bridge's.
const unsentRestricted = "restricted_uplinks_gone"

// send is one announce of a NIC: where and with which tag.
type send struct {
	port announce.Port
	vlan rarp.VLAN
}

// xmlVLANs is what a bridge NIC's live XML says of its VLANs, for
// Uplinks.Targets: the XML's VLANs where libvirt has them (a <vlan> on an
// OVS port or a network's portgroup); otherwise nil, and the bridge's VLAN
// table decides (plan's untagged entry is no VLAN a filtering bridge
// carries).
func xmlVLANs(t plan.Target) []rarp.VLAN {
	if len(t.NIC.VLANs) > 0 {
		return t.VLANs
	}
	return nil
}

// hostSends says where t's frames go. A bridge NIC goes out of its
// bridge's uplinks when the agent has the topology (host.send_on:
// uplinks), a macvtap NIC on its macvtap, and everything else, or a bridge
// NIC whose topology cannot be read (logged and counted), on t.Device as
// before. errNoUplink: send nothing (logged and counted).
func (a *Agent) hostSends(t plan.Target, log *zap.Logger) ([]send, error) {
	onDevice := func() []send {
		if t.Master != "" && t.Device == t.Master && a.d.Flood != nil {
			a.d.Flood()
		}
		out := make([]send, len(t.VLANs))
		for i, v := range t.VLANs {
			out[i] = send{announce.HostPort(t.Device), v}
		}
		return out
	}
	if a.d.Uplinks == nil || t.Master == "" || t.Port == "" || t.Device != t.Master {
		return onDevice(), nil
	}
	ts, err := a.d.Uplinks.Targets(t.Master, t.Port, xmlVLANs(t))
	var no *uplink.NoUplinkError
	var fb *uplink.FallbackError
	switch {
	case errors.As(err, &no):
		a.m.unsent(no.Reason.String())
		log.Warn("bridge NIC not announced: no uplink to send on", zap.String("bridge", t.Master),
			zap.String("reason", no.Reason.String()), zap.Error(err))
		return nil, errNoUplink
	case errors.As(err, &fb):
		a.m.fallback(fb.Reason.String())
		log.Warn("uplinks unknown: announcing on the bridge device", zap.String("bridge", t.Master),
			zap.String("reason", fb.Reason.String()), zap.Error(err))
		return onDevice(), nil
	case err != nil:
		a.m.fallback(uplink.Unreadable.String())
		log.Warn("uplinks unknown: announcing on the bridge device", zap.String("bridge", t.Master), zap.Error(err))
		return onDevice(), nil
	}
	if len(t.Uplinks) > 0 {
		var only []uplink.Target
		for _, u := range ts {
			if slices.Contains(t.Uplinks, u.Uplink.Name) {
				only = append(only, u)
			}
		}
		ts = only
		if len(ts) == 0 {
			a.m.unsent(unsentRestricted)
			log.Warn("bridge NIC not announced: none of the uplinks it was restricted to carries it now",
				zap.String("bridge", t.Master), zap.Strings("uplinks", t.Uplinks))
			return nil, errNoUplink
		}
	}
	out := make([]send, len(ts))
	for i, u := range ts {
		out[i] = send{announce.HostPort(u.Uplink.Name), u.VLAN}
	}
	log.Debug("announcing out of the uplinks", zap.String("bridge", t.Master), zap.String("targets", uplink.Describe(ts)))
	return out, nil
}
