// Package uplink finds where an announce for a VM on a Linux bridge must be
// written so that it reaches the physical switch, and only the switch: the
// bridge's uplink ports, tagged the way each uplink carries the VM port's
// VLAN. It also watches those uplinks for the events after which switches
// must be told again (bond failover, carrier back, port re-added).
//
// Writing to the bridge device instead floods each frame to every port (the
// kernel clones it to every tap inside sendto, so the cost grows with the
// bridge, and every guest receives every other VM's announces), and on a
// vlan_filtering bridge an untagged frame from the bridge device takes the
// bridge's own PVID, not the VM port's: the announce leaves on the wrong
// VLAN or is dropped.
//
// The topology is read with CAP_NET_RAW alone: dumps go out on sockets that
// subscribe to no multicast group (a request on a subscribed socket is a
// multicast send for the kernel and needs CAP_NET_ADMIN), and changes come
// in on a separate subscribed socket that never sends.
package uplink

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/rarp-announce/rarp-announce/pkg/enumname"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// Target is one way to send a VM's announce: write the frame on Uplink,
// tagged with VLAN (the zero VLAN: untagged).
type Target struct {
	Uplink Port
	VLAN   rarp.VLAN
}

func (t Target) String() string {
	if t.VLAN.Tagged() {
		return fmt.Sprintf("%s vlan %d", t.Uplink.Name, t.VLAN.ID)
	}
	return t.Uplink.Name + " untagged"
}

// Sentinels for errors.Is: ErrNoUplink means "announce nothing", ErrFallback
// "send on the bridge device as before".
var (
	ErrNoUplink = errors.New("no uplink")
	ErrFallback = errors.New("topology unreadable, fall back to the bridge device")
)

// NoUplinkReason says why nothing should be announced. Its String is a
// stable metric label.
type NoUplinkReason uint8

const (
	// Isolated: the bridge has no port but VM ports (an isolated or NAT
	// libvirt network): no switch behind it to tell.
	Isolated NoUplinkReason = iota + 1
	// UplinksDown: every uplink is down or without carrier; the watcher
	// reports the carrier coming back.
	UplinksDown
	// VLANNotCarried: no uplink carries the VM port's VLAN.
	VLANNotCarried
	// PortWithoutVLAN: on a VLAN-filtering bridge the VM port belongs to
	// no VLAN, so the VM reaches nothing.
	PortWithoutVLAN
)

var noUplinkReasonNames = enumname.Table[NoUplinkReason]{
	Isolated:        "isolated",
	UplinksDown:     "uplinks_down",
	VLANNotCarried:  "vlan_not_carried",
	PortWithoutVLAN: "port_without_vlan",
}

func (r NoUplinkReason) String() string { return noUplinkReasonNames.Name(r, "no_uplink_reason(%d)") }

// NoUplinkReasons lists every NoUplinkReason, for pre-declaring metric
// label values.
var NoUplinkReasons = noUplinkReasonNames.Values()

// NoUplinkError: the bridge has no uplink a frame for this VM should leave
// on. Announce nothing; log Error().
type NoUplinkError struct {
	Bridge, Port string
	Reason       NoUplinkReason
	VLANs        []uint16 // the VLANs looked for (VLANNotCarried)
}

func (e *NoUplinkError) Error() string {
	s := fmt.Sprintf("bridge %s, port %s: no uplink: %s", e.Bridge, e.Port, e.Reason)
	if len(e.VLANs) > 0 {
		s += fmt.Sprintf(" (vlan %v)", e.VLANs)
	}
	return s
}

func (e *NoUplinkError) Is(target error) bool { return target == ErrNoUplink }

// FallbackReason says why the topology could not be used. Its String is a
// stable metric label.
type FallbackReason uint8

const (
	// Unreadable: the kernel's answer could not be read (dump failed,
	// the watcher stopped).
	Unreadable FallbackReason = iota + 1
	// NotABridge: no bridge of that name in the topology.
	NotABridge
	// NotAPort: the VM's port is not (or no longer) a port of the bridge.
	NotAPort
	// VLANsUnknown: a VLAN-filtering bridge whose VLAN table for the
	// port has not been read.
	VLANsUnknown
)

var fallbackReasonNames = enumname.Table[FallbackReason]{
	Unreadable:   "unreadable",
	NotABridge:   "not_a_bridge",
	NotAPort:     "not_a_port",
	VLANsUnknown: "vlans_unknown",
}

func (r FallbackReason) String() string { return fallbackReasonNames.Name(r, "fallback_reason(%d)") }

// FallbackReasons lists every FallbackReason, for pre-declaring metric
// label values.
var FallbackReasons = fallbackReasonNames.Values()

// FallbackError: the topology cannot say where to send; send on the bridge
// device as before, and log Error() and count Reason.
type FallbackError struct {
	Bridge, Port string
	Reason       FallbackReason
	Err          error // underlying error, if any
}

func (e *FallbackError) Error() string {
	s := fmt.Sprintf("bridge %s, port %s: %s", e.Bridge, e.Port, e.Reason)
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s + "; sending on the bridge device"
}

func (e *FallbackError) Is(target error) bool { return target == ErrFallback }
func (e *FallbackError) Unwrap() error        { return e.Err }

// IsVMPort tells a local VM's port (a tap or macvtap QEMU holds) from an
// uplink. DefaultIsVMPort is the default.
type IsVMPort func(l *Link) bool

