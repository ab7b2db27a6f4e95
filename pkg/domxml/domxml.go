// Package domxml reads what the agent needs from a libvirt domain's live XML
// (virDomainGetXMLDesc with flags 0): the domain's name and UUID and, for
// every <interface>, its MAC, type, tap/macvtap device, alias, source, VLAN
// tags and Open vSwitch port.
//
// It is encoding/xml by hand: libvirt.org/go/libvirtxml is not available, and
// the agent needs a dozen attributes, not the whole schema.
//
// Things worth knowing about the live XML (seen with libvirt 9.0, see
// testdata/README.md):
//   - an <interface type='network'> is shown with its *actual* type: a network
//     of forward mode bridge (or a NAT network's virbrN) appears as
//     type='bridge' with <source network='...' portid='...' bridge='br0'/>;
//   - <target dev> and <alias name> exist only in the live XML;
//   - <vlan> is accepted by libvirt only where it can apply it (Open vSwitch,
//     hostdev/SR-IOV, direct on some NICs), never on a plain Linux bridge.
package domxml

import (
	"bytes"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// Domain is what Parse extracts from a domain's XML.
type Domain struct {
	Name       string
	UUID       string // canonical lower-case 8-4-4-4-12
	ID         int    // <domain id=...>: -1 when absent (inactive XML)
	Interfaces []Interface
	// NovaPorts is Nova's <nova:instance><nova:ports> metadata as written
	// (nil without it); see NovaFixedIPs.
	NovaPorts []NovaPort

	carried *xmlAddresses // our own <metadata>, see CarriedAddresses
}

// Interface is one <interface> of a domain.
type Interface struct {
	Index         int    // position among the domain's <interface> elements, from 0
	Type          string // bridge, network, direct, ethernet, vhostuser, hostdev, user, ...
	MAC           rarp.MAC
	Target        string // <target dev=...> (live XML only): vnetN, macvtapN, ...
	Alias         string // <alias name=...> (live XML only), e.g. net0: what QMP announce-self takes
	SourceBridge  string // <source bridge=...> (type bridge; network in live XML)
	SourceDev     string // <source dev=...> (type direct: the lower device)
	SourceNetwork string // <source network=...> (type network, also kept in live XML)
	SourceMode    string // <source mode=...>: direct: vepa, bridge, private, passthrough; vhostuser: server, client
	SourcePortID  string // <source portid=...> (network ports)
	SourcePath    string // <source path=...> (vhostuser socket)
	VLANs         []VLANTag
	VLANTrunk     bool   // <vlan trunk='yes'>, or more than one tag (libvirt implies a trunk then)
	VirtualPort   string // <virtualport type=...>: openvswitch, 802.1Qbh, 802.1Qbg, midonet
	InterfaceID   string // <virtualport><parameters interfaceid=...> (Open vSwitch)
	Model         string // <model type=...>: virtio, e1000, ...
}

// VLANTag is one <tag> of an interface's <vlan>.
type VLANTag struct {
	ID         uint16 // 0-4095, as libvirt accepts
	NativeMode string // "", "tagged" or "untagged" (the trunk's native VLAN)
}

// String describes the interface for logs and errors: "#1 bridge net1 vnet1 52:54:00:...".
func (i Interface) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "#%d %s", i.Index, i.Type)
	if i.Alias != "" {
		b.WriteString(" " + i.Alias)
	}
	if i.Target != "" {
		b.WriteString(" " + i.Target)
	}
	if !i.MAC.IsZero() {
		b.WriteString(" " + i.MAC.String())
	}
	return b.String()
}

// NativeVLAN returns the tag an untagged frame on this port belongs to: the
// only tag of an access port, the nativeMode tag of a trunk, or 0 (none).
func (i Interface) NativeVLAN() uint16 {
	if !i.VLANTrunk && len(i.VLANs) == 1 {
		return i.VLANs[0].ID
	}
	for _, t := range i.VLANs {
		if t.NativeMode != "" {
			return t.ID
		}
	}
	return 0
}

// ErrNotDomain reports XML whose root element is not <domain>.
var ErrNotDomain = errors.New("domxml: root element is not <domain>")

