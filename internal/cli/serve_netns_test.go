package cli_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rarp-announce/rarp-announce/internal/netnstest"
)

// The peer harness's addresses: server srv0, client cli0 on one veth.
const (
	srvMAC  = "02:00:0a:63:ff:fe"
	srvIP   = "10.99.255.254"
	cliMAC  = "02:00:0a:63:ff:fd"
	cliIP   = "10.99.255.253"
	cliWant = "10.99.0.253" // what the client's own MAC maps to in the tables below
)

type lab struct {
	srv, cli *netnstest.NS
	dir      string
	ethers   string
}

// newLab builds the two namespaces and an ethers file with the client's
// own MAC and 52:54:00:00:00:01..10.
func newLab(t *testing.T) *lab {
	t.Helper()
	l := &lab{srv: netnstest.New(t, "csrv"), cli: netnstest.New(t, "ccli"), dir: t.TempDir()}
	netnstest.Veth(t, l.srv, "srv0", l.cli, "cli0")
	l.srv.Exec(t, "ip", "link", "set", "srv0", "address", srvMAC)
	l.cli.Exec(t, "ip", "link", "set", "cli0", "address", cliMAC)
	l.srv.Exec(t, "ip", "addr", "add", srvIP+"/16", "dev", "srv0")
	l.cli.Exec(t, "ip", "addr", "add", cliIP+"/16", "dev", "cli0")
	var b strings.Builder
	fmt.Fprintf(&b, "# test table\n%s %s\n", cliMAC, cliWant)
	for i := 1; i <= 10; i++ {
		fmt.Fprintf(&b, "52:54:00:00:00:%02x 10.99.0.%d\n", i, i)
	}
	l.ethers = writeFile(t, l.dir, "ethers", b.String())
	return l
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// serve starts "rarp-announce serve" in the server namespace and waits
// until it answers. The tests read the console format's lines.
func (l *lab) serve(t *testing.T, args ...string) *daemon {
	t.Helper()
	d := startDaemon(t, l.srv.Command(append([]string{binary, "serve", "--log-format", "console", "--interface", "srv0"}, args...)...))
	d.waitFrom(0, 20*time.Second, "answering RARP requests", `"interface": "srv0"`)
	return d
}

// query runs "rarp-announce query" in the client namespace.
func (l *lab) query(t *testing.T, args ...string) result {
	t.Helper()
	return run(t, l.cli.Command(append([]string{binary, "query", "--interface", "cli0", "--timeout", "500ms"}, args...)...))
}

var answerLine = regexp.MustCompile(`^(\S+) is (\S+): server (\S+) (\S+), (\d+(\.\d+)?(µs|ms|s))$`)

// answers parses query's output: MAC, IP, server MAC, server IP per line.
func answers(t *testing.T, out string) [][4]string {
	t.Helper()
	var got [][4]string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l == "" {
			continue
		}
		m := answerLine.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("query printed %q", l)
		}
		got = append(got, [4]string{m[1], m[2], m[3], m[4]})
	}
	return got
}

func TestQueryAgainstServe(t *testing.T) {
	netnstest.Require(t)
	l := newLab(t)
	d := l.serve(t, "--ethers", l.ethers)

	r := l.query(t) // the interface's own MAC
	if r.Code != 0 {
		t.Fatalf("exit %d: %s", r.Code, r.Stderr)
	}
	if got := answers(t, r.Stdout); len(got) != 1 || got[0] != [4]string{cliMAC, cliWant, srvMAC, srvIP} {
		t.Fatalf("answers %v", got)
	}
	r = l.query(t, "--mac", "52:54:00:00:00:07", "--count", "3")
	if got := answers(t, r.Stdout); r.Code != 0 || len(got) != 3 || got[2] != [4]string{"52:54:00:00:00:07", "10.99.0.7", srvMAC, srvIP} {
		t.Fatalf("exit %d answers %v %s", r.Code, got, r.Stderr)
	}
	r = l.query(t, "--mac", "52:54:00:00:00:99")
	if r.Code != 1 || r.Stdout != "" || !strings.Contains(r.Stderr, "no RARP server answered for 52:54:00:00:00:99 on cli0 within 500ms") {
		t.Fatalf("unknown MAC: exit %d stdout %q stderr %q", r.Code, r.Stdout, r.Stderr)
	}
	if code := d.stop(); code != 0 {
		t.Fatalf("serve exited %d on SIGTERM", code)
	}
	d.waitFrom(0, time.Second, "stopped", `"requests": 5`, `"replies": 4`, `"unknown": 1`)
}

