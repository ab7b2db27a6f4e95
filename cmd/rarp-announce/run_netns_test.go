package main

// 'rarp-announce run' end to end: the real binary inside a test network
// namespace, against a fake libvirtd (libvirtfake) on a unix socket, its
// HTTP endpoint reached from inside the namespace, its effect read from the
// switch's MAC table.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rarp-announce/rarp-announce/internal/libvirtfake"
	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/internal/testbin"
	"github.com/rarp-announce/rarp-announce/pkg/libvirtwatch"
)

// testConfig is a config for the tests: the fake's URI, fast reconnects and
// a short schedule (3 frames at 0, 10, 30 ms). rounds is the schedule's
// frame count.
func testConfig(rounds int) string {
	return fmt.Sprintf(`libvirt:
  uri: test:///default
  backoff_min: 20ms
  backoff_max: 200ms
schedule:
  initial: 10ms
  step: 10ms
  rounds: %d
  max: 50ms
readiness:
  timeout: 5s
  watch_window: 0s
log:
  level: info
`, rounds)
}

// responderConfig writes dir/c.yaml: base, then the responder on br0 with
// the table dir/ethers (not written); it returns both paths.
func responderConfig(t testing.TB, dir, base string) (cfg, ethers string) {
	t.Helper()
	cfg, ethers = filepath.Join(dir, "c.yaml"), filepath.Join(dir, "ethers")
	writeConfig(t, cfg, base+"responder:\n  enabled: true\n  interfaces: [br0]\n  ethers: "+ethers+"\n")
	return cfg, ethers
}

func writeConfig(t testing.TB, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

// configFile writes body to a new rarp-announce.yaml and returns its path.
func configFile(t testing.TB, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "rarp-announce.yaml")
	writeConfig(t, path, body)
	return path
}

// rigWithTap is a rig whose host has the taps (vnet0 if none named) on
// its bridge, up and held open as QEMU holds them.
func rigWithTap(t *testing.T, taps ...string) *netnstest.Rig {
	t.Helper()
	netnstest.Require(t)
	rig := netnstest.NewRig(t)
	if len(taps) == 0 {
		taps = []string{"vnet0"}
	}
	for _, tap := range taps {
		rig.Host.Exec(t, "ip", "tuntap", "add", "dev", tap, "mode", "tap")
		rig.Host.Attach(t, tap, netnstest.RigHostBridge)
		rig.Host.Exec(t, "ip", "link", "set", "dev", tap, "up")
		netnstest.OpenTap(t, rig.Host, tap)
	}
	return rig
}

// landMigrated has the fake libvirtd report name's landing as an
// incoming migration does: STARTED/MIGRATED, then RESUMED/MIGRATED.
func landMigrated(t *testing.T, fake *libvirtfake.Server, name string) {
	t.Helper()
	for _, e := range [][2]int32{{libvirtwatch.EventStarted, libvirtwatch.DetailStartedMigrated}, {libvirtwatch.EventResumed, libvirtwatch.DetailResumedMigrated}} {
		if _, err := fake.Emit(name, e[0], e[1]); err != nil {
			t.Fatal(err)
		}
	}
}

// daemonProc is a running 'rarp-announce run'.
type daemonProc struct {
	*testbin.Proc
	t    testing.TB
	ns   *netnstest.NS
	http *http.Client
	addr string // the metrics endpoint, from the start log line
}

// startDaemon runs the binary with args inside ns and waits for its start
// log line, which names the bound metrics address.
func startDaemon(t testing.TB, ns *netnstest.NS, args ...string) *daemonProc {
	t.Helper()
	return startBinary(t, ns, binary, args...)
}

// startBinary is startDaemon with another build of the binary.
func startBinary(t testing.TB, ns *netnstest.NS, bin string, args ...string) *daemonProc {
	t.Helper()
	return startBinaryEnv(t, ns, bin, nil, args...)
}