// InterfaceError reports one <interface> that cannot be used: it names the
// interface by position, type, alias and target so that a log line points at
// the NIC.
type InterfaceError struct {
	Domain    string
	Interface Interface // what could be read of it
	Err       error
}

func (e *InterfaceError) Error() string {
	return fmt.Sprintf("domain %s: interface %s: %v", e.Domain, e.Interface, e.Err)
}

func (e *InterfaceError) Unwrap() error { return e.Err }

// Parse reads a domain's XML.
//
// Errors about the document itself (not XML, not a <domain>, no name, bad
// UUID) return a nil Domain. Errors about single interfaces (missing or bad
// MAC, bad VLAN tag) return the Domain with every *valid* interface and an
// error joining one *InterfaceError per bad interface: one broken NIC must not
// stop the others from being announced.
func Parse(data []byte) (*Domain, error) {
	var x xmlDomain
	dec := xml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&x); err != nil {
		var se xml.UnmarshalError
		if errors.As(err, &se) && strings.HasPrefix(string(se), "expected element type <domain>") {
			return nil, ErrNotDomain
		}
		return nil, fmt.Errorf("domxml: %w", err)
	}
	name := strings.TrimSpace(x.Name)
	if name == "" {
		return nil, errors.New("domxml: domain has no <name>")
	}
	uuid, err := CanonicalUUID(strings.TrimSpace(x.UUID))
	if err != nil {
		return nil, fmt.Errorf("domxml: domain %s: <uuid>: %w", name, err)
	}
	d := &Domain{Name: name, UUID: uuid, ID: -1}
	if x.Metadata != nil && x.Metadata.Nova != nil {
		d.NovaPorts = x.Metadata.Nova.ports()
	}
	if x.Metadata != nil {
		d.carried = x.Metadata.Addresses
	}
	if x.ID != "" {
		id, err := strconv.Atoi(x.ID)
		if err != nil {
			return nil, fmt.Errorf("domxml: domain %s: id %q is not a number", name, x.ID)
		}
		d.ID = id
	}
	var errs []error
	for i, xi := range x.Interfaces {
		ifc, err := xi.convert(i)
		if err != nil {
			errs = append(errs, &InterfaceError{Domain: name, Interface: ifc, Err: err})
			continue
		}
		d.Interfaces = append(d.Interfaces, ifc)
	}
	return d, errors.Join(errs...)
}

// CanonicalUUID accepts a UUID as libvirt does (32 hex digits, dashes
// anywhere) and returns it as lower-case 8-4-4-4-12.
func CanonicalUUID(s string) (string, error) {
	raw, err := ParseUUID(s)
	if err != nil {
		return "", err
	}
	return FormatUUID(raw), nil
}

// ParseUUID accepts a UUID as libvirt does (32 hex digits, dashes
// anywhere) and returns its 16 bytes.
func ParseUUID(s string) ([16]byte, error) {
	var raw [16]byte
	hexDigits := make([]byte, 0, 32)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '-' {
			continue
		}
		if len(hexDigits) == 32 {
			return raw, fmt.Errorf("%q is not a UUID (too long)", s)
		}
		hexDigits = append(hexDigits, c)
	}
	if len(hexDigits) != 32 {
		return raw, fmt.Errorf("%q is not a UUID (want 32 hex digits)", s)
	}
	if _, err := hex.Decode(raw[:], hexDigits); err != nil {
		return [16]byte{}, fmt.Errorf("%q is not a UUID (not hex)", s)
	}
	return raw, nil
}

// FormatUUID formats 16 bytes as a lower-case 8-4-4-4-12 UUID.
func FormatUUID(u [16]byte) string {
	var b [36]byte
	hex.Encode(b[0:8], u[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], u[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], u[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], u[8:10])
	b[23] = '-'
	hex.Encode(b[24:], u[10:16])
	return string(b[:])
}

type xmlDomain struct {
	XMLName    xml.Name       `xml:"domain"`
	ID         string         `xml:"id,attr"`
	Name       string         `xml:"name"`
	UUID       string         `xml:"uuid"`
	Interfaces []xmlInterface `xml:"devices>interface"`
	Metadata   *struct {
		Nova      *xmlNovaInstance `xml:"http://openstack.org/xmlns/libvirt/nova/1.1 instance"`
		Addresses *xmlAddresses    `xml:"https://github.com/rarp-announce/rarp-announce/xmlns/addresses/1 addresses"`
	} `xml:"metadata"`
}

