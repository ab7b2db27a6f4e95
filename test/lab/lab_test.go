// Package lab_test runs the project's end-to-end tests, lab-e2e.sh and
// lab-e2e-qemu.sh: two real libvirtd + QEMU hypervisors, an upstream switch
// bridge and a client, all in namespaces on this machine (see README.md in
// this directory). With QEMU's own announce suppressed, the agent must move
// the VM's MAC on the switch after pre-copy and post-copy migrations and
// after libvirtd crashes, with the host strategy (lab-e2e.sh) and through
// QEMU (lab-e2e-qemu.sh).
package lab_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rarp-announce/rarp-announce/internal/netnstest"
)

// EnvAgent overrides the agent the test runs on both hypervisors: a command
// for `sh -c` inside each one, with $RARP_ANNOUNCE (the binary built here)
// and $LAB_HV (a or b) set. Unset: the real agent, DefaultAgent. The
// stand-in shell agent that proved the rig is RARP_LAB_AGENT=standin.
const EnvAgent = "RARP_LAB_AGENT"

// DefaultAgent is the agent under test: `rarp-announce run` with default
// paths inside each hypervisor, its debug log in the agent's log file.
const DefaultAgent = `exec "$RARP_ANNOUNCE" run --log-level debug`

// The test's lab has its own namespace names and state directory, so it
// never touches a lab someone started by hand (demo.sh, lab-up.sh).
var labEnv = []string{"LAB_NS_PREFIX=ralabt", "LAB_DIR=/tmp/rarp-announce-labtest"}

// Files the lab needs besides commands, with the Debian package that has them.
var labFiles = map[string]string{
	"/boot/ipxe.lkrn":                                             "ipxe",
	"/usr/lib/ipxe/qemu/efi-virtio.rom":                           "ipxe-qemu",
	"/usr/share/seabios/bios-256k.bin":                            "seabios",
	"/usr/lib/*/libvirt/connection-driver/libvirt_driver_qemu.so": "libvirt-daemon-driver-qemu",
}

func TestLabEndToEnd(t *testing.T) {
	agent := os.Getenv(EnvAgent)
	switch agent {
	case "":
		agent = DefaultAgent
	case "standin":
		agent = "" // lab-e2e.sh's default: lab-standin-agent.sh
	}
	runLab(t, "lab-e2e.sh", "LAB_AGENT="+agent)
}

// TestLabEndToEndQEMU runs lab-e2e-qemu.sh: the agent announces through
// QEMU (QMP announce-self via libvirt), so the destination's own bridge
// learns the VM's MAC from the tap without FDB repair; the announce command
// by hand; post-copy (announced when the migration job ends) and an RPC
// timeout the agent survives. The agent is always rarp-announce run with
// the script's config files.
func TestLabEndToEndQEMU(t *testing.T) {
	runLab(t, "lab-e2e-qemu.sh")
}

// TestLabRestore runs lab-e2e-restore.sh: virsh save on A, virsh restore
// on B, QEMU's own announce suppressed: the agent on B announces at
// STARTED/RESTORED, the switch follows and the client pings the VM.
func TestLabRestore(t *testing.T) {
	runLab(t, "lab-e2e-restore.sh")
}

// TestLabPrivileges runs lab-privileges.sh: the real binary under setpriv
// as a non-root user outside the libvirt group, with exactly the
// capability sets of the unit and its drop-ins: CAP_NET_RAW only moves the
// switch, CAP_NET_RAW+CAP_NET_ADMIN also makes the VM reachable, one
// capability removed exits 1 naming it, announce --domain works.
func TestLabPrivileges(t *testing.T) {
	netnstest.Require(t, "setpriv", "pgrep")
	runLab(t, "lab-privileges.sh")
}

// TestLabImage runs lab-image.sh: the image built by make image runs under
// podman as the DaemonSet runs it and announces a real migration.
func TestLabImage(t *testing.T) {
	netnstest.Require(t, "podman", "runc", "make")
	runLab(t, "lab-image.sh", "PATH="+filepath.Dir(goTool())+":"+os.Getenv("PATH"))
}