// startBinaryEnv is startBinary with variables added to the environment.
func startBinaryEnv(t testing.TB, ns *netnstest.NS, bin string, env []string, args ...string) *daemonProc {
	t.Helper()
	cmd := ns.Command(append([]string{bin, "run"}, args...)...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	d := &daemonProc{Proc: testbin.Start(t, cmd), t: t, ns: ns, http: httpIn(ns)}
	for i, a := range args {
		if a == "--metrics-address" && i+1 < len(args) && !strings.HasSuffix(args[i+1], ":0") {
			d.addr = args[i+1] // known: the start line may not be logged (log level warn)
			return d
		}
	}
	start := d.waitLog("rarp-announce agent starting", 30*time.Second)
	d.addr, _ = start["metrics"].(string)
	if d.addr == "" {
		t.Fatalf("start log has no metrics address: %v", start)
	}
	return d
}

// entry decodes a JSON log line; ok is false for any other line.
func entry(line string) (map[string]any, bool) {
	var e map[string]any
	err := json.Unmarshal([]byte(line), &e)
	return e, err == nil
}

// logs returns the JSON log entries with message msg.
func (d *daemonProc) logs(msg string) []map[string]any {
	var out []map[string]any
	for _, l := range d.Lines(0) {
		if e, ok := entry(l); ok && e["msg"] == msg {
			out = append(out, e)
		}
	}
	return out
}

// waitLog waits for a log entry with message msg and returns the first.
func (d *daemonProc) waitLog(msg string, timeout time.Duration) map[string]any {
	d.t.Helper()
	var found map[string]any
	d.WaitLine(0, timeout, fmt.Sprintf("msg %q", msg), func(l string) bool {
		e, ok := entry(l)
		if ok && e["msg"] == msg {
			found = e
		}
		return found != nil
	})
	return found
}

// get fetches path from the metrics endpoint.
func (d *daemonProc) get(path string) (int, string) {
	d.t.Helper()
	code, body, err := d.try(path)
	if err != nil {
		d.t.Fatalf("GET %s: %v", path, err)
	}
	return code, body
}

func (d *daemonProc) try(path string) (int, string, error) {
	resp, err := d.http.Get("http://" + d.addr + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

// waitStatus polls path until it answers code.
func (d *daemonProc) waitStatus(path string, code int, timeout time.Duration) {
	d.t.Helper()
	netnstest.EventuallyEvery(d.t, timeout, scrapeTick, func() error {
		got, body, err := d.try(path)
		if err == nil && got != code {
			err = fmt.Errorf("%s answers %d %q, want %d", path, got, body, code)
		}
		return err
	})
}

// scrapeTick is how often the waits poll the daemon's HTTP endpoint.
const scrapeTick = 20 * time.Millisecond

// metric returns the value of the sample whose line starts with series
// (name and labels exactly as exposed), -1 if absent.
func (d *daemonProc) metric(series string) float64 {
	d.t.Helper()
	_, body := d.get("/metrics")
	for _, l := range strings.Split(body, "\n") {
		if rest, ok := strings.CutPrefix(l, series+" "); ok {
			v, err := strconv.ParseFloat(rest, 64)
			if err != nil {
				d.t.Fatalf("%s: %v", l, err)
			}
			return v
		}
	}
	return -1
}

// waitMetric waits for series to read want.
func (d *daemonProc) waitMetric(series string, want float64, timeout time.Duration) {
	d.t.Helper()
	d.waitMetricTo(series, fmt.Sprint(want), timeout, func(v float64) bool { return v == want })
}

// waitMetricAtLeast waits for a counter that keeps growing to reach want.
func (d *daemonProc) waitMetricAtLeast(series string, want float64, timeout time.Duration) {
	d.t.Helper()
	d.waitMetricTo(series, fmt.Sprint("at least ", want), timeout, func(v float64) bool { return v >= want })
}

func (d *daemonProc) waitMetricTo(series, want string, timeout time.Duration, ok func(float64) bool) {
	d.t.Helper()
	netnstest.EventuallyEvery(d.t, timeout, scrapeTick, func() error {
		if got := d.metric(series); !ok(got) {
			return fmt.Errorf("%s = %v, want %s", series, got, want)
		}
		return nil
	})
}

// stop sends SIGTERM and returns the exit code and how long it took.
func (d *daemonProc) stop() (int, time.Duration) {
	d.t.Helper()
	return d.Stop(30 * time.Second)
}

// httpIn returns a client whose connections are made inside ns (the
// daemon's 127.0.0.1 is the namespace's loopback).
func httpIn(ns *netnstest.NS) *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := ns.Do(func() error {
				var err error
				c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			})
			return c, err
		},
	}}
}

