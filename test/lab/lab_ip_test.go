package lab_test

import (
	"testing"

	"github.com/rarp-announce/rarp-announce/internal/netnstest"
)

// TestLabIPFollow runs lab-e2e-ip.sh: the VM's domain XML carries Nova's
// metadata with 10.66.0.10 and fd66::10, QEMU's own announce is suppressed
// and the agents run with ip_announce on. After each migration the switch
// sees, entering from the destination's port after the RARPs, GARPs for the
// IPv4 address and unsolicited NAs for the IPv6 one (tshark-decoded fields,
// >= 1.1 s apart), and an arp_accept=0 router on the switch, which had no
// entry before, has one for the VM within 1 s of the Resumed event.
func TestLabIPFollow(t *testing.T) {
	netnstest.Require(t, "tshark")
	runLab(t, "lab-e2e-ip.sh")
}
