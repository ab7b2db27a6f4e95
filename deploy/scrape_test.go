package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/rarp-announce/rarp-announce/internal/libvirtfake"
	"github.com/rarp-announce/rarp-announce/internal/netnstest"
)

// The metrics tests scrape the real binary: "rarp-announce run" with every
// metric-bearing part switched on (libvirt through the fake libvirtd, a
// bridge NIC on the host strategy, a vhostuser NIC on the qemu strategy,
// the ovs strategy, FDB repair, the embedded responder) and
// "rarp-announce serve", each in a network namespace, after real work:
// a migration landed, frames sent, RARP requests answered. Every family
// either command can expose then shows in its scrape.

// scrapes is what the two commands exposed, text and parsed, and what a
// real Prometheus that scraped them made of the dashboard and the rules.
type scrapes struct {
	run, serve         []byte
	runFams, serveFams map[string]*dto.MetricFamily
	minimalFams        map[string]*dto.MetricFamily // run with the optional parts off
	prom               *promResults                 // nil without prometheus
}

// promResults is what Prometheus answered.
type promResults struct {
	series map[string]int    // dashboard expression (expanded) -> series returned
	errors map[string]string // dashboard expression -> query error
	rules  map[string]string // alert -> rule health ("ok") and last error
	firing []string          // alerts firing
}

var (
	scrapeOnce sync.Once
	scraped    *scrapes
)

// exposed runs the binary and scrapes it once for all tests of the
// package; it needs root (namespaces, raw sockets).
func exposed(t *testing.T) *scrapes {
	t.Helper()
	netnstest.Require(t, "go")
	scrapeOnce.Do(func() { scraped = scrapeBinary(t) })
	if scraped == nil {
		t.Fatal("scraping the binary failed in an earlier test")
	}
	return scraped
}

var (
	metricsBinOnce sync.Once
	metricsBin     string
	metricsBinErr  error
	metricsBinLog  []byte
)

// agentBinary builds rarp-announce once (not with make: the package tests own
// that) into buildDir.
func agentBinary(t *testing.T) string {
	t.Helper()
	useBuildDir(t)
	metricsBinOnce.Do(func() {
		metricsBin = filepath.Join(buildDir, "rarp-announce-metrics")
		cmd := exec.Command("go", "build", "-o", metricsBin, "../cmd/rarp-announce")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "PATH="+os.Getenv("PATH")+":/usr/local/go/bin")
		metricsBinLog, metricsBinErr = cmd.CombinedOutput()
	})
	if metricsBinErr != nil {
		t.Fatalf("go build: %v\n%s", metricsBinErr, metricsBinLog)
	}
	return metricsBin
}

// nsClient is an HTTP client whose connections are dialed inside ns,
// where the agent's 127.0.0.1 is.
func nsClient(ns *netnstest.NS) *http.Client {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := ns.Do(func() error {
			var err error
			c, err = (&net.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}}
}

func get(c *http.Client, url string) (int, []byte, error) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// process is a started command whose output is kept for failure messages.
type process struct {
	cmd *exec.Cmd
	out *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// start starts cmd and stops it (SIGTERM) when t ends; a command that
// does not stop cleanly in 10 s fails t.
func start(t *testing.T, cmd *exec.Cmd) *process {
	t.Helper()
	p := &process{cmd: cmd, out: &syncBuffer{}}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("%v: %v", cmd.Args, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%v stopped with %v\n%s", cmd.Args, err, p.out)
			}
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			t.Errorf("%v did not stop on SIGTERM within 10 s\n%s", cmd.Args, p.out)
		}
	})
	return p
}

// scrapeUntil scrapes url until ok accepts the parsed families, and
// returns the last scrape.
func scrapeUntil(t *testing.T, c *http.Client, url string, p *process, what string, ok func(map[string]*dto.MetricFamily) bool) ([]byte, map[string]*dto.MetricFamily) {
	t.Helper()
	var (
		body    []byte
		fams    map[string]*dto.MetricFamily
		lastErr error
	)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		code, b, err := get(c, url)
		switch {
		case err != nil:
			lastErr = err
		case code != http.StatusOK:
			lastErr = fmt.Errorf("HTTP %d: %s", code, b)
		default:
			body = b
			fams, lastErr = parseExposition(b)
			if lastErr == nil && ok(fams) {
				return body, fams
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: waited 20 s for %s (last error: %v)\nlast scrape:\n%s\nlog:\n%s", url, what, lastErr, body, p.out)
	return nil, nil
}

func parseExposition(b []byte) (map[string]*dto.MetricFamily, error) {
	p := expfmt.NewTextParser(model.LegacyValidation)
	return p.TextToMetricFamilies(bytes.NewReader(b))
}

// value returns the value of the sample of family name whose labels
// include want, and whether there is one.
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		switch f.GetType() {
		case dto.MetricType_COUNTER:
			return m.GetCounter().GetValue(), true
		case dto.MetricType_GAUGE:
			return m.GetGauge().GetValue(), true
		case dto.MetricType_HISTOGRAM:
			return float64(m.GetHistogram().GetSampleCount()), true
		default:
			return m.GetUntyped().GetValue(), true
		}
	}
	return 0, false
}

