package config

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rarp-announce/rarp-announce/pkg/rarptable"
)

// CheckTables (run --check) loads the responder's tables: a bad line is a
// problem that stays (exit 2), a missing file one that may pass (run
// retries it), a disabled responder nothing to check.
func TestCheckTables(t *testing.T) {
	dir := t.TempDir()
	ethers := filepath.Join(dir, "ethers")
	c := Default()
	c.Responder = Responder{Enabled: true, Interfaces: []string{"br0"}, Ethers: ethers}
	if err := os.WriteFile(ethers, []byte("52:54:00:00:00:01 10.0.0.1\n52:54:00:00:00:02 10.0.0.300\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	transient, err := CheckTables(context.Background(), c)
	if err == nil || transient || !strings.HasPrefix(err.Error(), ethers+":2: ") {
		t.Fatalf("bad line: transient %v, %v", transient, err)
	}
	c.Responder.Ethers = filepath.Join(dir, "missing")
	if transient, err = CheckTables(context.Background(), c); err == nil || !transient {
		t.Fatalf("missing file: transient %v, %v", transient, err)
	}
	// A boot directory that cannot be read would make the responder
	// answer nobody: refused (exit 2), not retried.
	c.Responder.Ethers = ethers
	c.Responder.BootDir = filepath.Join(dir, "no-boot-dir")
	if transient, err = CheckTables(context.Background(), c); err == nil || transient ||
		err.Error() != "responder.boot_dir: "+c.Responder.BootDir+": no such file or directory" {
		t.Fatalf("missing boot dir: transient %v, %v", transient, err)
	}
	c.Responder.BootDir = ""
	c.Responder.Enabled = false
	if _, err = CheckTables(context.Background(), c); err != nil {
		t.Fatalf("disabled responder: %v", err)
	}

	// ip_announce.static_map: run refuses to start on it (exit 2), so
	// --check does too, on a bad line and on a missing file alike.
	static := filepath.Join(dir, "static.yaml")
	if err := os.WriteFile(static, []byte("not: [a map\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c.IPAnnounce.Enabled, c.IPAnnounce.Sources.Static, c.IPAnnounce.StaticMap = true, true, static
	for _, path := range []string{static, filepath.Join(dir, "missing.yaml")} {
		c.IPAnnounce.StaticMap = path
		transient, err = CheckTables(context.Background(), c)
		if err == nil || transient || !strings.HasPrefix(err.Error(), "ip_announce.static_map: ") {
			t.Errorf("static map %s: transient %v, %v", path, transient, err)
		}
	}
}

// A map given alone is the whole table; with neither file given the table
// is /etc/ethers, as rarpd's. The default ethers used to stay beside a map
// given alone, and a host without /etc/ethers never served the map.
func TestResponderFiles(t *testing.T) {
	for _, c := range []struct {
		r    Responder
		want rarptable.Files
	}{
		{Default().Responder, rarptable.Files{Ethers: DefaultEthers}},
		{Responder{Map: "/m.yaml"}, rarptable.Files{Map: "/m.yaml"}},
		{Responder{Ethers: "/e"}, rarptable.Files{Ethers: "/e"}},
		{Responder{Ethers: "/e", Map: "/m.yaml"}, rarptable.Files{Ethers: "/e", Map: "/m.yaml"}},
	} {
		if got := c.r.Files(); got != c.want {
			t.Errorf("%+v: Files() = %+v, want %+v", c.r, got, c.want)
		}
	}
	// run --check with a map alone and no ethers file on the host.
	dir := t.TempDir()
	m := filepath.Join(dir, "map.yaml")
	if err := os.WriteFile(m, []byte("mappings:\n  - {mac: 52:54:00:00:00:01, ip: 10.0.0.1}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := Default()
	c.Responder = Responder{Enabled: true, Interfaces: []string{"br0"}, Map: m}
	if _, err := CheckTables(context.Background(), c); err != nil {
		t.Fatalf("map alone: %v", err)
	}
}
