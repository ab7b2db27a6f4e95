package portwatch

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// update is what one RTM_NEWLINK or RTM_DELLINK message says about a link.
//
// Two families arrive on the link group. AF_UNSPEC messages describe the
// whole device; for a bridge port they carry the STP state in
// IFLA_LINKINFO/IFLA_INFO_SLAVE_DATA. AF_BRIDGE messages are the bridge's own
// notices about one of its ports: they carry the STP state in IFLA_PROTINFO
// and are the only notice of a state change (listening -> learning ->
// forwarding), and an AF_BRIDGE RTM_DELLINK means "no longer my port", not
// "device deleted".
type update struct {
	del        bool
	bridge     bool // AF_BRIDGE family
	index      int
	name       string
	flags      uint32 // ifi_flags: IFF_UP, IFF_LOWER_UP, ...
	kind       string // IFLA_INFO_KIND
	slaveKind  string // IFLA_INFO_SLAVE_KIND: "bridge" for a bridge port
	master     int
	hasMaster  bool
	parent     int  // IFLA_LINK
	parentNS   bool // IFLA_LINK_NETNSID present: parent is in another namespace
	oper       netlink.LinkOperState
	hasOper    bool
	portState  PortState
	hasPortSt  bool
	hasLinkInf bool
}

// Attribute numbers used here (linux/if_link.h).
const (
	iflaLinkInfo     = unix.IFLA_LINKINFO
	iflaInfoKind     = unix.IFLA_INFO_KIND
	iflaInfoSlvKind  = unix.IFLA_INFO_SLAVE_KIND
	iflaInfoSlvData  = unix.IFLA_INFO_SLAVE_DATA
	iflaBrportState  = unix.IFLA_BRPORT_STATE
	sizeofIfInfomsg  = unix.SizeofIfInfomsg
	nlaTypeMask      = 0x3fff // NLA_TYPE_MASK: without NLA_F_NESTED and NLA_F_NET_BYTEORDER
	sizeofNlAttrHead = 4
)

var errMalformed = errors.New("malformed link message")

// parseLink decodes the ifinfomsg and attributes of a link message (the
// netlink payload, after the nlmsghdr). Unknown attributes are skipped.
func parseLink(msgType uint16, data []byte) (update, error) {
	var u update
	if msgType != unix.RTM_NEWLINK && msgType != unix.RTM_DELLINK {
		return u, fmt.Errorf("%w: message type %d", errMalformed, msgType)
	}
	if len(data) < sizeofIfInfomsg {
		return u, fmt.Errorf("%w: %d bytes, short ifinfomsg", errMalformed, len(data))
	}
	u.del = msgType == unix.RTM_DELLINK
	switch data[0] {
	case unix.AF_UNSPEC:
	case unix.AF_BRIDGE:
		u.bridge = true
	default:
		return u, fmt.Errorf("%w: family %d", errMalformed, data[0])
	}
	u.index = int(int32(binary.NativeEndian.Uint32(data[4:8])))
	if u.index <= 0 {
		return u, fmt.Errorf("%w: interface index %d", errMalformed, u.index)
	}
	u.flags = binary.NativeEndian.Uint32(data[8:12])
	err := walk(data[sizeofIfInfomsg:], func(typ uint16, v []byte) error {
		switch typ {
		case unix.IFLA_IFNAME:
			u.name = cstring(v)
		case unix.IFLA_MASTER:
			n, err := u32(v)
			u.master, u.hasMaster = int(n), true
			return err
		case unix.IFLA_LINK:
			n, err := u32(v)
			u.parent = int(n)
			return err
		case unix.IFLA_LINK_NETNSID:
			u.parentNS = true
		case unix.IFLA_OPERSTATE:
			if len(v) < 1 {
				return errMalformed
			}
			u.oper, u.hasOper = netlink.LinkOperState(v[0]), true
		case iflaLinkInfo:
			u.hasLinkInf = true
			return u.linkInfo(v)
		case unix.IFLA_PROTINFO:
			if u.bridge {
				return u.brport(v)
			}
		}
		return nil
	})
	if err != nil {
		return u, fmt.Errorf("%w: interface %d: %v", errMalformed, u.index, err)
	}
	return u, nil
}

func (u *update) linkInfo(b []byte) error {
	var slaveData []byte
	err := walk(b, func(typ uint16, v []byte) error {
		switch typ {
		case iflaInfoKind:
			u.kind = cstring(v)
		case iflaInfoSlvKind:
			u.slaveKind = cstring(v)
		case iflaInfoSlvData:
			slaveData = v
		}
		return nil
	})
	if err != nil || slaveData == nil || u.slaveKind != "bridge" {
		return err
	}
	return u.brport(slaveData)
}

// brport reads IFLA_BRPORT_STATE from a bridge port's attributes.
func (u *update) brport(b []byte) error {
	return walk(b, func(typ uint16, v []byte) error {
		if typ == iflaBrportState {
			if len(v) < 1 {
				return errMalformed
			}
			u.portState, u.hasPortSt = PortState(v[0]), true
		}
		return nil
	})
}

// walk calls fn for each netlink attribute in b, with the nested and
// byte-order flags masked off the type.
func walk(b []byte, fn func(typ uint16, v []byte) error) error {
	for len(b) >= sizeofNlAttrHead {
		n := int(binary.NativeEndian.Uint16(b[0:2]))
		typ := binary.NativeEndian.Uint16(b[2:4]) & nlaTypeMask
		if n < sizeofNlAttrHead || n > len(b) {
			return fmt.Errorf("attribute %d: length %d of %d bytes", typ, n, len(b))
		}
		if err := fn(typ, b[sizeofNlAttrHead:n]); err != nil {
			return err
		}
		n = (n + unix.NLA_ALIGNTO - 1) &^ (unix.NLA_ALIGNTO - 1)
		if n > len(b) {
			n = len(b)
		}
		b = b[n:]
	}
	return nil
}

func u32(v []byte) (uint32, error) {
	if len(v) < 4 {
		return 0, errMalformed
	}
	return binary.NativeEndian.Uint32(v), nil
}

func cstring(v []byte) string {
	for i, c := range v {
		if c == 0 {
			return string(v[:i])
		}
	}
	return string(v)
}
