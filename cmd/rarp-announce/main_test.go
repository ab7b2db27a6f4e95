package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rarp-announce/rarp-announce/internal/testbin"
)

// binary is the rarp-announce built once for the tests of this package,
// which run it as a user would: in network namespaces, with real flags.
var binary string

func TestMain(m *testing.M) {
	var cleanup func()
	var err error
	if binary, cleanup, err = testbin.Build(".", "rarp-announce", "-race"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	cleanup()
	os.Exit(code)
}

type result = testbin.Result

func run(t *testing.T, cmd *exec.Cmd) result { return testbin.Run(t, cmd) }

func TestUsageErrorsExit2AndNameTheFlag(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{}, "Usage: rarp-announce COMMAND"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"help", "frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"send", "--mac", "52:54:00:aa:bb:cc"}, "--interface is required"},
		{[]string{"send", "-i", "br0"}, "--mac is required"},
		{[]string{"send", "-i", "br0", "--mac", "ff:ff:ff:ff:ff:ff"}, "--mac: ff:ff:ff:ff:ff:ff is the broadcast address"},
		{[]string{"send", "-i", "br0", "--mac", "01:00:5e:00:00:01"}, "--mac: 01:00:5e:00:00:01 is a multicast address"},
		{[]string{"send", "-i", "br0", "--mac", "00:00:00:00:00:00"}, "--mac: 00:00:00:00:00:00 is the all-zero address"},
		{[]string{"send", "-i", "br0", "--mac", "52:54:00:aa:bb"}, "--mac"},
		{[]string{"send", "-i", "br0", "--mac", "52:54:00:aa:bb:cc", "--vlan", "0"}, "--vlan: 0 is not a VLAN ID"},
		{[]string{"send", "-i", "br0", "--mac", "52:54:00:aa:bb:cc", "--vlan", "4095"}, "--vlan: 4095 is not a VLAN ID"},
		{[]string{"send", "-i", "br0", "--mac", "52:54:00:aa:bb:cc", "--initial", "soon"}, `invalid value "soon" for flag --initial`},
		{[]string{"send", "-i", "br0", "--mac", "52:54:00:aa:bb:cc", "--step", "-1s"}, "--step: -1s is outside"},
		{[]string{"send", "-i", "br0", "--mac", "52:54:00:aa:bb:cc", "--rounds", "0"}, "--rounds: 0 is outside"},
		{[]string{"send", "-i", "br0", "--mac", "52:54:00:aa:bb:cc", "--bursts", "3"}, "--burst-interval: must be > 0"},
		{[]string{"send", "-i", "br0", "--mac", "52:54:00:aa:bb:cc", "--priority", "3"}, "--priority needs --vlan"},
		{[]string{"send", "-i", "br0", "--mac", "52:54:00:aa:bb:cc", "extra"}, `unexpected argument "extra"`},
		{[]string{"send", "--bogus"}, "unknown flag --bogus"},
		{[]string{"send", "-i", "br0", "--mac", "52:54:00:aa:bb:cc", "--rate", "NaN"}, `invalid value "NaN" for flag --rate: NaN is outside 1 to 1000000`},
		{[]string{"send", "-i", "br0", "--mac", "52:54:00:aa:bb:cc", "--rate", "1e-300"}, `invalid value "1e-300" for flag --rate`},
		{[]string{"send", "-i", "br0", "--mac", "52:54:00:aa:bb:cc", "--rate", "0"}, `invalid value "0" for flag --rate`},
		{[]string{"serve", "-i", "lo", "--ethers", "/dev/null", "--metrics-address", ":99999"}, `--metrics-address: ":99999": port "99999" is not 0 to 65535`},
		{[]string{"serve", "-i", "a/b", "--ethers", "/dev/null"}, `--interface: "a/b" contains '/', ':' or white space`},
		{[]string{"serve", "-i", "lo", "--ethers", "/dev/null", "--boot-dir", "/nonexistent-boot-dir"}, "--boot-dir: /nonexistent-boot-dir: no such file or directory"},
	}
	for _, c := range cases {
		r := run(t, exec.Command(binary, c.args...))
		if r.Code != 2 || !strings.Contains(r.Stderr, c.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit 2 and %q", c.args, r.Code, r.Stderr, c.want)
		}
	}
}

func TestVersionFlag(t *testing.T) {
	for _, arg := range []string{"--version", "-version", "version"} {
		r := run(t, exec.Command(binary, arg))
		if r.Code != 0 || !strings.HasPrefix(r.Stdout, "rarp-announce ") {
			t.Errorf("%s: exit %d, stdout %q, stderr %q", arg, r.Code, r.Stdout, r.Stderr)
		}
	}
}

func TestHelpShowsExamples(t *testing.T) {
	r := run(t, exec.Command(binary, "send", "--help"))
	if r.Code != 0 || !strings.Contains(r.Stdout, "Examples:") || !strings.Contains(r.Stdout, "--burst-interval") {
		t.Fatalf("exit %d\n%s", r.Code, r.Stdout)
	}
	r = run(t, exec.Command(binary, "--help"))
	if r.Code != 0 || !strings.Contains(r.Stdout, "send") {
		t.Fatalf("exit %d\n%s", r.Code, r.Stdout)
	}
}

func TestSendPcapDryRun(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dry.pcap")
	r := run(t, exec.Command(binary, "send", "-i", "br-none", "--mac", "52:54:00:aa:bb:cc", "--vlan", "7",
		"--rounds", "3", "--initial", "1ms", "--step", "1ms", "--bursts", "2", "--burst-interval", "10ms", "--pcap", path))
	if r.Code != 0 {
		t.Fatalf("exit %d: %s", r.Code, r.Stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.Stdout), "\n")
	if len(lines) != 7 || !strings.Contains(lines[0], "br-none 52:54:00:aa:bb:cc vlan=7 burst=1 round=1/3 sent") ||
		!strings.Contains(lines[5], "burst=2 round=3/3 sent") || !strings.HasPrefix(lines[6], "sent 6 frames") {
		t.Fatalf("output:\n%s", r.Stdout)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// pcap header + 6 x (16-byte record header + 64-byte tagged frame)
	if len(b) != 24+6*(16+64) {
		t.Fatalf("pcap is %d bytes", len(b))
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("pcap mode: %v, %v; want 0600", fi.Mode(), err)
	}
}

// --pcap creates its file: an existing file is not truncated and a symlink
// is not followed.
func TestSendPcapRefusesExistingFileAndSymlink(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.pcap")
	if err := os.Symlink(victim, link); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{victim, link} {
		r := run(t, exec.Command(binary, "send", "-i", "br-none", "--mac", "52:54:00:aa:bb:cc", "--rounds", "1", "--pcap", path))
		if r.Code != 1 || !strings.Contains(r.Stderr, "must not exist") {
			t.Errorf("--pcap %s: exit %d, stderr %q; want exit 1 and a refusal", path, r.Code, r.Stderr)
		}
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep me" {
		t.Errorf("existing file now holds %q", b)
	}
}
