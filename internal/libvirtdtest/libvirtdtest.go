// Package libvirtdtest runs a real Debian libvirtd for tests: as root, in a
// private mount namespace where /etc/libvirt, /run/libvirt, /var/lib/libvirt
// and /var/log/libvirt are bind mounts of a per-test directory (the trick of
// shared/lab/lab-up.sh), optionally inside a network namespace. Its sockets
// are reachable from the test at Dir/run/libvirt-sock and libvirt-sock-ro.
//
// Two drivers are useful through it: test:///default (libvirt's in-memory
// test driver, served by the daemon; define/start/suspend/resume/destroy
// produce real lifecycle events) and qemu:///system (real QEMU domains).
//
// The test driver's "default" state lives as long as one client keeps a
// connection to it: run related virsh commands in one Virsh call, or keep a
// connection open.
package libvirtdtest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rarp-announce/rarp-announce/internal/netnstest"
)

// Options select where and how the daemon runs.
type Options struct {
	// NetNS is the network namespace (ip netns name) to run in; "" keeps the
	// test's own. Domains with network interfaces need one (their bridges
	// and taps live there).
	NetNS string
	// OVSRunDir, if set, is bind-mounted on /run/openvswitch inside the
	// daemon's mount namespace, so that the ovs-vsctl libvirt runs for
	// <virtualport type='openvswitch'> reaches that ovsdb-server.
	OVSRunDir string
	// HostUUID sets libvirtd's host_uuid; two daemons that migrate to each
	// other need distinct ones (libvirt refuses to migrate to "itself").
	HostUUID string
	// QEMUConf is appended to qemu.conf, e.g. migration_address and
	// migration_host for a migration between namespaces.
	QEMUConf string
}

// Daemon is one libvirtd; Kill and Start can cycle it any number of times.
type Daemon struct {
	Dir      string // state root: etc/ run/ lib/ log/
	Socket   string // read-write socket
	ROSocket string // read-only socket
	opts     Options

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// cacheDir holds libvirt's QEMU capabilities cache across tests and runs:
// probing qemu costs about 4 s per daemon, and libvirt revalidates the cache
// against the qemu binary itself.
var cacheDir = filepath.Join(os.TempDir(), "rarp-announce-libvirtd-cache")

// Require skips (or, with RARP_REQUIRE_PRIVILEGED=1, fails) t unless a
// libvirtd can be run.
func Require(t testing.TB) {
	t.Helper()
	netnstest.Require(t, "libvirtd", "virsh", "unshare", "mount")
}

// IPXEKernel is what test domains boot (Debian package ipxe): iPXE as a
// kernel idles with a tiny footprint, as in shared/lab/lab-up.sh.
const IPXEKernel = "/boot/ipxe.lkrn"

// RequireQEMU is Require plus what booting a test domain needs: QEMU and
// IPXEKernel.
func RequireQEMU(t testing.TB) {
	t.Helper()
	netnstest.Require(t, "libvirtd", "virsh", "unshare", "mount", "qemu-system-x86_64")
	if _, err := os.Stat(IPXEKernel); err != nil {
		msg := "needs " + IPXEKernel + " (Debian package ipxe)"
		if os.Getenv(netnstest.EnvRequire) == "1" {
			t.Fatal(msg + " (" + netnstest.EnvRequire + "=1 forbids skipping)")
		}
		t.Skip(msg)
	}
}

// StartQEMU is Start for QEMU domains (RequireQEMU) in a new network
// namespace (netnstest.New(t, name)) with bridge br0, where the NICs of
// QEMUDomainXML go.
func StartQEMU(t testing.TB, name string) (*netnstest.NS, *Daemon) {
	t.Helper()
	RequireQEMU(t)
	ns := netnstest.New(t, name)
	ns.Bridge(t, "br0")
	return ns, Start(t, Options{NetNS: ns.Name})
}

// Start starts a libvirtd and waits until it answers; it is stopped, and
// every QEMU it started killed, when the test ends.
func Start(t testing.TB, opts Options) *Daemon {
	t.Helper()
	Require(t)
	ensureQEMUUser(t)
	dir := t.TempDir()
	d := &Daemon{
		Dir:      dir,
		Socket:   filepath.Join(dir, "run", "libvirt-sock"),
		ROSocket: filepath.Join(dir, "run", "libvirt-sock-ro"),
		opts:     opts,
	}
	for _, sub := range []string{"etc", "run", "lib", "log"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "etc", "libvirtd.conf"), `# libvirtdtest
listen_tls = 0
listen_tcp = 0
auth_unix_ro = "none"
auth_unix_rw = "none"
unix_sock_rw_perms = "0770"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
`+hostUUID(opts.HostUUID))
	// QEMU as root without cgroups or a security driver: the test is
	// already root in a throw-away namespace.
	write(t, filepath.Join(dir, "etc", "qemu.conf"), `user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
stdio_handler = "file"
`+opts.QEMUConf+"\n")
	t.Cleanup(func() { d.cleanup(t) })
	d.Start(t)
	return d
}

