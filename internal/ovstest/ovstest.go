// Package ovstest runs a private Open vSwitch for tests: ovsdb-server and
// ovs-vswitchd with the userspace (netdev) datapath inside a test network
// namespace, so no kernel module, no systemd and no shared state is
// needed. Every file (database, sockets, pidfiles, logs) lives in a
// directory of its own, and cleanup stops both daemons by pidfile and
// checks that they are gone.
package ovstest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rarp-announce/rarp-announce/internal/netnstest"
)

// Tools are the commands Start needs; pass them to netnstest.Require.
var Tools = []string{"ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-ofctl", "ovs-appctl"}

// Schema is the packaged OVSDB schema (Debian openvswitch-common).
const Schema = "/usr/share/openvswitch/vswitch.ovsschema"

// OVS is one running Open vSwitch.
type OVS struct {
	NS *netnstest.NS
	// Dir is the run, database and log directory (OVS_RUNDIR etc.).
	Dir string
	// DB is the database socket as --db takes it.
	DB string

	stopped bool
}

// Start runs ovsdb-server and ovs-vswitchd in ns; cleanup stops them.
func Start(t testing.TB, ns *netnstest.NS) *OVS {
	t.Helper()
	if _, err := os.Stat(Schema); err != nil {
		t.Fatalf("ovstest: %v (install openvswitch-switch)", err)
	}
	// A short directory rather than t.TempDir(): unix socket paths are
	// limited to 107 bytes, and test names can be long.
	dir, err := os.MkdirTemp("", "rovs")
	if err != nil {
		t.Fatal(err)
	}
	o := &OVS{NS: ns, Dir: dir, DB: "unix:" + filepath.Join(dir, "db.sock")}
	t.Cleanup(func() {
		o.Stop(t)
		if t.Failed() {
			for _, l := range []string{"ovsdb-server.log", "ovs-vswitchd.log"} {
				if b, err := os.ReadFile(filepath.Join(dir, l)); err == nil {
					t.Logf("%s:\n%s", l, tail(b, 40))
				}
			}
		}
		os.RemoveAll(dir)
	})
	netnstest.Run(t, "ovsdb-tool", "create", filepath.Join(dir, "conf.db"), Schema)
	o.daemon(t, "ovsdb-server", filepath.Join(dir, "conf.db"), "--remote=punix:"+filepath.Join(dir, "db.sock"))
	o.Vsctl(t, "--no-wait", "init")
	o.daemon(t, "ovs-vswitchd", o.DB)
	return o
}

// daemon starts name detached; --detach returns once it is ready.
func (o *OVS) daemon(t testing.TB, name string, args ...string) {
	t.Helper()
	args = append(args, "--pidfile="+o.pidfile(name), "--unixctl="+filepath.Join(o.Dir, name+".ctl"),
		"--log-file="+filepath.Join(o.Dir, name+".log"), "-vconsole:off", "--detach", "--no-chdir")
	cmd := o.NS.Command(append([]string{name}, args...)...)
	cmd.Env = o.env()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", name, err, out)
	}
}

func (o *OVS) pidfile(name string) string { return filepath.Join(o.Dir, name+".pid") }

func (o *OVS) env() []string {
	return append(os.Environ(), "OVS_RUNDIR="+o.Dir, "OVS_DBDIR="+o.Dir, "OVS_LOGDIR="+o.Dir)
}

// Pid returns the pid of "ovsdb-server" or "ovs-vswitchd".
func (o *OVS) Pid(t testing.TB, name string) int {
	t.Helper()
	b, err := os.ReadFile(o.pidfile(name))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("%s: %v", o.pidfile(name), err)
	}
	return pid
}

// Signal sends sig to "ovsdb-server" or "ovs-vswitchd" (SIGSTOP makes a
// hung switch; cleanup continues it before stopping it).
func (o *OVS) Signal(t testing.TB, name string, sig syscall.Signal) {
	t.Helper()
	if err := syscall.Kill(o.Pid(t, name), sig); err != nil {
		t.Fatalf("signal %s: %v", name, err)
	}
}