func atLeast(fams map[string]*dto.MetricFamily, name string, labels map[string]string, min float64) bool {
	v, ok := value(fams, name, labels)
	return ok && v >= min
}

const (
	vmUUID     = "6c61622d-766d-4000-8000-0000000000a1"
	bridgeMAC  = "52:54:00:00:0a:01"
	vhostMAC   = "52:54:00:00:0a:02"
	clientMAC  = "52:54:00:12:34:56"
	client2MAC = "52:54:00:12:34:57"
	runMetrics = "http://127.0.0.1:9798/metrics"
	srvMetrics = "http://127.0.0.1:9799/metrics"
)

func scrapeBinary(t *testing.T) *scrapes {
	bin := agentBinary(t)
	dir := t.TempDir()

	// host: the hypervisor; br0 with the VM's port vnet0 (the VM is the
	// other end, in vm); rsp0 and rsp1 face the RARP clients.
	host := netnstest.New(t, "mon")
	vm := netnstest.New(t, "monvm")
	client := netnstest.New(t, "moncl")
	host.Bridge(t, "br0")
	netnstest.Veth(t, host, "vnet0", vm, "eth0")
	host.Attach(t, "vnet0", "br0")
	netnstest.Veth(t, host, "rsp0", client, "cl0")
	netnstest.Veth(t, host, "rsp1", client, "cl1")
	host.Exec(t, "ip", "addr", "add", "192.0.2.1/24", "dev", "rsp0")
	host.Exec(t, "ip", "addr", "add", "198.51.100.1/24", "dev", "rsp1")
	client.Exec(t, "ip", "link", "set", "dev", "cl0", "address", clientMAC)
	client.Exec(t, "ip", "link", "set", "dev", "cl1", "address", client2MAC)

	ethers := filepath.Join(dir, "ethers")
	if err := os.WriteFile(ethers, []byte(clientMAC+" 192.0.2.10\n"+client2MAC+" 198.51.100.10\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "libvirt-sock") // nobody listens yet
	cfg := filepath.Join(dir, "rarp-announce.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`# every part that has metrics
libvirt:
  socket: %s
  backoff_min: 50ms
  backoff_max: 200ms
  rpc_timeout: 2s
schedule:
  initial: 10ms
  step: 10ms
  rounds: 3
  max: 50ms
readiness:
  timeout: 5s
fdb_repair: true
strategies:
  bridge: host
  openvswitch: ovs
  vhostuser: qemu
responder:
  enabled: true
  interfaces: [rsp0]
  ethers: %s
ip_announce:
  enabled: true
  gateways: [192.0.2.1]
metrics:
  address: 127.0.0.1:9798
log:
  level: info
  format: console
`, sock, ethers)), 0o644); err != nil {
		t.Fatal(err)
	}

	c := nsClient(host)
	run := start(t, host.Command(bin, "run", "--config", cfg))

	// libvirtd is not there: /metrics, /healthz answer all the same.
	scrapeUntil(t, c, runMetrics, run, "a failed libvirt connection", func(f map[string]*dto.MetricFamily) bool {
		v, ok := value(f, "rarp_announce_libvirt_connected", nil)
		return ok && v == 0 && atLeast(f, "rarp_announce_libvirt_connect_failures_total", nil, 1)
	})
	if code, body, err := get(c, "http://127.0.0.1:9798/readyz"); err != nil || code != http.StatusServiceUnavailable {
		t.Errorf("/readyz without libvirt: %d %q %v, want 503", code, body, err)
	}
	if code, _, err := get(c, "http://127.0.0.1:9798/healthz"); err != nil || code != http.StatusOK {
		t.Errorf("/healthz without libvirt: %d %v, want 200", code, err)
	}

	// libvirtd comes up; a domain migrates in: started paused, resumed.
	lv := libvirtfake.StartAt(t, sock)
	xml := libvirtfake.LiveXML("vm1", vmUUID, 1,
		libvirtfake.NIC{MAC: bridgeMAC, Bridge: "br0", Target: "vnet0"},
		libvirtfake.NIC{Type: "vhostuser", MAC: vhostMAC})
	if err := lv.AddDomain(libvirtfake.Domain{Name: "vm1", UUID: vmUUID, ID: -1, State: 5, XML: xml}); err != nil {
		t.Fatal(err)
	}
	if err := lv.WaitSubscribers(1, 20*time.Second); err != nil {
		t.Fatalf("the agent did not subscribe to the fake libvirtd: %v\n%s", err, run.out)
	}
	// Resynchronized first: the landing is then the event's.
	scrapeUntil(t, c, runMetrics, run, "the connection to libvirt", func(f map[string]*dto.MetricFamily) bool {
		return atLeast(f, "rarp_announce_libvirt_connected", nil, 1) && atLeast(f, "rarp_announce_libvirt_resyncs_total", nil, 1)
	})
	if _, err := lv.EmitBatch([]libvirtfake.Lifecycle{{Domain: "vm1", Event: 2, Detail: 1}, {Domain: "vm1", Event: 4, Detail: 1}}); err != nil {
		t.Fatal(err) // STARTED/MIGRATED, RESUMED/MIGRATED
	}

	// The requests the responder answers.
	query := func(iface, mac, want string) {
		out, err := client.Command(bin, "query", "-i", iface, "--mac", mac).CombinedOutput()
		if err != nil || !strings.Contains(string(out), want) {
			t.Errorf("query on %s for %s: %v\n%s\nwant %s", iface, mac, err, out, want)
		}
	}
	query("cl0", clientMAC, "192.0.2.10")

	runText, runFams := scrapeUntil(t, c, runMetrics, run, "the landing announced and a RARP reply", func(f map[string]*dto.MetricFamily) bool {
		running, _ := value(f, "rarp_announce_announces_running", nil)
		return atLeast(f, "rarp_announce_libvirt_connected", nil, 1) &&
			atLeast(f, "rarp_announce_landings_total", map[string]string{"source": "event"}, 1) &&
			atLeast(f, "rarp_announce_nic_announces_total", map[string]string{"strategy": "host", "result": "started"}, 1) &&
			atLeast(f, "rarp_announce_nic_announces_total", map[string]string{"strategy": "qemu", "result": "started"}, 1) &&
			atLeast(f, "rarp_announce_qmp_announce_self_total", map[string]string{"result": "ok"}, 1) &&
			atLeast(f, "rarp_announce_fdb_repairs_total", nil, 1) &&
			atLeast(f, "rarp_announce_frames_sent_total", nil, 3) &&
			atLeast(f, "rarp_announce_first_frame_lag_seconds", nil, 1) &&
			atLeast(f, "rarp_announce_readiness_waits_total", map[string]string{"result": "ready"}, 1) &&
			atLeast(f, "rarp_announce_responder_replies_total", map[string]string{"interface": "rsp0"}, 1) &&
			running == 0
	})
	if code, body, err := get(c, "http://127.0.0.1:9798/readyz"); err != nil || code != http.StatusOK {
		t.Errorf("/readyz with libvirt: %d %q %v, want 200", code, body, err)
	}

	serve := start(t, host.Command(bin, "serve", "-i", "rsp1", "--ethers", ethers, "--metrics-address", "127.0.0.1:9799"))
	scrapeUntil(t, c, srvMetrics, serve, "serve's metrics", func(f map[string]*dto.MetricFamily) bool {
		return atLeast(f, "rarp_announce_table_entries", nil, 2)
	})
	query("cl1", client2MAC, "198.51.100.10")
	serveText, serveFams := scrapeUntil(t, c, srvMetrics, serve, "a RARP reply", func(f map[string]*dto.MetricFamily) bool {
		return atLeast(f, "rarp_announce_responder_replies_total", map[string]string{"interface": "rsp1"}, 1)
	})
	// The agent with every optional part off, before any event.
	minimal := filepath.Join(dir, "minimal.yaml")
	if err := os.WriteFile(minimal, []byte(fmt.Sprintf(`libvirt:
  socket: %s
fdb_repair: false
strategies:
  openvswitch: host
responder:
  enabled: false
metrics:
  address: 127.0.0.1:9797
`, filepath.Join(dir, "no-libvirt-sock"))), 0o644); err != nil {
		t.Fatal(err)
	}
	mrun := start(t, host.Command(bin, "run", "--config", minimal))
	_, minimalFams := scrapeUntil(t, c, "http://127.0.0.1:9797/metrics", mrun, "the minimal agent's metrics", func(f map[string]*dto.MetricFamily) bool {
		return atLeast(f, "rarp_announce_libvirt_connect_failures_total", nil, 1)
	})

	s := &scrapes{run: runText, serve: serveText, runFams: runFams, serveFams: serveFams, minimalFams: minimalFams}
	if _, err := exec.LookPath("prometheus"); err == nil {
		s.prom = prometheusEvaluates(t, host, c, dir)
	}
	return s
}

// prometheusEvaluates runs a real Prometheus in host that scrapes both
// commands as the job "rarp-announce" (the rules' convention) and
// evaluates the alert rules, then runs every dashboard query.
func prometheusEvaluates(t *testing.T, host *netnstest.NS, c *http.Client, dir string) *promResults {
	rules, err := filepath.Abs(filepath.Join(rulesDir, rulesFile))
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [%q]
scrape_configs:
  - job_name: rarp-announce
    static_configs:
      - targets: ["127.0.0.1:9798", "127.0.0.1:9799"]
`, rules)), 0o644); err != nil {
		t.Fatal(err)
	}
	p := start(t, host.Command("prometheus", "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "tsdb"),
		"--web.listen-address=127.0.0.1:9090", "--log.level=warn"))
	const api = "http://127.0.0.1:9090/api/v1/"
	query := func(q string) (int, error) {
		code, body, err := get(c, api+"query?query="+url.QueryEscape(q))
		if err != nil {
			return 0, err
		}
		var r struct {
			Status, Error string
			Data          struct {
				ResultType string          `json:"resultType"`
				Result     json.RawMessage `json:"result"`
			}
		}
		if err := json.Unmarshal(body, &r); err != nil {
			return 0, fmt.Errorf("HTTP %d: %v: %s", code, err, body)
		}
		if r.Status != "success" {
			return 0, fmt.Errorf("HTTP %d: %s", code, r.Error)
		}
		if r.Data.ResultType != "vector" && r.Data.ResultType != "matrix" {
			return 1, nil // scalar, string
		}
		var series []json.RawMessage
		err = json.Unmarshal(r.Data.Result, &series)
		return len(series), err
	}
	// Both targets scraped a few times: rates over 1m have samples.
	netnstest.EventuallyEvery(t, 30*time.Second, 250*time.Millisecond, func() error {
		n, err := query(`count(count_over_time(up{job="rarp-announce"}[1m]) >= 4)`)
		if err == nil && n == 1 {
			if v, _ := query(`count(up{job="rarp-announce"} == 1) == 2`); v == 1 {
				return nil
			}
		}
		return fmt.Errorf("Prometheus has not scraped both targets 4 times (%v)\n%s", err, p.out)
	})
	res := &promResults{series: map[string]int{}, errors: map[string]string{}, rules: map[string]string{}}
	for _, e := range dashboardExprs(t, loadDashboard(t)) {
		n, err := query(e.expr)
		res.series[e.expr] = n
		if err != nil {
			res.errors[e.expr] = err.Error()
		}
	}
	_, body, err := get(c, api+"rules?type=alert")
	if err != nil {
		t.Fatal(err)
	}
	var rr struct {
		Data struct {
			Groups []struct {
				Rules []struct {
					Name, Health, LastError, State string
				}
			}
		}
	}
	if err := json.Unmarshal(body, &rr); err != nil {
		t.Fatalf("rules: %v: %s", err, body)
	}
	for _, g := range rr.Data.Groups {
		for _, r := range g.Rules {
			res.rules[r.Name] = strings.TrimSpace(r.Health + " " + r.LastError)
			if r.State == "firing" {
				res.firing = append(res.firing, r.Name)
			}
		}
	}
	return res
}

