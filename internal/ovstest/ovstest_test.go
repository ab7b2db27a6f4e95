package ovstest

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/rarp-announce/rarp-announce/internal/netnstest"
)

// TestNothingLeaks: after a test using OVS ends, both daemons are gone
// (reaped, not zombies) and its directory is removed; in between, the
// switch runs the userspace datapath and restarts on its database.
func TestNothingLeaks(t *testing.T) {
	netnstest.Require(t, Tools...)
	var pids []int
	var dir string
	t.Run("use", func(t *testing.T) {
		o := Start(t, netnstest.New(t, "ovs"))
		dir = o.Dir
		o.AddBridge(t, "br0")
		if got := strings.TrimSpace(o.Vsctl(t, "get", "Bridge", "br0", "datapath_type")); got != "netdev" {
			t.Fatalf("datapath_type %s", got)
		}
		if !strings.Contains(o.Appctl(t, "dpctl/show"), "netdev@ovs-netdev") {
			t.Fatal("not the userspace datapath")
		}
		pids = append(pids, o.Pid(t, "ovsdb-server"), o.Pid(t, "ovs-vswitchd"))
		o.RestartSwitch(t)
		pids = append(pids, o.Pid(t, "ovs-vswitchd"))
		if slices.Contains(pids[:2], pids[2]) {
			t.Fatal("ovs-vswitchd did not restart")
		}
		if !strings.Contains(o.Ofctl(t, "show", "br0"), "LOCAL(br0)") {
			t.Fatal("bridge did not come back after the restart")
		}
	})
	for _, pid := range pids {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			t.Errorf("pid %d still exists (running or a zombie)", pid)
		}
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s left behind", dir)
	}
}