// Stop stops both daemons (ovs-vswitchd first) and fails t if either
// survives; it is idempotent.
func (o *OVS) Stop(t testing.TB) {
	t.Helper()
	if o.stopped {
		return
	}
	o.stopped = true
	for _, name := range []string{"ovs-vswitchd", "ovsdb-server"} {
		b, err := os.ReadFile(o.pidfile(name))
		if err != nil {
			continue // never started, or removed its pidfile on exit
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 1 {
			continue
		}
		if err := stopPid(pid, name); err != nil {
			t.Errorf("ovstest: %v", err)
		}
	}
}

// stopPid continues (a SIGSTOPped daemon ignores SIGTERM), terminates,
// waits up to 5 s, then kills; a zombie counts as gone.
func stopPid(pid int, name string) error {
	if !alive(pid, name) {
		return nil
	}
	_ = syscall.Kill(pid, syscall.SIGCONT)
	_ = syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if !alive(pid, name) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	time.Sleep(100 * time.Millisecond)
	if alive(pid, name) {
		return fmt.Errorf("%s (pid %d) survived SIGKILL", name, pid)
	}
	return fmt.Errorf("%s (pid %d) ignored SIGTERM for 5 s; killed", name, pid)
}

// alive reports whether pid is still the named daemon and not a zombie
// (the pid may have been reused by something else: then it is not ours).
func alive(pid int, name string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// "pid (comm) state ..."; comm is truncated to 15 bytes.
	s := string(b)
	lp, rp := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if lp < 0 || rp < lp || rp+2 >= len(s) {
		return false
	}
	comm := s[lp+1 : rp]
	if !strings.HasPrefix(name, comm) {
		return false
	}
	return s[rp+2] != 'Z' && s[rp+2] != 'X'
}

func (o *OVS) run(t testing.TB, argv ...string) string {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = o.env()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\n%s%s", strings.Join(argv, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// Vsctl runs ovs-vsctl against this database.
func (o *OVS) Vsctl(t testing.TB, args ...string) string {
	t.Helper()
	return o.run(t, append([]string{"ovs-vsctl", "--timeout=10", "--db=" + o.DB}, args...)...)
}

// Ofctl runs ovs-ofctl; a bridge name resolves to this OVS's socket.
func (o *OVS) Ofctl(t testing.TB, args ...string) string {
	t.Helper()
	return o.run(t, append([]string{"ovs-ofctl", "--timeout=10"}, args...)...)
}

// Appctl runs ovs-appctl against this ovs-vswitchd.
func (o *OVS) Appctl(t testing.TB, args ...string) string {
	t.Helper()
	return o.run(t, append([]string{"ovs-appctl", "--timeout=10", "-t", filepath.Join(o.Dir, "ovs-vswitchd.ctl")}, args...)...)
}

// AddBridge creates a userspace-datapath bridge and brings its internal
// port up.
func (o *OVS) AddBridge(t testing.TB, name string, settings ...string) {
	t.Helper()
	args := []string{"add-br", name, "--", "set", "Bridge", name, "datapath_type=netdev"}
	o.Vsctl(t, append(args, settings...)...)
	o.NS.Exec(t, "ip", "link", "set", "dev", name, "up")
}

// OFPort is port's OpenFlow port number.
func (o *OVS) OFPort(t testing.TB, port string) int {
	t.Helper()
	s := strings.TrimSpace(o.Vsctl(t, "get", "Interface", port, "ofport"))
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("ofport of %s: %q", port, s)
	}
	return n
}

// FDBEntry is one line of ovs-appctl fdb/show.
type FDBEntry struct {
	Port string // OpenFlow port number, or "LOCAL"
	VLAN int
	MAC  string
}

var fdbLine = regexp.MustCompile(`^\s*(\S+)\s+(\d+)\s+([0-9a-f:]{17})\s+\d+`)

// FDB returns OVS's own MAC learning table of bridge.
func (o *OVS) FDB(t testing.TB, bridge string) []FDBEntry {
	t.Helper()
	var out []FDBEntry
	for _, l := range strings.Split(o.Appctl(t, "fdb/show", bridge), "\n") {
		m := fdbLine.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		vlan, _ := strconv.Atoi(m[2])
		out = append(out, FDBEntry{Port: m[1], VLAN: vlan, MAC: m[3]})
	}
	return out
}

// WaitFDB polls bridge's table until mac is learned on port in vlan or
// timeout passes; it returns the entries for mac last seen.
func (o *OVS) WaitFDB(t testing.TB, bridge, mac, port string, vlan int, timeout time.Duration) []FDBEntry {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var got []FDBEntry
		for _, e := range o.FDB(t, bridge) {
			if e.MAC == mac {
				got = append(got, e)
			}
		}
		for _, e := range got {
			if e.Port == port && e.VLAN == vlan {
				return got
			}
		}
		if time.Now().After(deadline) {
			return got
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