// rarpd starts Debian's rarpd on srv0 with the lab's ethers file as its
// /etc/ethers, in a private mount namespace: an overlay on /etc (ethers,
// nsswitch "ethers: files") and a /dev whose /dev/log is a socket this
// test reads (rarpd calls syslog for every reply; without /dev/log glibc
// would write to /dev/console). It returns rarpd's syslog lines so far.
func (l *lab) rarpd(t *testing.T, flags ...string) func() []string {
	t.Helper()
	upper, work := filepath.Join(l.dir, "etc-upper"), filepath.Join(l.dir, "etc-work")
	for _, d := range []string{upper, work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	eth, err := os.ReadFile(l.ethers)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, upper, "ethers", string(eth))
	writeFile(t, upper, "nsswitch.conf", "passwd: files\ngroup: files\nhosts: files\nethers: files\n")
	sinkPath := filepath.Join(l.dir, "log.sock")
	sink, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sinkPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	logs := make(chan string, 1024)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := sink.ReadFrom(buf)
			if err != nil {
				close(logs)
				return
			}
			logs <- string(buf[:n])
		}
	}()
	script := fmt.Sprintf(`set -e
mount -t overlay rarpdetc -o lowerdir=/etc,upperdir=%[1]s,workdir=%[2]s /etc
mount -t tmpfs -o mode=755,size=1m rarpddev /dev
mknod -m 666 /dev/null c 1 3
touch /dev/log
mount --bind %[3]s /dev/log
exec rarpd -d %[4]s srv0`, upper, work, sinkPath, strings.Join(flags, " "))
	startDaemon(t, l.srv.Command("unshare", "-m", "--propagation", "private", "sh", "-c", script))
	var seen []string
	return func() []string {
		for {
			select {
			case m, ok := <-logs:
				if !ok {
					return seen
				}
				seen = append(seen, m)
				continue
			default:
			}
			return seen
		}
	}
}

// The same query against Debian's rarpd gets the same answer as against
// serve (both from the interface srv0).
func TestQueryAgainstRarpd(t *testing.T) {
	netnstest.Require(t, "rarpd", "unshare")
	l := newLab(t)
	logs := l.rarpd(t, "-e")
	var r result
	deadline := time.Now().Add(10 * time.Second)
	for {
		if r = l.query(t, "--mac", "52:54:00:00:00:03"); r.Code == 0 || time.Now().After(deadline) {
			break
		}
	}
	if got := answers(t, r.Stdout); r.Code != 0 || len(got) != 1 || got[0] != [4]string{"52:54:00:00:00:03", "10.99.0.3", srvMAC, srvIP} {
		t.Fatalf("exit %d answers %v stderr %s", r.Code, got, r.Stderr)
	}
	if r := l.query(t); r.Code != 0 || answers(t, r.Stdout)[0][1] != cliWant {
		t.Fatalf("own MAC: exit %d %s %s", r.Code, r.Stdout, r.Stderr)
	}
	if r := l.query(t, "--mac", "52:54:00:00:00:99"); r.Code != 1 {
		t.Fatalf("rarpd answered an unknown MAC: %s", r.Stdout)
	}
	// It was rarpd that answered: it logs every reply.
	time.Sleep(100 * time.Millisecond)
	if got := strings.Join(logs(), "\n"); !strings.Contains(got, "RARP response to "+cliMAC+" 10.99.0.3 on srv0") {
		t.Fatalf("rarpd's syslog has no reply with 10.99.0.3: %q", got)
	}
}

