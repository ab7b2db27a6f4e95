package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rarp-announce/rarp-announce/internal/libvirtfake"
	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/pkg/libvirtconn"
)

// verify --domain on the agent's rig: the host's bridge br0 with its
// uplink to a switch, the gateway (192.0.2.1) behind the switch on the old
// host, the VM's tap on br0, libvirtd faked. The probe's ARP request
// leaves through the uplink; the gateway's reply, addressed to the VM's
// MAC, comes back through it.
func TestVerifyProbesThroughTheUplink(t *testing.T) {
	netnstest.Require(t)
	rig := netnstest.NewRig(t)
	rig.Old.Exec(t, "ip", "addr", "add", "192.0.2.1/24", "dev", netnstest.RigOldPort)
	rig.Host.Exec(t, "ip", "tuntap", "add", "dev", "vnet0", "mode", "tap")
	rig.Host.Attach(t, "vnet0", netnstest.RigHostBridge)

	dir, err := os.MkdirTemp("", "vfy")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "sock")
	fake := libvirtfake.StartAt(t, sock)
	const mac = "52:54:00:76:66:01"
	for _, d := range []libvirtfake.Domain{
		{Name: "here", UUID: "76657269-6679-4000-8000-000000000001", State: libvirtconn.StateRunning, Reason: 1,
			XML: libvirtfake.LiveXML("here", "76657269-6679-4000-8000-000000000001", 1, libvirtfake.NIC{MAC: mac, Target: "vnet0"})},
		{Name: "off", UUID: "76657269-6679-4000-8000-000000000002", State: 5,
			XML: libvirtfake.LiveXML("off", "76657269-6679-4000-8000-000000000002", -1, libvirtfake.NIC{MAC: "52:54:00:76:66:02"})},
	} {
		if err := fake.AddDomain(d); err != nil {
			t.Fatal(err)
		}
	}
	cfg := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(cfg, []byte("libvirt:\n  socket: "+sock+"\n  uri: test:///default\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := -1
		_ = rig.Host.Do(func() error {
			code = Run(context.Background(), &Env{Stdout: &out, Stderr: &errb}, append([]string{"verify", "--config", cfg}, args...))
			return nil
		})
		return code, out.String(), errb.String()
	}

	code, out, errs := run("--domain", "here", "--ip", "192.0.2.10", "--gateway", "192.0.2.1")
	if code != ExitOK || !strings.Contains(out, "192.0.2.1 answered by") || !strings.Contains(out, "through uplink") {
		t.Fatalf("answered gateway: exit %d\n%s%s", code, out, errs)
	}
	code, out, errs = run("--domain", "here", "--ip", "192.0.2.10", "--gateway", "192.0.2.99", "--timeout", "300ms")
	if code != ExitFailure || !strings.Contains(out, "no answer from 192.0.2.99 through uplink") {
		t.Errorf("silent gateway: exit %d\n%s%s", code, out, errs)
	}
	code, out, errs = run("--domain", "off", "--ip", "192.0.2.11", "--gateway", "192.0.2.1")
	if code != ExitFailure || !strings.Contains(errs, "not running here") {
		t.Errorf("domain not running: exit %d\n%s%s", code, out, errs)
	}
	for _, args := range [][]string{
		{"--domain", "here", "--ip", "192.0.2.10"},
		{"--domain", "here", "--ip", "2001:db8::1", "--gateway", "192.0.2.1"},
		{"--domain", "here", "--ip", "192.0.2.10", "--gateway", "192.0.2.1", "--mac", "nope"},
	} {
		if code, _, errs := run(args...); code != ExitUsage {
			t.Errorf("%v: exit %d, want %d (%s)", args, code, ExitUsage, errs)
		}
	}
}
