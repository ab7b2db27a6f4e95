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

// TestLabCarryLearned runs lab-e2e-carry.sh: no Nova metadata, no static
// map; the client's pings make the iPXE guest answer ARP on A, A's agent
// learns 10.66.0.10 on the VM's tap and writes it into the domain's live
// XML (our <metadata> namespace, read-write socket); after the migration
// to B the switch sees B's GARPs for it, entering from B's port after the
// RARPs, and virsh dumpxml on B shows the metadata. With the source's
// agent on the read-only socket (negative control) it logs once that it
// cannot carry, and the destination sends no GARP.
func TestLabCarryLearned(t *testing.T) {
	netnstest.Require(t, "tshark")
	runLab(t, "lab-e2e-carry.sh")
}