// /metrics and /healthz answer while libvirtd is unreachable; /readyz says
// 503 until the agent is subscribed to libvirt events, 200 then, and 503
// again when libvirtd goes away. SIGTERM then stops it cleanly.
func TestRunEndpointsFollowLibvirt(t *testing.T) {
	netnstest.Require(t)
	ns := netnstest.New(t, "run")
	socket := libvirtfake.SocketPath(t) // nothing listens yet: libvirtd is down
	cfg := configFile(t, testConfig(3))
	d := startDaemon(t, ns, "--config", cfg, "--libvirt-socket", socket, "--metrics-address", "127.0.0.1:0")

	if code, body := d.get("/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz while libvirtd is down: %d %q, want 200 ok", code, body)
	}
	if code, body := d.get("/readyz"); code != 503 || !strings.Contains(body, "not subscribed") {
		t.Errorf("/readyz while libvirtd is down: %d %q, want 503", code, body)
	}
	if code, body := d.get("/metrics"); code != 200 || !strings.Contains(body, "rarp_announce_nic_announces_total") ||
		!strings.Contains(body, "rarp_announce_libvirt_connected 0") {
		t.Errorf("/metrics while libvirtd is down: %d, want 200 with the agent's metrics and libvirt_connected 0", code)
	}
	d.waitMetricAtLeast("rarp_announce_libvirt_connect_failures_total", 2, 5*time.Second) // it keeps trying

	fake := libvirtfake.StartAt(t, socket)
	d.waitStatus("/readyz", 200, 10*time.Second)
	if got := d.metric("rarp_announce_libvirt_connected"); got != 1 {
		t.Errorf("libvirt_connected = %v once ready, want 1", got)
	}

	fake.Close()
	d.waitStatus("/readyz", 503, 10*time.Second)
	if code, _ := d.get("/healthz"); code != 200 {
		t.Errorf("/healthz after libvirtd went away: %d", code)
	}

	code, took := d.stop()
	if code != 0 {
		t.Errorf("exit %d after SIGTERM, want 0", code)
	}
	if took > 5*time.Second {
		t.Errorf("SIGTERM took %v to stop the daemon", took)
	}
	d.waitLog("stopped", time.Second)
}

// A landing moves the switch; SIGHUP with a broken config keeps the
// running one and logs file:line; SIGHUP with a changed schedule applies it
// to the next landing; SIGTERM exits 0.
func TestRunAnnouncesLandingsAndReloads(t *testing.T) {
	rig := rigWithTap(t)
	fake := libvirtfake.Start(t)
	const mac1, mac2 = "52:54:00:72:00:01", "52:54:00:72:00:02"
	for i, mac := range []string{mac1, mac2} {
		name, uuid := fmt.Sprintf("vm%d", i+1), fmt.Sprintf("72756e00-0000-4000-8000-%012x", i+1)
		if err := fake.AddDomain(libvirtfake.Domain{Name: name, UUID: uuid, State: 5,
			XML: libvirtfake.LiveXML(name, uuid, 1, libvirtfake.NIC{MAC: mac, Target: "vnet0"})}); err != nil {
			t.Fatal(err)
		}
		rig.LearnOnOld(t, mac)
	}
	cfg := configFile(t, testConfig(3))
	d := startDaemon(t, rig.Host, "--config", cfg, "--libvirt-socket", fake.Path(), "--metrics-address", "127.0.0.1:0")
	d.waitStatus("/readyz", 200, 10*time.Second)

	landMigrated(t, fake, "vm1")
	if got := rig.Switch.WaitFDB(t, netnstest.RigSwitchBridge, mac1, netnstest.RigSwitchToHost, 5*time.Second); got != netnstest.RigSwitchToHost {
		t.Fatalf("switch has %s on %q after the landing, want %s", mac1, got, netnstest.RigSwitchToHost)
	}
	if got := rig.Host.FDB(t, netnstest.RigHostBridge)[mac1]; got == netnstest.RigHostUplink {
		t.Errorf("br0 still has %s on the uplink: not repaired", mac1)
	}
	d.waitMetric("rarp_announce_frames_sent_total", 3, 5*time.Second)
	d.waitMetric(`rarp_announce_nic_announces_total{result="started",strategy="host"}`, 1, time.Second)

	// A broken config: refused, with file and line, and the daemon runs on.
	writeConfig(t, cfg, "schedule:\n  rounds: 0\n")
	d.Signal(syscall.SIGHUP)
	refused := d.waitLog("reload refused; keeping the running configuration", 5*time.Second)
	if msg := fmt.Sprint(refused["error"]); !strings.Contains(msg, cfg+":2") || !strings.Contains(msg, "rounds") {
		t.Errorf("reload refusal %q does not name %s:2 and the key", msg, cfg)
	}
	if !d.Running() {
		t.Fatal("daemon exited after a broken reload")
	}
	d.waitStatus("/readyz", 200, time.Second)

	// A changed schedule: the next landing sends 6 frames.
	writeConfig(t, cfg, testConfig(6))
	d.Signal(syscall.SIGHUP)
	d.waitLog("configuration reloaded", 5*time.Second)
	landMigrated(t, fake, "vm2")
	if got := rig.Switch.WaitFDB(t, netnstest.RigSwitchBridge, mac2, netnstest.RigSwitchToHost, 5*time.Second); got != netnstest.RigSwitchToHost {
		t.Fatalf("switch has %s on %q after the landing, want %s", mac2, got, netnstest.RigSwitchToHost)
	}
	d.waitMetric("rarp_announce_frames_sent_total", 3+6, 5*time.Second)
	time.Sleep(300 * time.Millisecond)
	if got := d.metric("rarp_announce_frames_sent_total"); got != 9 {
		t.Errorf("frames sent = %v after the reloaded schedule, want 3 + 6", got)
	}

	// A setting only a restart changes: each reload while it differs from
	// the running one warns, one that puts it back does not.
	restartWarnings := func() int {
		n := 0
		for _, e := range d.logs("changed setting needs a restart to take effect") {
			if e["key"] == "pacing" {
				n++
			}
		}
		return n
	}
	reload := func(body string) {
		t.Helper()
		writeConfig(t, cfg, body)
		n := len(d.logs("configuration reloaded"))
		d.Signal(syscall.SIGHUP)
		netnstest.WaitWithin(t, 5*time.Second, "the reload", func() bool { return len(d.logs("configuration reloaded")) > n })
	}
	paced := testConfig(6) + "pacing:\n  frames_per_second: 3000\n"
	reload(paced)
	reload(paced)
	if n := restartWarnings(); n != 2 {
		t.Errorf("%d restart warnings for pacing after two reloads with it changed, want 2 (it is still not in effect)", n)
	}
	reload(testConfig(6))
	if n := restartWarnings(); n != 2 {
		t.Errorf("%d restart warnings for pacing after it was put back, want still 2", n)
	}

	code, took := d.stop()
	if code != 0 || took > 5*time.Second {
		t.Errorf("SIGTERM: exit %d after %v, want 0 promptly", code, took)
	}
}