type xmlAttrName struct {
	Name string `xml:"name,attr"`
}

type xmlInterface struct {
	Type string `xml:"type,attr"`
	MAC  *struct {
		Address string `xml:"address,attr"`
	} `xml:"mac"`
	Source *struct {
		Bridge  string `xml:"bridge,attr"`
		Dev     string `xml:"dev,attr"`
		Network string `xml:"network,attr"`
		Mode    string `xml:"mode,attr"`
		PortID  string `xml:"portid,attr"`
		Path    string `xml:"path,attr"`
	} `xml:"source"`
	Target *struct {
		Dev string `xml:"dev,attr"`
	} `xml:"target"`
	Alias *xmlAttrName `xml:"alias"`
	Model *struct {
		Type string `xml:"type,attr"`
	} `xml:"model"`
	VLAN *struct {
		Trunk string `xml:"trunk,attr"`
		Tags  []struct {
			ID         string `xml:"id,attr"`
			NativeMode string `xml:"nativeMode,attr"`
		} `xml:"tag"`
	} `xml:"vlan"`
	VirtualPort *struct {
		Type       string `xml:"type,attr"`
		Parameters *struct {
			InterfaceID string `xml:"interfaceid,attr"`
		} `xml:"parameters"`
	} `xml:"virtualport"`
}

// convert builds an Interface; on error it still returns what it could read
// so that the error can name the NIC.
func (x *xmlInterface) convert(index int) (Interface, error) {
	ifc := Interface{Index: index, Type: x.Type}
	if x.Source != nil {
		ifc.SourceBridge = x.Source.Bridge
		ifc.SourceDev = x.Source.Dev
		ifc.SourceNetwork = x.Source.Network
		ifc.SourceMode = x.Source.Mode
		ifc.SourcePortID = x.Source.PortID
		ifc.SourcePath = x.Source.Path
	}
	if x.Target != nil {
		ifc.Target = x.Target.Dev
	}
	if x.Alias != nil {
		ifc.Alias = x.Alias.Name
	}
	if x.Model != nil {
		ifc.Model = x.Model.Type
	}
	if x.VirtualPort != nil {
		ifc.VirtualPort = x.VirtualPort.Type
		if x.VirtualPort.Parameters != nil {
			ifc.InterfaceID = x.VirtualPort.Parameters.InterfaceID
		}
	}
	if ifc.Type == "" {
		return ifc, errors.New("no type attribute")
	}
	if x.MAC == nil || x.MAC.Address == "" {
		return ifc, errors.New("no <mac address>")
	}
	mac, err := rarp.ParseMAC(x.MAC.Address)
	if err != nil {
		return ifc, fmt.Errorf("mac address: %w", err)
	}
	ifc.MAC = mac
	if err := mac.ValidateUnicast(); err != nil {
		return ifc, fmt.Errorf("mac address: %w", err)
	}
	if x.VLAN != nil {
		switch x.VLAN.Trunk {
		case "", "no":
		case "yes":
			ifc.VLANTrunk = true
		default:
			return ifc, fmt.Errorf("<vlan trunk=%q>: want yes or no", x.VLAN.Trunk)
		}
		if len(x.VLAN.Tags) == 0 {
			return ifc, errors.New("<vlan> without <tag>")
		}
		for _, t := range x.VLAN.Tags {
			id, err := strconv.ParseUint(t.ID, 10, 16)
			if err != nil || id > 4095 {
				return ifc, fmt.Errorf("<vlan><tag id=%q>: want 0-4095", t.ID)
			}
			switch t.NativeMode {
			case "", "tagged", "untagged":
			default:
				return ifc, fmt.Errorf("<vlan><tag id='%d' nativeMode=%q>: want tagged or untagged", id, t.NativeMode)
			}
			ifc.VLANs = append(ifc.VLANs, VLANTag{ID: uint16(id), NativeMode: t.NativeMode})
		}
		if len(ifc.VLANs) > 1 {
			ifc.VLANTrunk = true
		}
	}
	return ifc, nil
}