// rarpbenchJSON is the part of rarpbench's report the tests read.
type rarpbenchJSON struct {
	Results []struct {
		Label          string         `json:"label"`
		Sent           int            `json:"requests_sent"`
		Valid          int            `json:"replies_valid"`
		Warmup         int            `json:"warmup_excluded"`
		Invalid        int            `json:"replies_invalid"`
		InvalidReasons map[string]int `json:"invalid_reasons"`
		Lost           int            `json:"lost_timeouts"`
		LateOrDup      int            `json:"late_or_duplicate"`
		ServerMAC      string         `json:"server_mac"`
		ServerIP       string         `json:"server_ip"`
		EthDst         map[string]int `json:"reply_eth_dst"`
		UnknownSent    int            `json:"unknown_probe_sent"`
		UnknownReplied int            `json:"unknown_probe_replied"`
		ReplyRate      float64        `json:"replies_per_s"`
		Latency        struct {
			P50 float64 `json:"p50_us"`
			P99 float64 `json:"p99_us"`
		} `json:"latency"`
	} `json:"results"`
}

func (l *lab) rarpbench(t *testing.T, args ...string) (result, rarpbenchJSON) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "bench.json")
	r := run(t, l.cli.Command(append([]string{rarpbench, "-iface", "cli0", "-macs", l.ethers, "-json-file", out}, args...)...))
	var rep rarpbenchJSON
	if b, err := os.ReadFile(out); err == nil {
		if err := json.Unmarshal(b, &rep); err != nil {
			t.Fatal(err)
		}
	}
	return r, rep
}

// rarpd's client side, the peer harness's rarpbench, against serve: every
// reply passes its validation (op, types, lengths, tha, tpa = the table's,
// sha = the server's MAC = Ethernet source, spa = the server's IP, sent to
// the requester) and the unknown MACs it probes get no answer.
func TestRarpbenchAgainstServe(t *testing.T) {
	netnstest.Require(t)
	l := newLab(t)
	l.serve(t, "--ethers", l.ethers)
	for _, src := range []string{"requested", "iface", "tag"} {
		r, rep := l.rarpbench(t, "-n", "3000", "-inflight", "16", "-src", src, "-unknown", "20", "-dst-check", "requester",
			"-server-mac", srvMAC, "-server-ip", srvIP, "-timeout", "2s")
		if r.Code != 0 || len(rep.Results) != 1 {
			t.Fatalf("-src %s: rarpbench exit %d\n%s%s", src, r.Code, r.Stdout, r.Stderr)
		}
		res := rep.Results[0]
		if res.Valid != 3000 || res.Invalid != 0 || res.Lost != 0 || res.LateOrDup != 0 || res.UnknownSent != 20 || res.UnknownReplied != 0 {
			t.Fatalf("-src %s: %+v", src, res)
		}
		t.Logf("-src %s: %.0f replies/s, p50 %.1f µs, p99 %.1f µs", src, res.ReplyRate, res.Latency.P50, res.Latency.P99)
	}
	// Ethernet source != sha: rarpd refuses it, so does serve. (Not for
	// the client's own MAC, where source and sha are equal.)
	l.ethers = writeFile(t, l.dir, "others", "52:54:00:00:00:01 10.99.0.1\n52:54:00:00:00:02 10.99.0.2\n")
	r, rep := l.rarpbench(t, "-n", "50", "-warmup", "0", "-src", "mismatch", "-timeout", "200ms")
	if r.Code != 3 || len(rep.Results) != 1 || rep.Results[0].Valid != 0 || rep.Results[0].Lost != 50 {
		t.Fatalf("-src mismatch: exit %d %+v", r.Code, rep.Results)
	}
}

