package main

import (
	"bytes"
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
