package reconverge

import (
	"testing"

	"github.com/rarp-announce/rarp-announce/internal/frametest"
	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// watchRig is a host namespace whose uplink "upl" faces a switch namespace
// (its end "sw"): what the switch sends arrives on upl as the fabric's
// delivery would. The package's own tests and reconverge_test share it
// (export_test.go).
func watchRig(t testing.TB) (host, sw *netnstest.NS) {
	netnstest.Require(t)
	host, sw = netnstest.New(t, "host"), netnstest.New(t, "sw")
	netnstest.Veth(t, host, "upl", sw, "sw")
	return host, sw
}

// frame is an Ethernet frame dst, src, IPv4 EtherType, padded to 60 bytes.
func frame(dst, src rarp.MAC) []byte { return frametest.Ether(dst, src, 0x0800) }