// genTable writes the harness's table of n entries (rarpbench gen).
func genTable(t *testing.T, path string, n int) {
	t.Helper()
	cmd := exec.Command(rarpbench, "gen", "-m", fmt.Sprint(n))
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := bufio.NewWriterSize(f, 1<<20)
	var stderr strings.Builder
	cmd.Stdout, cmd.Stderr = w, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("rarpbench gen: %v %s", err, stderr.String())
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
}

// A reload of a 1M-entry table under load loses no request: rarpbench
// keeps 64 requests in flight while the table is reloaded three times, by
// SIGHUP and by a file change, then is interrupted and reports.
func TestReloadUnderLoadLosesNothing(t *testing.T) {
	netnstest.Require(t)
	l := newLab(t)
	big := filepath.Join(l.dir, "ethers-1m")
	genTable(t, big, 1_000_000)
	d := startDaemon(t, l.srv.Command(binary, "serve", "--log-format", "console", "--interface", "srv0", "--ethers", big))
	d.waitFrom(0, 60*time.Second, "answering RARP requests")

	out := filepath.Join(t.TempDir(), "bench.json")
	bench := l.cli.Command(rarpbench, "-iface", "cli0", "-macs", big, "-json-file", out, "-n", "100000000", "-max-duration", "300s",
		"-inflight", "64", "-distinct", "400", "-timeout", "3s", "-server-mac", srvMAC, "-server-ip", srvIP, "-dst-check", "requester")
	var stdout, stderr strings.Builder
	bench.Stdout, bench.Stderr = &stdout, &stderr
	if err := bench.Start(); err != nil {
		t.Fatal(err)
	}
	benchDone := make(chan error, 1)
	go func() { benchDone <- bench.Wait() }()

	time.Sleep(time.Second)
	var took []string
	for i := 0; i < 3; i++ {
		m := d.Mark()
		if i == 1 {
			now := time.Now() // a file change: the watcher reloads
			if err := os.Chtimes(big, now, now); err != nil {
				t.Fatal(err)
			}
		} else {
			d.Signal(syscall.SIGHUP)
		}
		line := d.waitFrom(m, 60*time.Second, "table loaded", `"entries": 1000000`)
		took = append(took, regexp.MustCompile(`"took": "([^"]+)"`).FindStringSubmatch(line)[1])
		select {
		case err := <-benchDone:
			t.Fatalf("rarpbench ended (%v) before reload %d finished\n%s%s", err, i+1, stdout.String(), stderr.String())
		default:
		}
	}
	time.Sleep(500 * time.Millisecond)
	if err := bench.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := <-benchDone; err != nil {
		t.Fatalf("rarpbench: %v\n%s%s", err, stdout.String(), stderr.String())
	}
	var rep rarpbenchJSON
	b, err := os.ReadFile(out)
	if err == nil {
		err = json.Unmarshal(b, &rep)
	}
	if err != nil || len(rep.Results) != 1 {
		t.Fatalf("report: %v %s", err, b)
	}
	res := rep.Results[0]
	t.Logf("3 reloads of 1,000,000 entries (took %v) during %d requests: %d answered, %d lost, p99 %.0f µs",
		took, res.Sent, res.Valid+res.Warmup, res.Lost, res.Latency.P99)
	if res.Lost != 0 || res.Invalid != 0 || res.Valid+res.Warmup != res.Sent || res.Sent < 10000 {
		t.Fatalf("sent %d, answered %d, lost %d, invalid %d", res.Sent, res.Valid+res.Warmup, res.Lost, res.Invalid)
	}
}

