package announce

import (
	"errors"
	"fmt"
	"strconv"
)

// Kind is how frames reach a port's segment.
type Kind uint8

const (
	// KindHost writes frames on a Linux netdev through an AF_PACKET socket
	// (a bridge, an uplink of a bridge, a macvtap).
	KindHost Kind = iota
	// KindOVS injects frames into an Open vSwitch bridge as if they came in
	// on OFPort (OpenFlow packet-out), so OVS floods them with the port's
	// VLAN rules.
	KindOVS
)

func (k Kind) String() string {
	switch k {
	case KindHost:
		return "host"
	case KindOVS:
		return "ovs"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Port is where an announce's frames go: typed, comparable, so it keys the
// running announces and the links without a name that has to be parsed
// back.
type Port struct {
	Kind Kind
	// Device is the netdev (host) or the OVS port's name (ovs; for logs,
	// the frames go by Bridge and OFPort).
	Device string
	Bridge string // ovs: the bridge the frame is injected into
	OFPort int    // ovs: the OpenFlow port it is injected as if from
}

// HostPort is the netdev dev.
func HostPort(dev string) Port { return Port{Kind: KindHost, Device: dev} }

// OVSPort is OVS port name, OpenFlow port ofport of bridge.
func OVSPort(name, bridge string, ofport int) Port {
	return Port{Kind: KindOVS, Device: name, Bridge: bridge, OFPort: ofport}
}

// Segment is what one pacer guards: the broadcast domain a port's frames
// load. A host port is its own segment (the bridge or uplink device); every
// port of an OVS bridge shares the bridge's.
type Segment struct {
	Kind Kind
	Name string
}

// Segment returns p's segment.
func (p Port) Segment() Segment {
	if p.Kind == KindOVS {
		return Segment{KindOVS, p.Bridge}
	}
	return Segment{p.Kind, p.Device}
}

// String is the device name of a host port and "ovs:<bridge>:<ofport>" of
// an OVS port, as logs and Sent.Interface show them.
func (p Port) String() string {
	if p.Kind == KindOVS {
		return "ovs:" + p.Bridge + ":" + strconv.Itoa(p.OFPort)
	}
	return p.Device
}

// ErrNoOpener is returned for a port whose kind the announcer cannot open.
var ErrNoOpener = errors.New("no opener for this kind of port")

// Validate checks that p names a place frames can go.
func (p Port) Validate() error {
	switch p.Kind {
	case KindHost:
		if p.Device == "" {
			return ErrEmptyInterface
		}
	case KindOVS:
		if p.Bridge == "" || p.OFPort <= 0 {
			return fmt.Errorf("ovs port %q: needs a bridge and an OpenFlow port > 0, have %q and %d", p.Device, p.Bridge, p.OFPort)
		}
	default:
		return fmt.Errorf("port %s: %w", p, ErrNoOpener)
	}
	return nil
}

// PortOpener opens the Sender of a port.
type PortOpener func(Port) (Sender, error)
