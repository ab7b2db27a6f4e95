package deploy

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rarp-announce/rarp-announce/internal/libvirtfake"
	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/internal/ovstest"
)

// The ovs.conf drop-in against a real Open vSwitch whose sockets are
// root-only (as on Debian/Ubuntu): the real binary, run as the unit with
// the drop-in runs it (UID 0, bounding, ambient and effective sets
// CAP_NET_RAW CAP_NET_ADMIN, SecureBits noroot-locked, no_new_privs),
// announces a VM's OVS NIC with `announce --domain`, and the frame enters
// OVS from the VM's port (OVS learns the MAC there). Without the drop-in
// (the unit's non-root user) the same command cannot reach OVS, and says
// it is a permission problem.
func TestOVSDropInReachesRootOnlyOVS(t *testing.T) {
	netnstest.Require(t, append(slices.Clone(ovstest.Tools), "setpriv")...)
	u := parseUnit(t, withDropIns(t, []string{"systemd/ovs.conf"})...)
	if u.last("Service", "User") != "root" || u.last("Service", "SecureBits") != "noroot-locked" {
		t.Fatalf("ovs.conf: User=%q SecureBits=%q", u.last("Service", "User"), u.last("Service", "SecureBits"))
	}
	caps := strings.ToLower(strings.ReplaceAll(strings.Join(u.words("Service", "CapabilityBoundingSet"), ",+"), "CAP_", ""))
	set := "-all,+" + caps // -all,+net_admin,+net_raw

	hyp, vmNS := netnstest.New(t, "ovsd"), netnstest.New(t, "ovsdvm")
	o := ovstest.Start(t, hyp)
	o.AddBridge(t, "br-int")
	netnstest.Veth(t, hyp, "vm0", vmNS, "eth0")
	o.Vsctl(t, "add-port", "br-int", "vm0")
	ofport := strconv.Itoa(o.OFPort(t, "vm0"))
	if fi, err := os.Stat(o.Dir); err != nil || fi.Mode().Perm()&0o007 != 0 {
		t.Fatalf("the OVS run directory should be root-only: %v %v", fi.Mode(), err)
	}

	dir, err := os.MkdirTemp("", "rovsd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "rarp-announce")
	if out, err := exec.Command("install", "-m", "0755", agentBinary(t), bin).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	srv := libvirtfake.StartAt(t, filepath.Join(dir, "libvirt-sock-ro"))
	if err := os.Chmod(srv.Path(), 0o777); err != nil {
		t.Fatal(err)
	}
	const mac = "52:54:00:0d:00:01"
	xml := fmt.Sprintf(`<domain type='kvm'>
  <name>ovsvm</name>
  <uuid>6f76732d-766d-4000-8000-000000000001</uuid>
  <devices>
    <interface type='bridge'>
      <mac address='%s'/>
      <source bridge='br-int'/>
      <virtualport type='openvswitch'><parameters interfaceid='0b6a6e46-3c39-4bd1-9bbe-3b0a4d3a6a8d'/></virtualport>
      <target dev='vm0'/>
    </interface>
  </devices>
</domain>`, mac)
	if err := srv.AddDomain(libvirtfake.Domain{Name: "ovsvm", UUID: "6f76732d-766d-4000-8000-000000000001", State: 1, Reason: 1, XML: xml}); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("fdb_repair: false\novs:\n  db: %s\n  rundir: %s\n", o.DB, o.Dir)), 0o644); err != nil {
		t.Fatal(err)
	}
	announce := func(user, group string) (string, error) {
		args := []string{"netns", "exec", hyp.Name, "setpriv", "--reuid=" + user, "--regid=" + group, "--clear-groups", "--no-new-privs",
			"--inh-caps=" + set, "--ambient-caps=" + set, "--bounding-set=" + set}
		if user == "0" {
			args = append(args, "--securebits=+noroot,+noroot_locked")
		}
		args = append(args, "--", bin, "announce", "--domain", "ovsvm", "--libvirt-socket", srv.Path(), "--config", cfg)
		out, err := exec.Command("ip", args...).CombinedOutput()
		return string(out), err
	}
	learned := func() bool {
		for _, e := range o.FDB(t, "br-int") {
			if e.MAC == mac && e.Port == ofport {
				return true
			}
		}
		return false
	}

	// The unit without the drop-in: its non-root user cannot reach OVS.
	out, err := announce("nobody", "nogroup")
	t.Logf("as nobody:\n%s", out)
	if err == nil || learned() {
		t.Fatalf("a non-root user announced through a root-only OVS (err %v)", err)
	}
	if !strings.Contains(out, "permission") {
		t.Errorf("the failure does not say it is a permission problem:\n%s", out)
	}

	// With the drop-in: UID 0 bounded to the unit's capabilities.
	out, err = announce("0", "0")
	t.Logf("as root bounded to %s:\n%s", set, out)
	if err != nil {
		t.Fatalf("announce with ovs.conf's privileges: %v", err)
	}
	netnstest.EventuallyEvery(t, 3*time.Second, 50*time.Millisecond, func() error {
		if !learned() {
			return fmt.Errorf("OVS did not learn %s on the VM's port %s: %v", mac, ofport, o.FDB(t, "br-int"))
		}
		return nil
	})
}
