package lab_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/rarp-announce/rarp-announce/internal/netnstest"
)

// TestLabEndToEndOVN runs lab-e2e-ovn.sh: each hypervisor also runs Open
// vSwitch (userspace datapath) and ovn-controller, the VM's NIC is an OVN
// logical port on br-int, and every migration carries Neutron's ML2/OVN
// settings (requested-chassis=<src>,<dst>, activation-strategy=rarp) with
// QEMU's own announce suppressed. Without the agent the destination keeps
// the port blocked; with it, the port is activated within 50 ms of the
// destination's Resumed event and the client pings the VM. The agent is
// rarp-announce run with default paths, or RARP_LAB_AGENT.
func TestLabEndToEndOVN(t *testing.T) {
	netnstest.Require(t, "ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-ofctl", "ovsdb-tool", "ovsdb-client",
		"ovn-controller", "ovn-northd", "ovn-nbctl", "ovn-sbctl")
	here, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	// test/ovn/ovnready: the script checks pkg/ovs's OVNReadiness with it
	ready := filepath.Join(t.TempDir(), "ovnready")
	cmd := exec.Command(goTool(), "build", "-o", ready, "./test/ovn/ovnready")
	cmd.Dir = filepath.Join(here, "..", "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ovnready: %v\n%s", err, out)
	}
	env := []string{"OVN_READY=" + ready}
	if a := os.Getenv(EnvAgent); a != "" && a != "standin" {
		env = append(env, "LAB_AGENT="+a)
	}
	runLab(t, "lab-e2e-ovn.sh", env...)
}