// The agent runs its Go code on one P while its frames leave out of the
// uplinks, and takes one more from the first frame it writes to a bridge
// device (internal/procs): the environment's GOMAXPROCS is emptied, as on
// a host that does not set it.
func TestRunTakesGoPsByItsSends(t *testing.T) {
	for _, c := range []struct {
		name, config  string
		before, after float64
	}{
		{"out of the uplinks", "", 1, 1},
		{"on the bridge device", "host:\n  send_on: bridge\n", 1, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			rig := rigWithTap(t)
			fake := libvirtfake.Start(t)
			const mac = "52:54:00:72:01:01"
			const uuid = "72756e00-0000-4000-8000-000000000101"
			if err := fake.AddDomain(libvirtfake.Domain{Name: "vm1", UUID: uuid, State: 5,
				XML: libvirtfake.LiveXML("vm1", uuid, 1, libvirtfake.NIC{MAC: mac, Target: "vnet0"})}); err != nil {
				t.Fatal(err)
			}
			rig.LearnOnOld(t, mac)
			cfg := configFile(t, testConfig(3)+c.config)
			d := startBinaryEnv(t, rig.Host, binary, []string{"GOMAXPROCS="},
				"--config", cfg, "--libvirt-socket", fake.Path(), "--metrics-address", "127.0.0.1:0")
			d.waitStatus("/readyz", 200, 10*time.Second)
			if got := d.metric("go_sched_gomaxprocs_threads"); got != c.before {
				t.Errorf("%v Ps at start, want %v", got, c.before)
			}
			landMigrated(t, fake, "vm1")
			if got := rig.Switch.WaitFDB(t, netnstest.RigSwitchBridge, mac, netnstest.RigSwitchToHost, 5*time.Second); got != netnstest.RigSwitchToHost {
				t.Fatalf("switch has %s on %q after the landing, want %s", mac, got, netnstest.RigSwitchToHost)
			}
			if got := d.metric("go_sched_gomaxprocs_threads"); got != c.after {
				t.Errorf("%v Ps after the landing, want %v", got, c.after)
			}
			if code, _ := d.stop(); code != 0 {
				t.Errorf("exit %d after SIGTERM", code)
			}
		})
	}
}

