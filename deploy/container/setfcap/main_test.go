package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rarp-announce/rarp-announce/internal/netnstest"
)

func TestVFSCapData(t *testing.T) {
	caps, err := parseCaps("cap_net_raw,CAP_NET_ADMIN")
	if err != nil {
		t.Fatal(err)
	}
	// Bytes that "setcap cap_net_raw,cap_net_admin=ep" writes (seen with getfattr).
	want := []byte{0x01, 0, 0, 0x02, 0x00, 0x30, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	if got := vfsCapData(caps); !bytes.Equal(got, want) {
		t.Errorf("vfsCapData = % x, want % x", got, want)
	}
	if _, err := parseCaps("cap_net_raw,cap_sys_admin"); err == nil || !strings.Contains(err.Error(), "cap_sys_admin") {
		t.Errorf("parseCaps(cap_sys_admin) error = %v, want unknown capability", err)
	}
}

// TestSetfcapAgreesWithGetcap sets the capabilities on a real file and reads
// them back with libcap's getcap (setting security.capability needs root).
func TestSetfcapAgreesWithGetcap(t *testing.T) {
	netnstest.Require(t, "getcap")
	file := filepath.Join(t.TempDir(), "bin")
	if err := os.WriteFile(file, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.Args = []string{"setfcap", file, "cap_net_raw,cap_net_admin"}
	main()
	out, err := exec.Command("getcap", file).CombinedOutput()
	if err != nil {
		t.Fatalf("getcap: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "cap_net_admin,cap_net_raw=ep") {
		t.Errorf("getcap %s = %q, want cap_net_admin,cap_net_raw=ep)", file, out)
	}
}

// TestNonRootGetsFileCapsOnlyWithoutNoNewPrivs shows, with the kernel's
// real rules, why the Kubernetes manifest sets allowPrivilegeEscalation:
// true. It runs a file-capable copy of cat as UID 65532 with an empty
// permitted set and a bounding set of NET_RAW+NET_ADMIN, as a non-root
// container gets them, and reads the capabilities cat ended up with.
func TestNonRootGetsFileCapsOnlyWithoutNoNewPrivs(t *testing.T) {
	netnstest.Require(t, "setpriv")
	dir, err := os.MkdirTemp("", "setfcap-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil { // UID 65532 must reach the file
		t.Fatal(err)
	}
	cat, err := os.ReadFile("/bin/cat")
	if err != nil {
		t.Fatal(err)
	}
	capcat := filepath.Join(dir, "cat")
	if err := os.WriteFile(capcat, cat, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Args = []string{"setfcap", capcat, "cap_net_raw,cap_net_admin"}
	main()

	// The outer setpriv drops to UID 65532 with the container's bounding
	// set; the inner one (no capabilities of its own) sets no_new_privs as
	// allowPrivilegeEscalation: false does, then execs the capable file.
	status := func(bounding string, nnp bool) (string, error) {
		args := []string{"--reuid", "65532", "--regid", "65532", "--clear-groups", "--inh-caps=-all",
			"--bounding-set=-all," + bounding, "setpriv"}
		if nnp {
			args = append(args, "--no-new-privs")
		}
		out, err := exec.Command("setpriv", append(args, capcat, "/proc/self/status")...).CombinedOutput()
		for _, line := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(line, "CapEff:") {
				return strings.TrimSpace(strings.TrimPrefix(line, "CapEff:")), err
			}
		}
		return "", fmt.Errorf("%v: %s", err, out)
	}
	const rawAdmin = "0000000000003000" // bits 12 (NET_ADMIN) and 13 (NET_RAW)
	if eff, err := status("+net_raw,+net_admin", false); err != nil || eff != rawAdmin {
		t.Errorf("without no_new_privs: CapEff %s (%v), want %s", eff, err, rawAdmin)
	}
	if eff, err := status("+net_raw,+net_admin", true); err != nil || eff != "0000000000000000" {
		t.Errorf("with no_new_privs: CapEff %s (%v), want none: the kernel ignores file capabilities", eff, err)
	}
	// With the effective bit set, a missing capability makes exec fail.
	if _, err := status("+net_raw", false); err == nil {
		t.Error("exec with NET_ADMIN outside the bounding set succeeded; want EPERM")
	}
}
