package cli_test

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestServeAndQueryUsageErrors(t *testing.T) {
	dir := t.TempDir()
	good := writeFile(t, dir, "ethers", "52:54:00:00:00:01 10.0.0.1\n")
	bad := writeFile(t, dir, "bad", "# header\n52:54:00:00:00:01 10.0.0.1\n52:54:00:00:00:02 10.0.0.999\n")
	badMap := writeFile(t, dir, "bad.yaml", "mappings:\n  - mac: 52:54:00:00:00:03\n    ip: 10.0.0.3\n    interfce: br0\n")
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"serve", "--ethers", good}, "--interface is required"},
		{[]string{"serve", "-i", "eth0"}, "give the table: --ethers FILE, --map FILE or both"},
		{[]string{"serve", "-i", "eth0", "--ethers", good, "--coalesce", "-1s"}, "--coalesce must not be negative"},
		{[]string{"serve", "-i", "eth0", "--ethers", good, "--log-level", "loud"}, "--log-level"},
		{[]string{"serve", "-i", "eth0", "--ethers", good, "--log-format", "xml"}, `--log-format: "xml"`},
		{[]string{"serve", "-i", "eth0", "--ethers", bad}, bad + `:3: "10.0.0.999" is not an IPv4 address`},
		{[]string{"serve", "-i", "eth0", "--map", badMap}, badMap + `:4: unknown key "interfce" (allowed: mac, ip, host, interface)`},
		{[]string{"serve", "-i", "eth0", "--ethers", filepath.Join(dir, "missing")}, filepath.Join(dir, "missing") + ": cannot open: no such file or directory"},
		{[]string{"query"}, "--interface is required"},
		{[]string{"query", "-i", "eth0", "--mac", "ff:ff:ff:ff:ff:ff"}, "--mac: ff:ff:ff:ff:ff:ff is the broadcast address"},
		{[]string{"query", "-i", "eth0", "--count", "0"}, "--count must be at least 1"},
		{[]string{"query", "-i", "eth0", "--timeout", "0s"}, "--timeout must be positive"},
	}
	for _, c := range cases {
		r := run(t, exec.Command(binary, c.args...))
		if r.Code != 2 || !strings.Contains(r.Stderr, c.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit 2 and %q", c.args, r.Code, r.Stderr, c.want)
		}
	}
	for _, args := range [][]string{
		{"serve", "-i", "no-such-if0", "--ethers", good},
		{"query", "-i", "no-such-if0"},
	} {
		r := run(t, exec.Command(binary, args...))
		if r.Code != 1 || !strings.Contains(r.Stderr, "no-such-if0") {
			t.Errorf("%v: exit %d, stderr %q; want exit 1 naming the interface", args, r.Code, r.Stderr)
		}
	}
	r := run(t, exec.Command(binary, "serve", "--help"))
	if r.Code != 0 || !strings.Contains(r.Stdout, "--off-link") || !strings.Contains(r.Stdout, "SIGUSR1") {
		t.Errorf("serve --help: exit %d\n%s", r.Code, r.Stdout)
	}
}