// DefaultIsVMPort counts taps and macvtaps as VM ports; everything else on a
// bridge (a NIC, a bond, a VLAN sub-interface, a VXLAN device, a veth) is an
// uplink.
func DefaultIsVMPort(l *Link) bool {
	switch l.Kind {
	case "tuntap", "tun", "tap", "macvtap":
		return true
	}
	return false
}

// resolve computes the targets for the VM on port vmPort of bridge. VLANs
// from the domain XML (xmlVLANs) replace the VM port's own from the bridge's
// VLAN table.
func (t table) resolve(bridge, vmPort string, xmlVLANs []rarp.VLAN, isVM IsVMPort) ([]Target, error) {
	return t.index(isVM).resolve(bridge, vmPort, xmlVLANs)
}

// index is a table looked up by name and by master: a storm of announces
// asks Targets thousands of times between two changes of the topology, and
// a scan of every link (thousands of taps) per lookup was a tenth of the
// agent's CPU in the storm benchmark. It is rebuilt after each change.
type index struct {
	names map[string]*Link
	ups   map[int][]*Link // the ports that are not VM ports, by master ifindex, sorted by ifindex
}

func (t table) index(isVM IsVMPort) *index {
	ix := &index{names: make(map[string]*Link, len(t)), ups: map[int][]*Link{}}
	for _, l := range t {
		ix.names[l.Name] = l
		if l.Master != 0 && l.Master != l.Index && !isVM(l) {
			ix.ups[l.Master] = append(ix.ups[l.Master], l)
		}
	}
	for _, ps := range ix.ups {
		slices.SortFunc(ps, func(a, b *Link) int { return a.Index - b.Index })
	}
	return ix
}

func (ix *index) byName(name string) *Link { return ix.names[name] }

// uplinks returns the ports of br that are not VM ports, by index, in a
// slice of the caller's.
func (ix *index) uplinks(br *Link) []*Link { return slices.Clone(ix.ups[br.Index]) }

func (t *index) resolve(bridge, vmPort string, xmlVLANs []rarp.VLAN) ([]Target, error) {
	fallback := func(r FallbackReason, err error) error {
		return &FallbackError{Bridge: bridge, Port: vmPort, Reason: r, Err: err}
	}
	br := t.byName(bridge)
	if br == nil || br.Kind != "bridge" {
		return nil, fallback(NotABridge, nil)
	}
	vm := t.byName(vmPort)
	if vm == nil || vm.Master != br.Index {
		return nil, fallback(NotAPort, nil)
	}
	ups := t.uplinks(br)
	noUplink := func(r NoUplinkReason, vlans []uint16) error {
		return &NoUplinkError{Bridge: bridge, Port: vmPort, Reason: r, VLANs: vlans}
	}
	if len(ups) == 0 {
		return nil, noUplink(Isolated, nil)
	}
	ups = slices.DeleteFunc(ups, func(l *Link) bool { return !l.Up() })
	if len(ups) == 0 {
		return nil, noUplink(UplinksDown, nil)
	}

	// The VLANs the VM's frames belong to on the bridge.
	vlans := xmlVLANs
	if len(vlans) == 0 && br.VLANFiltering {
		if !vm.VLANsKnown {
			return nil, fallback(VLANsUnknown, nil)
		}
		if pvid, ok := vm.PVID(); ok {
			vlans = []rarp.VLAN{{ID: pvid}}
		} else {
			// No PVID: the guest tags its own frames; announce on
			// every VLAN the port carries.
			for _, v := range vm.VLANs {
				vlans = append(vlans, rarp.VLAN{ID: v.ID})
			}
		}
		if len(vlans) == 0 {
			return nil, noUplink(PortWithoutVLAN, nil)
		}
	}

	var out []Target
	for _, up := range ups {
		if len(vlans) == 0 {
			// A plain bridge forwards the VM's untagged frames as they
			// are; a VLAN sub-interface uplink tags them itself.
			out = append(out, Target{Uplink: up.Port})
			continue
		}
		for _, v := range vlans {
			switch {
			case !br.VLANFiltering:
				// No VLAN table: the XML's tag goes on the wire, except
				// on a VLAN sub-interface, which adds its own.
				if up.Kind == "vlan" {
					v = rarp.VLAN{}
				}
				out = append(out, Target{Uplink: up.Port, VLAN: v})
			case !up.VLANsKnown:
				return nil, fallback(VLANsUnknown, fmt.Errorf("uplink %s", up.Name))
			default:
				e, ok := up.VLAN(v.ID)
				if !ok {
					continue // this uplink does not carry it
				}
				if e.Untagged {
					v = rarp.VLAN{}
				}
				out = append(out, Target{Uplink: up.Port, VLAN: v})
			}
		}
	}
	if len(out) == 0 {
		ids := make([]uint16, len(vlans))
		for i, v := range vlans {
			ids[i] = v.ID
		}
		return nil, noUplink(VLANNotCarried, ids)
	}
	return slices.CompactFunc(out, func(a, b Target) bool { return a == b }), nil
}

// describe lists targets for a log line: "eth0 vlan 100, eth1 untagged".
func describe(ts []Target) string {
	s := make([]string, len(ts))
	for i, t := range ts {
		s[i] = t.String()
	}
	return strings.Join(s, ", ")
}