// XMLFile writes xml to a file name in a directory of the test's, for
// virsh define, create or net-define, and returns its path.
func XMLFile(t testing.TB, name, xml string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	write(t, path, xml)
	return path
}

// QEMUDomainXML is a qemu:///system domain that boots IPXEKernel and
// idles, with a virtio NIC on bridge br0 for each MAC, in order (libvirt
// names them net0, net1, ...).
func QEMUDomainXML(name, uuid string, macs ...string) string {
	var nics strings.Builder
	for _, mac := range macs {
		fmt.Fprintf(&nics, "    <interface type='bridge'><source bridge='br0'/><mac address='%s'/><model type='virtio'/></interface>\n", mac)
	}
	return `<domain type='qemu'>
  <name>` + name + `</name>
  <uuid>` + uuid + `</uuid>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><kernel>` + IPXEKernel + `</kernel><cmdline>sleep 2000000000</cmdline></os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
` + nics.String() + `    <memballoon model='none'/>
  </devices>
</domain>
`
}

func hostUUID(u string) string {
	if u == "" {
		return ""
	}
	return "host_uuid = " + strconv.Quote(u) + "\n"
}

func write(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

var userOnce sync.Once

// ensureQEMUUser creates the libvirt-qemu account if it is missing: libvirtd
// resolves its compiled-in QEMU user before reading qemu.conf and refuses to
// start without it. Debian creates it in libvirt-daemon-system, which also
// installs services we do not want.
func ensureQEMUUser(t testing.TB) {
	userOnce.Do(func() {
		if exec.Command("getent", "passwd", "libvirt-qemu").Run() == nil {
			return
		}
		if exec.Command("getent", "group", "libvirt-qemu").Run() != nil {
			if out, err := exec.Command("groupadd", "-r", "libvirt-qemu").CombinedOutput(); err != nil {
				t.Logf("groupadd libvirt-qemu: %v %s", err, out)
			}
		}
		if out, err := exec.Command("useradd", "-r", "-g", "libvirt-qemu", "-d", "/var/lib/libvirt",
			"-s", "/usr/sbin/nologin", "libvirt-qemu").CombinedOutput(); err != nil {
			t.Logf("useradd libvirt-qemu: %v %s", err, out)
		}
	})
}

// Start (re)starts the daemon after Kill and waits until it answers.
func (d *Daemon) Start(t testing.TB) {
	t.Helper()
	d.mu.Lock()
	if d.cmd != nil {
		d.mu.Unlock()
		t.Fatal("libvirtdtest: daemon already running")
	}
	mounts := []string{
		// A private /run: nothing of the host's (dbus, systemd) leaks in,
		// and nothing is created in the host's /run.
		"mount -t tmpfs -o mode=0755 rarp-libvirtdtest /run",
		"mkdir -p /run/libvirt",
		bind(filepath.Join(d.Dir, "run"), "/run/libvirt"),
		bind(filepath.Join(d.Dir, "etc"), "/etc/libvirt"),
		bind(filepath.Join(d.Dir, "lib"), "/var/lib/libvirt"),
		bind(filepath.Join(d.Dir, "log"), "/var/log/libvirt"),
		bind(cacheDir, "/var/cache/libvirt"),
	}
	if d.opts.OVSRunDir != "" {
		mounts = append(mounts, "mkdir -p /run/openvswitch", bind(d.opts.OVSRunDir, "/run/openvswitch"))
	}
	script := strings.Join(mounts, "\n") + "\nexec libvirtd -f /etc/libvirt/libvirtd.conf -p /run/libvirt/libvirtd.pid\n"
	argv := []string{"unshare", "--mount", "--propagation", "private", "sh", "-ec", script}
	if d.opts.NetNS != "" {
		// ip netns exec execs (no fork) after entering the netns and
		// mounting a sysfs of it; unshare and sh exec too, so the process
		// we start is libvirtd itself.
		argv = append([]string{"ip", "netns", "exec", d.opts.NetNS}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	logf, err := os.OpenFile(filepath.Join(d.Dir, "log", "stderr.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		d.mu.Unlock()
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		d.mu.Unlock()
		t.Fatalf("libvirtdtest: start: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(exited) }()
	d.cmd, d.exited = cmd, exited
	d.mu.Unlock()

	t0 := time.Now()
	deadline := t0.Add(30 * time.Second)
	for {
		select {
		case <-exited:
			d.mu.Lock()
			d.cmd = nil
			d.mu.Unlock()
			t.Fatalf("libvirtdtest: libvirtd exited at start:\n%s", d.LogTail())
		default:
		}
		if out, err := exec.Command("virsh", "-q", "-c", d.URI("test"), "uri").CombinedOutput(); err == nil {
			t.Logf("libvirtdtest: libvirtd pid %d answers after %v", cmd.Process.Pid, time.Since(t0).Round(time.Millisecond))
			return
		} else if time.Now().After(deadline) {
			t.Fatalf("libvirtdtest: libvirtd did not answer within 30 s: %v %s\n%s", err, out, d.LogTail())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func bind(src, dst string) string {
	return fmt.Sprintf("mkdir -p %s && mount --bind %s %s", strconv.Quote(dst), strconv.Quote(src), strconv.Quote(dst))
}

// Pid is the running daemon's process id (0 if none).
func (d *Daemon) Pid() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd == nil {
		return 0
	}
	return d.cmd.Process.Pid
}

// Kill sends SIGKILL to the daemon (a crash, as far as clients can tell) and
// waits until it is gone. QEMU processes it started keep running.
func (d *Daemon) Kill(t testing.TB) {
	t.Helper()
	d.signal(t, syscall.SIGKILL, 10*time.Second)
}

// Stop sends SIGTERM (a clean shutdown) and waits.
func (d *Daemon) Stop(t testing.TB) {
	t.Helper()
	d.signal(t, syscall.SIGTERM, 20*time.Second)
}

func (d *Daemon) signal(t testing.TB, sig syscall.Signal, wait time.Duration) {
	t.Helper()
	d.mu.Lock()
	cmd, exited := d.cmd, d.exited
	d.cmd = nil
	d.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-exited:
	case <-time.After(wait):
		_ = cmd.Process.Kill()
		<-exited
		t.Errorf("libvirtdtest: libvirtd ignored %v for %v; killed", sig, wait)
	}
}

// URI is a libvirt URI reaching this daemon's read-write socket: driver
// "test" gives test+unix:///default, "qemu" qemu+unix:///system.
func (d *Daemon) URI(driver string) string {
	switch driver {
	case "test":
		return "test+unix:///default?socket=" + d.Socket
	case "qemu":
		return "qemu+unix:///system?socket=" + d.Socket
	}
	return driver + "+unix:///?socket=" + d.Socket
}

// Virsh runs virsh against uri with the commands joined by ";" (one
// connection for all of them) and fails t if it fails.
func (d *Daemon) Virsh(t testing.TB, uri string, commands ...string) string {
	t.Helper()
	out, err := d.TryVirsh(uri, commands...)
	if err != nil {
		t.Fatalf("virsh %s: %v\n%s\n%s", strings.Join(commands, "; "), err, out, d.LogTail())
	}
	return out
}

// TryVirsh is Virsh returning the error.
func (d *Daemon) TryVirsh(uri string, commands ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("virsh", "-q", "-c", uri, strings.Join(commands, "; "))
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String() + stderr.String(), err
	}
	return stdout.String(), nil
}

// LogTail returns the end of the daemon's logs, for failure messages.
func (d *Daemon) LogTail() string {
	var b strings.Builder
	for _, f := range []string{"stderr.log", "libvirtd.log"} {
		data, _ := os.ReadFile(filepath.Join(d.Dir, "log", f))
		if len(data) > 4000 {
			data = data[len(data)-4000:]
		}
		fmt.Fprintf(&b, "--- %s:\n%s\n", f, data)
	}
	return b.String()
}

// cleanup stops the daemon and kills any QEMU it left behind (their pid
// files are in its /run/libvirt/qemu).
func (d *Daemon) cleanup(t testing.TB) {
	t0 := time.Now()
	defer func() { t.Logf("libvirtdtest: cleanup took %v", time.Since(t0).Round(time.Millisecond)) }()
	if d.Pid() != 0 {
		// Destroy running QEMU domains through libvirt first: it tears
		// their taps and ports down too. In parallel: libvirt gives each
		// QEMU about 2 s after SIGTERM.
		if out, err := d.TryVirsh(d.URI("qemu"), "list --name"); err == nil {
			var wg sync.WaitGroup
			for _, name := range strings.Fields(out) {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if out, err := d.TryVirsh(d.URI("qemu"), "destroy "+name); err != nil {
						t.Logf("libvirtdtest: destroy %s: %v %s", name, err, out)
					}
				}()
			}
			wg.Wait()
		}
		d.Stop(t)
	}
	pids, _ := filepath.Glob(filepath.Join(d.Dir, "run", "qemu", "*.pid"))
	for _, p := range pids {
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if pid, err := strconv.Atoi(strings.TrimSpace(string(data))); err == nil && pid > 1 {
			if syscall.Kill(pid, syscall.SIGKILL) == nil {
				t.Logf("libvirtdtest: killed leftover QEMU pid %d (%s)", pid, filepath.Base(p))
			}
		}
	}
}