// family is one exposed rarp_announce_* metric family as the reference
// lists it.
type family struct {
	name, typ, help string
	labels          []string // sorted, le excluded
	commands        []string // run, serve
}

// families merges the rarp_announce_* families of both scrapes.
func (s *scrapes) families() []family {
	byName := map[string]*family{}
	add := func(cmd string, fams map[string]*dto.MetricFamily) {
		for name, mf := range fams {
			if !strings.HasPrefix(name, "rarp_announce_") {
				continue
			}
			f := byName[name]
			if f == nil {
				f = &family{name: name, typ: strings.ToLower(mf.GetType().String()), help: mf.GetHelp(), labels: labelNames(mf)}
				byName[name] = f
			}
			f.commands = append(f.commands, cmd)
		}
	}
	add("run", s.runFams)
	add("serve", s.serveFams)
	out := make([]family, 0, len(byName))
	for _, f := range byName {
		out = append(out, *f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

func labelNames(mf *dto.MetricFamily) []string {
	set := map[string]bool{}
	for _, m := range mf.GetMetric() {
		for _, l := range m.GetLabel() {
			set[l.GetName()] = true
		}
	}
	var out []string
	for n := range set {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// seriesNames are the names a PromQL expression may use for the exposed
// families: a histogram's _bucket, _sum and _count, the others' own.
func (s *scrapes) seriesNames() map[string]bool {
	out := map[string]bool{}
	for _, fams := range []map[string]*dto.MetricFamily{s.runFams, s.serveFams} {
		for name, mf := range fams {
			switch mf.GetType() {
			case dto.MetricType_HISTOGRAM:
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					out[name+suffix] = true
				}
			case dto.MetricType_SUMMARY:
				out[name] = true
				out[name+"_sum"], out[name+"_count"] = true, true
			default:
				out[name] = true
			}
		}
	}
	return out
}