// A bad config refuses to start: exit 2, each problem with file:line.
func TestRunRefusesABadConfig(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "bad.yaml")
	writeConfig(t, cfg, "libvirt:\n  uri: test:///default\nschedule:\n  rounds: 0\npacing:\n  burst: many\n")
	r := run(t, exec.Command(binary, "run", "--config", cfg, "--metrics-address", "127.0.0.1:0"))
	if r.Code != 2 || !strings.Contains(r.Stderr, cfg+":6") {
		t.Errorf("exit %d, stderr %q; want exit 2 naming %s:6", r.Code, r.Stderr, cfg)
	}
	writeConfig(t, cfg, "schedule:\n  rounds: 0\n")
	r = run(t, exec.Command(binary, "run", "--config", cfg, "--metrics-address", "127.0.0.1:0"))
	if r.Code != 2 || !strings.Contains(r.Stderr, cfg+":2") || !strings.Contains(r.Stderr, "rounds") {
		t.Errorf("exit %d, stderr %q; want exit 2 naming %s:2 and rounds", r.Code, r.Stderr, cfg)
	}
	r = run(t, exec.Command(binary, "run", "--config", filepath.Join(t.TempDir(), "missing.yaml")))
	if r.Code != 2 || !strings.Contains(r.Stderr, "missing.yaml") {
		t.Errorf("missing config: exit %d, stderr %q; want exit 2 naming the file", r.Code, r.Stderr)
	}
}

// run --check loads the responder's tables as the start does: a bad line
// is exit 2 with file:line, a table that only cannot load now (a file not
// there yet) exit 1, a good one OK.
func TestRunCheckLoadsResponderTables(t *testing.T) {
	cfg, ethers := responderConfig(t, t.TempDir(), "")
	writeConfig(t, ethers, "52:54:00:00:00:01 10.0.0.1\n52:54:00:00:00:02 10.0.0.300\n")
	r := run(t, exec.Command(binary, "run", "--config", cfg, "--check"))
	if r.Code != 2 || !strings.Contains(r.Stderr, ethers+":2: ") {
		t.Errorf("bad table: exit %d, stderr %q; want exit 2 naming %s:2", r.Code, r.Stderr, ethers)
	}
	writeConfig(t, ethers, "52:54:00:00:00:01 10.0.0.1\n")
	r = run(t, exec.Command(binary, "run", "--config", cfg, "--check"))
	if r.Code != 0 || !strings.Contains(r.Stdout, "configuration OK") {
		t.Errorf("good table: exit %d, stdout %q, stderr %q", r.Code, r.Stdout, r.Stderr)
	}
	os.Remove(ethers)
	r = run(t, exec.Command(binary, "run", "--config", cfg, "--check"))
	if r.Code != 1 || !strings.Contains(r.Stderr, ethers+": cannot open") {
		t.Errorf("missing table: exit %d, stderr %q; want exit 1 naming the file", r.Code, r.Stderr)
	}
}

// A bad ip_announce.static_map is a configuration error: run --check says
// so and run refuses to start, both with exit 2 (found in review: --check
// said OK and run failed with exit 1, which the unit's
// RestartPreventExitStatus=2 does not stop from restarting). An empty
// metrics.address is refused too: Go would listen on every address.
func TestRunRefusesABadStaticMap(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "c.yaml")
	static := filepath.Join(dir, "static.yaml")
	writeConfig(t, cfg, "ip_announce:\n  enabled: true\n  sources:\n    static: true\n  static_map: "+static+"\n")
	writeConfig(t, static, "not: [a map\n")
	for _, args := range [][]string{{"--check"}, {"--metrics-address", "127.0.0.1:0"}} {
		r := run(t, exec.Command(binary, append([]string{"run", "--config", cfg}, args...)...))
		if r.Code != 2 || !strings.Contains(r.Stderr, "ip_announce.static_map: "+static) {
			t.Errorf("run %v: exit %d, stderr %q; want exit 2 naming ip_announce.static_map and the file", args, r.Code, r.Stderr)
		}
	}
	writeConfig(t, cfg, "metrics:\n  address: \"\"\n")
	r := run(t, exec.Command(binary, "run", "--config", cfg, "--check"))
	if r.Code != 2 || !strings.Contains(r.Stderr, cfg+":2: metrics.address: empty") {
		t.Errorf("empty metrics address: exit %d, stderr %q; want exit 2 naming %s:2", r.Code, r.Stderr, cfg)
	}
}