// SIGUSR1 logs every request at debug level, SIGUSR2 goes back; SIGHUP
// re-resolves host names (resolved at load, never per request).
func TestServeSignals(t *testing.T) {
	netnstest.Require(t, "unshare")
	l := newLab(t)
	hostsDir := t.TempDir()
	hosts := writeFile(t, hostsDir, "hosts", "127.0.0.1 localhost\n10.99.0.50 pxe-client\n")
	writeFile(t, l.dir, "ethers", fmt.Sprintf("%s %s\n52:54:00:00:00:50 pxe-client\n", cliMAC, cliWant))
	script := fmt.Sprintf("mount --bind %s /etc/hosts && exec %s serve --log-format console --interface srv0 --ethers %s", hosts, binary, l.ethers)
	d := startDaemon(t, l.srv.Command("unshare", "-m", "--propagation", "private", "sh", "-c", script))
	d.waitFrom(0, 20*time.Second, "answering RARP requests")

	ipOf := func() string {
		r := l.query(t, "--mac", "52:54:00:00:00:50")
		if r.Code != 0 {
			t.Fatalf("query: exit %d %s", r.Code, r.Stderr)
		}
		return answers(t, r.Stdout)[0][1]
	}
	if got := ipOf(); got != "10.99.0.50" {
		t.Fatalf("pxe-client -> %s", got)
	}

	// Debug logging on and off.
	m := d.Mark()
	d.Signal(syscall.SIGUSR1)
	d.waitFrom(m, 5*time.Second, "log level changed", `"level": "debug"`)
	l.query(t, "--mac", "52:54:00:00:00:aa")
	d.waitFrom(m, 5*time.Second, "DEBUG", "unknown MAC, not answered", "52:54:00:00:00:aa")
	ipOf()
	d.waitFrom(m, 5*time.Second, "DEBUG", "reply", "52:54:00:00:00:50", "10.99.0.50")
	m = d.Mark()
	d.Signal(syscall.SIGUSR2)
	d.waitFrom(m, 5*time.Second, "log level changed", `"level": "info"`)
	l.query(t, "--mac", "52:54:00:00:00:bb")
	ipOf()
	time.Sleep(200 * time.Millisecond)
	if dbg := d.linesFrom(m, "DEBUG"); len(dbg) != 0 {
		t.Fatalf("debug lines after SIGUSR2: %q", dbg)
	}

	// The name now resolves elsewhere: requests still get the address of
	// the last load until SIGHUP. (Go's resolver caches /etc/hosts for up
	// to 5 s, so SIGHUP is repeated until the new address shows.)
	if err := os.WriteFile(hosts, []byte("127.0.0.1 localhost\n10.99.0.51 pxe-client\n"), 0o644); err != nil { // in place: the bind mount holds the inode
		t.Fatal(err)
	}
	if got := ipOf(); got != "10.99.0.50" {
		t.Fatalf("the name was resolved again without a reload: %s", got)
	}
	netnstest.EventuallyEvery(t, 15*time.Second, time.Second, func() error {
		m := d.Mark()
		d.Signal(syscall.SIGHUP)
		d.waitFrom(m, 10*time.Second, "table loaded", `"trigger": "SIGHUP"`)
		if got := ipOf(); got != "10.99.0.51" {
			return fmt.Errorf("after SIGHUP the name resolves to %s, want 10.99.0.51", got)
		}
		return nil
	})
}

// A broken table file keeps the table in service and says file:line:
// reason; the fixed file is picked up.
func TestServeBadTableKeepsOld(t *testing.T) {
	netnstest.Require(t)
	l := newLab(t)
	d := l.serve(t, "--ethers", l.ethers)
	m := d.Mark()
	writeFile(t, l.dir, "ethers", "52:54:00:00:00:01 10.99.1.1\n52:54:00:00:00:02 10.99.1.256\n")
	line := d.waitFrom(m, 10*time.Second, "table not loaded; still serving the previous table")
	if !strings.Contains(line, l.ethers+`:2: \"10.99.1.256\" is not an IPv4 address`) { // JSON-quoted in the log line
		t.Fatalf("log %q does not name file:line", line)
	}
	if r := l.query(t, "--mac", "52:54:00:00:00:01"); r.Code != 0 || answers(t, r.Stdout)[0][1] != "10.99.0.1" {
		t.Fatalf("old table not serving: %d %s %s", r.Code, r.Stdout, r.Stderr)
	}
	m = d.Mark()
	writeFile(t, l.dir, "ethers", "52:54:00:00:00:01 10.99.1.1\n")
	d.waitFrom(m, 10*time.Second, "table loaded", `"trigger": "file changed"`, `"entries": 1`)
	if r := l.query(t, "--mac", "52:54:00:00:00:01"); r.Code != 0 || answers(t, r.Stdout)[0][1] != "10.99.1.1" {
		t.Fatalf("new table not serving: %d %s %s", r.Code, r.Stdout, r.Stderr)
	}
}

