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

	daemons map[string]*daemon
}

// daemon is one OVS process, a child of the test process.
type daemon struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed once cmd.Wait returned
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
	o := &OVS{NS: ns, Dir: dir, DB: "unix:" + filepath.Join(dir, "db.sock"), daemons: map[string]*daemon{}}
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
	o.start(t, "ovsdb-server", filepath.Join(dir, "conf.db"), "--remote=punix:"+filepath.Join(dir, "db.sock"))
	o.Vsctl(t, "--no-wait", "init")
	o.start(t, "ovs-vswitchd", o.DB)
	return o
}

// StartIn is Start in a new namespace (netnstest.New(t, name), its NS)
// with the given bridges added, after requiring Tools.
func StartIn(t testing.TB, name string, bridges ...string) *OVS {
	t.Helper()
	netnstest.Require(t, Tools...)
	o := Start(t, netnstest.New(t, name))
	for _, b := range bridges {
		o.AddBridge(t, b)
	}
	return o
}

// start runs name in the foreground as a child of the test process, not
// --detach: a detached daemon is orphaned to PID 1, and where PID 1 does
// not reap (as in this project's VMs) every stopped daemon stays a zombie.
// It returns once the daemon answers on its control socket.
func (o *OVS) start(t testing.TB, name string, args ...string) {
	t.Helper()
	ctl := filepath.Join(o.Dir, name+".ctl")
	_ = os.Remove(ctl)
	args = append(args, "--pidfile="+o.pidfile(name), "--unixctl="+ctl,
		"--log-file="+filepath.Join(o.Dir, name+".log"), "-vconsole:off")
	// ip netns exec execs the daemon: the child's pid is the daemon's.
	cmd := o.NS.Command(append([]string{name}, args...)...)
	cmd.Env = o.env()
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	d := &daemon{cmd: cmd, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(d.exited) }()
	o.daemons[name] = d
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-d.exited:
			t.Fatalf("%s exited at start: %v", name, cmd.ProcessState)
		default:
		}
		if exec.Command("ovs-appctl", "--timeout=5", "-t", ctl, "version").Run() == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer on %s within 20 s", name, ctl)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (o *OVS) pidfile(name string) string { return filepath.Join(o.Dir, name+".pid") }

func (o *OVS) env() []string {
	return append(os.Environ(), "OVS_RUNDIR="+o.Dir, "OVS_DBDIR="+o.Dir, "OVS_LOGDIR="+o.Dir)
}

// RestartSwitch stops ovs-vswitchd and starts it again on the same
// database, as a package upgrade or a crash and restart would: bridges and
// ports come back from OVSDB, OpenFlow connections do not survive.
func (o *OVS) RestartSwitch(t testing.TB) {
	t.Helper()
	o.StopSwitch(t)
	o.StartSwitch(t)
}

// StopSwitch stops ovs-vswitchd and leaves it stopped (OVSDB still runs).
func (o *OVS) StopSwitch(t testing.TB) {
	t.Helper()
	if err := o.stop("ovs-vswitchd"); err != nil {
		t.Fatal(err)
	}
}

// StartSwitch starts ovs-vswitchd again after StopSwitch and returns once
// every bridge in OVSDB is back. ovs-vswitchd answers on its control
// socket before it has read the database: a loaded machine showed
// "br0 is not a bridge or a socket" to an ovs-ofctl run right after.
func (o *OVS) StartSwitch(t testing.TB) {
	t.Helper()
	o.start(t, "ovs-vswitchd", o.DB)
	for _, br := range strings.Fields(o.Vsctl(t, "list-br")) {
		netnstest.WaitFor(t, "bridge "+br+" back in the restarted ovs-vswitchd", func() bool {
			show := exec.Command("ovs-ofctl", "--timeout=5", "show", br)
			show.Env = o.env()
			return show.Run() == nil
		})
	}
}

// Pid returns the pid of "ovsdb-server" or "ovs-vswitchd".
func (o *OVS) Pid(t testing.TB, name string) int {
	t.Helper()
	d := o.daemons[name]
	if d == nil {
		t.Fatalf("%s is not running", name)
	}
	return d.cmd.Process.Pid
}

// Signal sends sig to "ovsdb-server" or "ovs-vswitchd" (SIGSTOP makes a
// hung daemon; stopping continues it first).
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
	for _, name := range []string{"ovs-vswitchd", "ovsdb-server"} {
		if err := o.stop(name); err != nil {
			t.Errorf("ovstest: %v", err)
		}
	}
}

// stop continues (a SIGSTOPped daemon ignores SIGTERM), terminates, waits
// up to 5 s for the child to be reaped, then kills it.
func (o *OVS) stop(name string) error {
	d := o.daemons[name]
	if d == nil {
		return nil
	}
	delete(o.daemons, name)
	p := d.cmd.Process
	_ = p.Signal(syscall.SIGCONT)
	_ = p.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
		return nil
	case <-time.After(5 * time.Second):
	}
	_ = p.Kill()
	select {
	case <-d.exited:
		return fmt.Errorf("%s (pid %d) ignored SIGTERM for 5 s; killed", name, p.Pid)
	case <-time.After(5 * time.Second):
		return fmt.Errorf("%s (pid %d) survived SIGKILL", name, p.Pid)
	}
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