// runLab builds the binary, runs a lab script with the test's lab
// settings plus env, streams its output and fails on any FAIL line, a
// non-zero exit or a missing/bad "N passed, M failed" summary.
func runLab(t *testing.T, script string, env ...string) {
	netnstest.Require(t, "virsh", "libvirtd", "qemu-system-x86_64", "tcpdump", "nft",
		"ping", "nsenter", "unshare", "setsid", "python3")
	requireFiles(t)

	here, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	bin := build(t, filepath.Join(here, "..", ".."))
	env = append(append(append(os.Environ(), labEnv...), "RARP_ANNOUNCE="+bin, "LAB_KEEP=0"), env...)
	t.Cleanup(func() {
		down := exec.Command(filepath.Join(here, "lab-down.sh"))
		down.Env = env
		if out, err := down.CombinedOutput(); err != nil {
			t.Errorf("lab-down.sh: %v\n%s", err, out)
		}
	})

	timeout := 10 * time.Minute
	if d, ok := t.Deadline(); ok && time.Until(d)-30*time.Second < timeout {
		timeout = time.Until(d) - 30*time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(here, script))
	cmd.Env = env
	// its own process group: on timeout the script and everything it started
	// outside the lab's namespaces (tcpdump, virsh event) go too
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}

	var fails []string
	summary := ""
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		t.Log(line) // streamed with -v: the run can be watched as it goes
		switch {
		case strings.HasPrefix(line, "FAIL"):
			fails = append(fails, line)
		case summaryLine.MatchString(line):
			summary = line
		}
	}
	err = cmd.Wait()
	if ctx.Err() != nil {
		t.Fatalf("%s did not finish within %s", script, timeout)
	}
	if err != nil {
		t.Errorf("%s: %v", script, err)
	}
	for _, f := range fails {
		t.Error(f)
	}
	m := summaryLine.FindStringSubmatch(summary)
	switch {
	case m == nil:
		t.Errorf(`%s printed no "N passed, M failed" line`, script)
	case m[2] != "0":
		t.Errorf("%s: %s", script, summary)
	case m[1] == "0":
		t.Errorf("%s passed no check", script)
	}
}

// The binary is built once for all the tests of the package.
var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

func build(t *testing.T, root string) string {
	t.Helper()
	buildOnce.Do(func() {
		if buildDir, buildErr = os.MkdirTemp("", "rarp-announce-labtest-bin"); buildErr != nil {
			return
		}
		cmd := exec.Command(goTool(), "build", "-o", filepath.Join(buildDir, "rarp-announce"), "./cmd/rarp-announce")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(buildDir, "rarp-announce")
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

var summaryLine = regexp.MustCompile(`^(\d+) passed, (\d+) failed$`)

// requireFiles is netnstest.Require for the lab's data files: skip without
// them, fail when CI forbids skipping.
func requireFiles(t *testing.T) {
	t.Helper()
	var missing []string
	for pattern, pkg := range labFiles {
		if m, _ := filepath.Glob(pattern); len(m) == 0 {
			missing = append(missing, pattern+" (Debian package "+pkg+")")
		}
	}
	if len(missing) == 0 {
		return
	}
	netnstest.Unavailable(t, "lab needs "+strings.Join(missing, ", "))
}

// goTool is the go command that runs this test (PATH may lack it under sudo).
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// TestLabReconvergence runs lab-e2e-reconv.sh (issue 16): with the real
// agent on both hypervisors and a client pinging every 10 ms, each
// migration's reconvergence sample and landing record agree with the
// client's first reply from the new host within 100 ms; A->B->A->B with a
// move ledger limit of 2 warns on B's second landing; with the
// destination's agent stopped, the source counts stale deliveries and the
// alert rules fire on the scraped values.
func TestLabReconvergence(t *testing.T) {
	netnstest.Require(t, "promtool")
	runLab(t, "lab-e2e-reconv.sh")
}