// The metrics count what happened.
func TestServeMetrics(t *testing.T) {
	netnstest.Require(t)
	l := newLab(t)
	mapFile := writeFile(t, l.dir, "map.yaml", "mappings:\n  - {mac: 52:54:00:00:00:20, ip: 10.99.0.20}\n  - {mac: 52:54:00:00:00:21, ip: 192.0.2.21}\n")
	d := l.serve(t, "--ethers", l.ethers, "--map", mapFile, "--metrics-address", "127.0.0.1:0")
	addr := regexp.MustCompile(`"address": "([^"]+)"`).FindStringSubmatch(d.waitFrom(0, 5*time.Second, "metrics", "address"))[1]
	l.query(t, "--mac", "52:54:00:00:00:20")
	l.query(t, "--mac", "52:54:00:00:00:21") // off-link
	l.query(t, "--mac", "52:54:00:00:00:99") // unknown
	var body string
	err := l.srv.Do(func() error {
		// Dialled here, on the thread in the server's namespace (the
		// HTTP client would dial from another thread).
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			return err
		}
		c := &http.Client{Transport: &http.Transport{DialContext: func(context.Context, string, string) (net.Conn, error) { return conn, nil }}}
		resp, err := c.Get("http://" + addr + "/metrics")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		body = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`rarp_announce_responder_requests_total{interface="srv0"} 3`,
		`rarp_announce_responder_replies_total{interface="srv0"} 1`,
		`rarp_announce_responder_unknown_requests_total{interface="srv0"} 1`,
		`rarp_announce_responder_offlink_refusals_total{interface="srv0"} 1`,
		`rarp_announce_responder_malformed_frames_total{interface="srv0",reason="sender_mismatch"} 0`,
		`rarp_announce_table_entries 13`,
		`rarp_announce_table_reloads_total{result="ok"} 1`,
		`rarp_announce_table_reloads_total{result="error"} 0`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("metrics lack %q", want)
		}
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", body)
	}
}

// SIGTERM while the table's host names wait on DNS stops serve at once with
// exit 0: a stop, not a bad table (it exited 2, "table not loaded").
func TestServeStopsWhileResolving(t *testing.T) {
	netnstest.Require(t, "unshare")
	l := newLab(t)
	ethers := writeFile(t, l.dir, "ethers", "52:54:00:00:00:50 pxe-client.rarp-test.example\n")
	script := l.srv.HangingDNS(t) + fmt.Sprintf("exec %s serve --log-format console --interface srv0 --ethers %s", binary, ethers)
	d := startDaemon(t, l.srv.Command("unshare", "-m", "--propagation", "private", "sh", "-c", script))
	time.Sleep(time.Second) // the lookup is on its way
	start := time.Now()
	code := d.stop()
	if took := time.Since(start); code != 0 || took > 3*time.Second {
		t.Fatalf("SIGTERM during the lookup: exit %d after %v, want 0 at once\n%s", code, took, strings.Join(d.Lines(0), "\n"))
	}
	d.waitFrom(0, time.Second, "stopped before the table was loaded")
	if bad := d.linesFrom(0, "table not loaded"); len(bad) > 0 {
		t.Fatalf("a stop reported as a bad table: %q", bad)
	}
}
