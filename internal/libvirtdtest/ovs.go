package libvirtdtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rarp-announce/rarp-announce/internal/netnstest"
)

// OVS is an Open vSwitch (ovsdb-server + ovs-vswitchd, userspace datapath:
// no kernel module needed) running in a network namespace for one test.
type OVS struct {
	RunDir string // db.sock, pid files, logs; give it to Options.OVSRunDir
	netns  string
}

// RequireOVS skips (or fails under RARP_REQUIRE_PRIVILEGED=1) without the
// Open vSwitch programs.
func RequireOVS(t testing.TB) {
	t.Helper()
	netnstest.Require(t, "ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl")
}

// StartOVS starts Open vSwitch in netns; it is stopped when the test ends.
func StartOVS(t testing.TB, netns string) *OVS {
	t.Helper()
	RequireOVS(t)
	dir := t.TempDir()
	o := &OVS{RunDir: dir, netns: netns}
	schema := "/usr/share/openvswitch/vswitch.ovsschema"
	run(t, nil, "ovsdb-tool", "create", filepath.Join(dir, "conf.db"), schema)
	env := append(os.Environ(), "OVS_RUNDIR="+dir, "OVS_LOGDIR="+dir, "OVS_DBDIR="+dir)
	t.Cleanup(func() { o.stop(t) })
	run(t, env, "ip", "netns", "exec", netns, "ovsdb-server", filepath.Join(dir, "conf.db"),
		"--remote=punix:"+filepath.Join(dir, "db.sock"), "--pidfile="+filepath.Join(dir, "ovsdb-server.pid"),
		"--unixctl="+filepath.Join(dir, "ovsdb-server.ctl"), "--log-file="+filepath.Join(dir, "ovsdb-server.log"), "--detach")
	o.Vsctl(t, "--no-wait", "init")
	run(t, env, "ip", "netns", "exec", netns, "ovs-vswitchd", "unix:"+filepath.Join(dir, "db.sock"),
		"--pidfile="+filepath.Join(dir, "ovs-vswitchd.pid"), "--unixctl="+filepath.Join(dir, "ovs-vswitchd.ctl"),
		"--log-file="+filepath.Join(dir, "ovs-vswitchd.log"), "--detach")
	return o
}

// Vsctl runs ovs-vsctl against this switch.
func (o *OVS) Vsctl(t testing.TB, args ...string) string {
	t.Helper()
	argv := append([]string{"ovs-vsctl", "--timeout=10", "--db=unix:" + filepath.Join(o.RunDir, "db.sock")}, args...)
	return run(t, nil, argv...)
}

// AddBridge adds a bridge with the userspace (netdev) datapath.
func (o *OVS) AddBridge(t testing.TB, name string) {
	t.Helper()
	o.Vsctl(t, "add-br", name, "--", "set", "bridge", name, "datapath_type=netdev")
}

func (o *OVS) stop(t testing.TB) {
	for _, p := range []string{"ovs-vswitchd.pid", "ovsdb-server.pid"} {
		data, err := os.ReadFile(filepath.Join(o.RunDir, p))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
		if err != nil || pid <= 1 {
			continue
		}
		_ = syscall.Kill(pid, syscall.SIGTERM)
		for i := 0; i < 100 && alive(pid); i++ {
			time.Sleep(20 * time.Millisecond)
		}
		if alive(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Logf("libvirtdtest: %s (pid %d) needed SIGKILL", p, pid)
		}
	}
}

func run(t testing.TB, env []string, argv ...string) string {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	return string(out)
}

// alive reports a process that exists and is not a zombie (detached daemons
// are reaped by init, whenever it gets to it).
func alive(pid int) bool {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// pid (comm) state ...: comm may contain spaces and parentheses.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}