// The agent starts although the responder's table cannot load yet (a
// file not there, as with DNS down at boot): the announcer must not stay
// down for it. The table loads once the file appears.
func TestRunStartsWhileTheResponderTableCannotLoad(t *testing.T) {
	netnstest.Require(t)
	ns := netnstest.New(t, "rtab")
	ns.Bridge(t, "br0")
	cfg, ethers := responderConfig(t, t.TempDir(), testConfig(3))
	d := startBinaryEnv(t, ns, binary, []string{"GOMAXPROCS="}, "--config", cfg, "--libvirt-socket", libvirtfake.SocketPath(t), "--metrics-address", "127.0.0.1:0")
	d.waitLog("responder table not loaded at start; retrying in the background, unknown MACs are not answered meanwhile", 5*time.Second)
	// Its receive loop keeps a P under load: the agent takes two
	// (internal/procs).
	if got := d.metric("go_sched_gomaxprocs_threads"); got != 2 {
		t.Errorf("%v Go Ps with the responder on, want 2", got)
	}
	if got := d.metric("rarp_announce_config_last_reload_successful"); got != 1 {
		t.Errorf("config_last_reload_successful = %v at start, want 1", got)
	}
	writeConfig(t, ethers, "52:54:00:00:00:01 10.0.0.1\n")
	d.waitMetric("rarp_announce_table_entries", 1, 10*time.Second)
	// A broken config on SIGHUP: refused, and the metric says so.
	writeConfig(t, cfg, "schedule:\n  rounds: 5.5\n")
	d.Signal(syscall.SIGHUP)
	d.waitMetric("rarp_announce_config_last_reload_successful", 0, 5*time.Second)
	if code, _ := d.stop(); code != 0 {
		t.Errorf("exit %d after SIGTERM", code)
	}
}

// A metrics port already in use fails the start: exit 1, naming the
// address.
func TestRunMetricsPortInUseExits1(t *testing.T) {
	netnstest.Require(t)
	ns := netnstest.New(t, "port")
	var ln net.Listener
	if err := ns.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := configFile(t, testConfig(3))
	cmd := ns.Command(binary, "run", "--config", cfg, "--libvirt-socket", libvirtfake.SocketPath(t), "--metrics-address", ln.Addr().String())
	done := make(chan result, 1)
	go func() { done <- run(t, cmd) }()
	select {
	case r := <-done:
		if r.Code != 1 || !strings.Contains(r.Stderr, ln.Addr().String()) || !strings.Contains(r.Stderr, "address already in use") {
			t.Errorf("exit %d, stderr %q; want exit 1 naming %s in use", r.Code, r.Stderr, ln.Addr())
		}
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("the daemon started although its metrics port is taken")
	}
}

// A SIGHUP reload of the responder's table whose host names wait on DNS
// does not hold up SIGTERM (found in review: the reload ran under
// context.Background() on the daemon's loop, so the daemon stopped only
// when the lookup gave up).
func TestSIGTERMDuringAReloadWaitingOnDNS(t *testing.T) {
	netnstest.Require(t, "unshare")
	ns := netnstest.New(t, "rdns")
	ns.Bridge(t, "br0")
	dir := t.TempDir()
	// the binary, in a mount namespace where DNS never answers
	wrapper := filepath.Join(dir, "rarp-announce")
	writeConfig(t, wrapper, "#!/bin/sh\nexec unshare -m --propagation private sh -c '"+ns.HangingDNS(t)+`exec "$0" "$@"' `+binary+` "$@"`+"\n")
	if err := os.Chmod(wrapper, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg, ethers := responderConfig(t, dir, testConfig(3))
	writeConfig(t, ethers, "52:54:00:00:00:01 10.0.0.1\n")
	d := startBinaryEnv(t, ns, wrapper, nil, "--config", cfg, "--libvirt-socket", libvirtfake.SocketPath(t), "--metrics-address", "127.0.0.1:0")
	d.waitMetric("rarp_announce_table_entries", 1, 10*time.Second)
	writeConfig(t, ethers, "52:54:00:00:00:01 10.0.0.1\n52:54:00:00:00:02 pxe-client.rarp-test.example\n")
	m := d.Mark()
	d.Signal(syscall.SIGHUP)
	time.Sleep(time.Second) // the reload waits on the lookup
	if code, took := d.stop(); code != 0 || took > 3*time.Second {
		t.Fatalf("SIGTERM during the reload: exit %d after %v, want 0 at once", code, took)
	}
	for _, l := range d.Lines(m) {
		if strings.Contains(l, "table not loaded") || strings.Contains(l, "configuration reloaded") {
			t.Errorf("an unfinished reload reported as done or as a bad table: %s", l)
		}
	}
}
