package responder

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/rarp-announce/rarp-announce/internal/frametest"
	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
	"github.com/rarp-announce/rarp-announce/pkg/rarptable"
)

// The addresses of the peer harness (test/peer): the server side is
// peer0 of its reference capture.
const (
	srvMAC = "02:00:0a:63:ff:fe"
	cliMAC = "02:00:0a:63:ff:fd"
)

// pair is a server and a client namespace joined by a veth:
// srv:srv0 (srvMAC, srvAddr) <-> cli:cli0 (cliMAC, 10.99.255.253/16).
type pair struct{ srv, cli *netnstest.NS }

func newPair(t *testing.T, srvAddr string) *pair {
	t.Helper()
	p := &pair{srv: netnstest.New(t, "rsrv"), cli: netnstest.New(t, "rcli")}
	netnstest.Veth(t, p.srv, "srv0", p.cli, "cli0")
	p.srv.Exec(t, "ip", "link", "set", "srv0", "address", srvMAC)
	p.cli.Exec(t, "ip", "link", "set", "cli0", "address", cliMAC)
	p.srv.Exec(t, "ip", "addr", "add", srvAddr, "dev", "srv0")
	p.cli.Exec(t, "ip", "addr", "add", "10.99.255.253/16", "dev", "cli0")
	return p
}

// serve starts a responder in ns; it stops when the test ends.
func serve(t *testing.T, ns *netnstest.NS, cfg Config) (*Responder, func()) {
	t.Helper()
	var r *Responder
	if err := ns.Do(func() (err error) { r, err = New(cfg); return err }); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
		})
	}
	t.Cleanup(stop)
	return r, stop
}

func holderOf(t *testing.T, lines ...string) *rarptable.Holder {
	return rarptable.NewHolder(table(t, lines...))
}

// client is a raw RARP socket in the client namespace.
type client struct {
	fd  int
	mac rarp.MAC
}

func newClient(t *testing.T, ns *netnstest.NS, ifname string) *client {
	t.Helper()
	ifi := ns.Interface(t, ifname)
	c := &client{}
	copy(c.mac[:], ifi.HardwareAddr)
	err := ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(rarp.EtherTypeRARP)))
		if err != nil {
			return err
		}
		c.fd = fd
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(rarp.EtherTypeRARP), Ifindex: ifi.Index})
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(c.fd) })
	return c
}

func (c *client) send(t testing.TB, frame []byte) {
	t.Helper()
	// The socket is bound to the interface: write(2) sends the frame as is.
	if _, err := unix.Write(c.fd, frame); err != nil {
		t.Fatal(err)
	}
}

// replies collects RARP replies (op 4) until timeout.
func (c *client) replies(t testing.TB, timeout time.Duration) [][]byte {
	t.Helper()
	var out [][]byte
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 2048)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return out
		}
		tv := unix.NsecToTimeval(left.Nanoseconds())
		_ = unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		n, _, err := unix.Recvfrom(c.fd, buf, 0)
		if err != nil {
			continue
		}
		if n >= 22 && buf[21] == 4 {
			out = append(out, append([]byte(nil), buf[:n]...))
		}
	}
}

// ask sends frame and returns the first reply for its tha, or nil.
func (c *client) ask(t testing.TB, frame []byte, timeout time.Duration) []byte {
	t.Helper()
	c.send(t, frame)
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 2048)
	for time.Now().Before(deadline) {
		tv := unix.NsecToTimeval(time.Until(deadline).Nanoseconds() + 1000)
		_ = unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		n, _, err := unix.Recvfrom(c.fd, buf, 0)
		if err == nil && n >= ReplyLen && buf[21] == 4 && bytes.Equal(buf[32:38], frame[32:38]) {
			return append([]byte(nil), buf[:n]...)
		}
	}
	return nil
}

// referenceFields reads the tshark fields of rarpd's reply from the peer
// harness's reference capture, the third line of its "-T fields" section.
func referenceFields(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../../test/peer/reference/capture-reference.txt")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "== tshark") && strings.Contains(l, "-T fields") {
			return strings.Fields(lines[i+3])
		}
	}
	t.Fatal("no tshark fields in the reference capture")
	return nil
}

func TestAnswersLikeRarpdOnTheWire(t *testing.T) {
	netnstest.Require(t, "tcpdump", "tshark")
	p := newPair(t, "10.99.255.254/16")
	capture := netnstest.StartCapture(t, p.cli, "cli0", "ether proto 0x8035")
	r, _ := serve(t, p.srv, Config{Interfaces: []string{"srv0"}, Table: holderOf(t, "52:54:00:00:00:01 10.99.0.1")})
	c := newClient(t, p.cli, "cli0")

	reply := c.ask(t, frametest.Hex(t, refRequest), 2*time.Second)
	want := frametest.Hex(t, "5254 0000 0001 0200 0a63 fffe 8035 0001 0800 0604 0004 0200 0a63 fffe 0a63 fffe 5254 0000 0001 0a63 0001")
	if !bytes.Equal(reply, want) {
		t.Fatalf("reply\n got %x\nwant %x (rarpd's)", reply, want)
	}
	path := capture.Stop()
	fields := netnstest.Tshark(t, path, "frame.len", "eth.dst", "eth.src", "eth.type", "arp.hw.type", "arp.proto.type",
		"arp.hw.size", "arp.proto.size", "arp.opcode", "arp.src.hw_mac", "arp.src.proto_ipv4", "arp.dst.hw_mac", "arp.dst.proto_ipv4")
	if len(fields) != 2 {
		t.Fatalf("captured %d frames, want request and reply: %q", len(fields), fields)
	}
	if got, ref := strings.Split(fields[1], "|"), referenceFields(t); strings.Join(got, " ") != strings.Join(ref, " ") {
		t.Fatalf("tshark dissects our reply as\n%q\nrarpd's reference is\n%q", got, ref)
	}
	out, err := exec.Command("tshark", "-V", "-r", path, "-Y", "arp.opcode == 4", "-O", "arp").CombinedOutput()
	if err != nil {
		t.Fatalf("tshark -V: %v\n%s", err, out)
	}
	for _, want := range []string{"Address Resolution Protocol (reverse reply)", "Opcode: reverse reply (4)", "Target IP address: 10.99.0.1"} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("tshark -V lacks %q:\n%s", want, out)
		}
	}
	waitStats(t, r, "srv0", func(s Stats) bool { return s.Requests == 1 && s.Replies == 1 })
}

func waitStats(t *testing.T, r *Responder, ifname string, cond func(Stats) bool) Stats {
	t.Helper()
	var s Stats
	netnstest.Eventually(t, 5*time.Second, func() error {
		s = r.Stats()[ifname]
		if cond(s) {
			return nil
		}
		return fmt.Errorf("stats never matched: %+v", s)
	})
	return s
}

func TestUnknownAndMalformedAreCountedNotAnswered(t *testing.T) {
	netnstest.Require(t)
	p := newPair(t, "10.99.255.254/16")
	r, _ := serve(t, p.srv, Config{Interfaces: []string{"srv0"}, Table: holderOf(t, "52:54:00:00:00:01 10.99.0.1")})
	c := newClient(t, p.cli, "cli0")

	known := request(t, cliMAC, cliMAC, "52:54:00:00:00:01")
	c.send(t, request(t, cliMAC, cliMAC, "52:54:00:00:00:77"))              // unknown
	c.send(t, request(t, cliMAC, "52:54:00:00:00:01", "52:54:00:00:00:01")) // source != sha
	c.send(t, patch(request(t, cliMAC, cliMAC, "52:54:00:00:00:01"), 15, 6))
	c.send(t, request(t, cliMAC, cliMAC, "52:54:00:00:00:01")[:24]) // short
	// Filtered in the kernel, never counted: another server's reply, and
	// a request sent to another station's MAC (PACKET_OTHERHOST).
	c.send(t, patch(request(t, cliMAC, cliMAC, "52:54:00:00:00:01"), 21, 4))
	other := request(t, cliMAC, cliMAC, "52:54:00:00:00:01")
	copy(other[0:6], []byte{0x02, 0, 0, 0, 0, 0x99})
	c.send(t, other)
	// A socket bound to the RARP EtherType does not see its own outgoing
	// frames (only ETH_P_ALL taps do): any reply here is the responder's.
	if got := c.replies(t, 300*time.Millisecond); len(got) != 0 {
		t.Fatalf("answered %d frames it must not answer: %x", len(got), got)
	}
	s := waitStats(t, r, "srv0", func(s Stats) bool {
		return s.Unknown == 1 && s.Malformed["sender_mismatch"] == 1 && s.Malformed["htype"] == 1 && s.Malformed["short_frame"] == 1
	})
	if s.Requests != 1 || s.Replies != 0 {
		t.Fatalf("stats %+v: the reply and the frame for another station were counted", s)
	}
	// And it still answers.
	if reply := c.ask(t, known, 2*time.Second); reply == nil {
		t.Fatal("no answer for a known MAC after the bad frames")
	}
}

// A request whose Ethernet source is a group or zero address: the reply
// would go "unicast" to that address, that is flooded. Nothing is sent
// and each is counted as bad_source (issue 11 #5).
func TestGroupSourceIsDroppedAndCounted(t *testing.T) {
	netnstest.Require(t)
	p := newPair(t, "10.99.255.254/16")
	r, _ := serve(t, p.srv, Config{Interfaces: []string{"srv0"}, Table: holderOf(t, "52:54:00:00:00:01 10.99.0.1")})
	c := newClient(t, p.cli, "cli0")
	bad := []string{"ff:ff:ff:ff:ff:ff", "01:00:5e:00:00:fb", "33:33:00:00:00:01", "00:00:00:00:00:00"}
	for _, src := range bad {
		c.send(t, request(t, src, src, "52:54:00:00:00:01"))
	}
	if got := c.replies(t, 300*time.Millisecond); len(got) != 0 {
		t.Fatalf("answered %d requests from group or zero sources: %x", len(got), got)
	}
	s := waitStats(t, r, "srv0", func(s Stats) bool { return s.Malformed["bad_source"] == uint64(len(bad)) })
	if s.Replies != 0 || s.Requests != 0 {
		t.Fatalf("stats %+v: a bad-source frame was counted as a request or answered", s)
	}
	// The same MAC asked from a station's address is answered.
	if reply := c.ask(t, request(t, cliMAC, cliMAC, "52:54:00:00:00:01"), 2*time.Second); reply == nil {
		t.Fatal("no answer for a known MAC from a unicast source")
	}
}

func TestOffLinkRule(t *testing.T) {
	netnstest.Require(t)
	p := newPair(t, "10.99.255.254/24") // 10.99.0.0/16 mappings are off-link now
	tbl := holderOf(t, "52:54:00:00:00:01 10.99.0.1", "52:54:00:00:00:02 10.99.255.2")
	c := newClient(t, p.cli, "cli0")
	offLink := request(t, cliMAC, cliMAC, "52:54:00:00:00:01")
	onLink := request(t, cliMAC, cliMAC, "52:54:00:00:00:02")

	r, stop := serve(t, p.srv, Config{Interfaces: []string{"srv0"}, Table: tbl})
	if reply := c.ask(t, offLink, 300*time.Millisecond); reply != nil {
		t.Fatalf("answered an off-link mapping without OffLink: %x", reply)
	}
	if reply := c.ask(t, onLink, 2*time.Second); reply == nil || !bytes.Equal(reply[28:32], []byte{10, 99, 255, 254}) {
		t.Fatalf("on-link reply %x", reply)
	}
	waitStats(t, r, "srv0", func(s Stats) bool { return s.OffLink == 1 && s.Replies == 1 && s.Requests == 2 })
	stop()

	serve(t, p.srv, Config{Interfaces: []string{"srv0"}, Table: tbl, OffLink: true})
	reply := c.ask(t, offLink, 2*time.Second)
	if reply == nil {
		t.Fatal("no answer with OffLink")
	}
	var f rarp.Frame
	if err := f.UnmarshalBinary(reply); err != nil || f.SenderIP.String() != "0.0.0.0" || f.TargetIP.String() != "10.99.0.1" {
		t.Fatalf("off-link reply %v %v: want spa 0.0.0.0 (rarpd -o)", &f, err)
	}
}

func TestBootDirRule(t *testing.T) {
	netnstest.Require(t)
	p := newPair(t, "10.99.255.254/16")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "0A630001"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r, _ := serve(t, p.srv, Config{Interfaces: []string{"srv0"}, BootDir: dir,
		Table: holderOf(t, "52:54:00:00:00:01 10.99.0.1", "52:54:00:00:00:02 10.99.0.2")})
	c := newClient(t, p.cli, "cli0")
	if c.ask(t, request(t, cliMAC, cliMAC, "52:54:00:00:00:01"), 2*time.Second) == nil {
		t.Fatal("no answer though 0A630001 exists")
	}
	second := request(t, cliMAC, cliMAC, "52:54:00:00:00:02")
	if reply := c.ask(t, second, 300*time.Millisecond); reply != nil {
		t.Fatalf("answered without a boot file: %x", reply)
	}
	waitStats(t, r, "srv0", func(s Stats) bool { return s.NotBootable == 1 })
	// A boot file that appears is seen without a restart.
	if err := os.WriteFile(filepath.Join(dir, "0A630002.SUN4M"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	netnstest.WaitFor(t, "the new boot file to be picked up", func() bool {
		return c.ask(t, second, 200*time.Millisecond) != nil
	})
}

// TestVLAN: a request tagged for a VLAN that arrives on the trunk is not
// answered there (the kernel marks it for another host, as rarpd also
// sees it). Answering on a VLAN sub-interface and on a VLAN-filtering
// bridge needs kernel features this host may lack: vlan_kernelrig_test.go,
// run in the kernel rig (test/kernel).
func TestVLAN(t *testing.T) {
	netnstest.Require(t)
	p := newPair(t, "10.99.255.254/16")
	tbl := holderOf(t, "52:54:00:00:00:01 10.100.0.1", "52:54:00:00:00:02 10.99.0.2")
	r, _ := serve(t, p.srv, Config{Interfaces: []string{"srv0"}, Table: tbl, OffLink: true})
	c := newClient(t, p.cli, "cli0")
	tagged, err := func() ([]byte, error) {
		f := rarp.Announce(rarp.MustParseMAC("52:54:00:00:00:01"), rarp.VLAN{ID: 100})
		f.Source, f.SenderHardware = rarp.MustParseMAC(cliMAC), rarp.MustParseMAC(cliMAC)
		return f.MarshalBinary()
	}()
	if err != nil {
		t.Fatal(err)
	}
	c.send(t, tagged)
	if got := c.replies(t, 300*time.Millisecond); len(got) != 0 {
		t.Fatalf("answered a request tagged for VLAN 100 on the trunk: %x", got)
	}
	if c.ask(t, request(t, cliMAC, cliMAC, "52:54:00:00:00:02"), 2*time.Second) == nil {
		t.Fatal("no answer to an untagged request on the trunk")
	}
	s := waitStats(t, r, "srv0", func(s Stats) bool { return s.Replies == 1 })
	if s.Requests != 1 || s.Unknown != 0 || s.Malformed["other"] != 0 {
		t.Fatalf("stats %+v: the tagged request was counted", s)
	}
}

// TestFloodKeepsMemoryFlatAndAnswersFlowing floods the responder with
// unknown and malformed requests while a client asks for a known MAC one
// request at a time: every valid request is answered and the heap does
// not grow.
func TestFloodKeepsMemoryFlatAndAnswersFlowing(t *testing.T) {
	netnstest.Require(t)
	p := newPair(t, "10.99.255.254/16")
	r, _ := serve(t, p.srv, Config{Interfaces: []string{"srv0"}, Table: holderOf(t, "52:54:00:00:00:01 10.99.0.1")})
	c := newClient(t, p.cli, "cli0")
	flood := newClient(t, p.cli, "cli0")
	if c.ask(t, request(t, cliMAC, cliMAC, "52:54:00:00:00:01"), 2*time.Second) == nil {
		t.Fatal("no answer before the flood")
	}

	var bad [4][]byte
	bad[0] = request(t, cliMAC, cliMAC, "52:54:00:00:00:02")                // unknown
	bad[1] = request(t, "02:00:00:00:00:07", cliMAC, "52:54:00:00:00:01")   // source != sha
	bad[2] = patch(request(t, cliMAC, cliMAC, "52:54:00:00:00:01"), 19, 16) // plen
	bad[3] = request(t, cliMAC, cliMAC, "52:54:00:00:00:01")[:30]           // short
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)

	var stop atomic.Bool
	var sent atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; !stop.Load(); i++ {
			f := bad[i&3]
			// write(2) straight from the slice: the flood allocates nothing.
			if _, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(flood.fd), uintptr(unsafe.Pointer(&f[0])), uintptr(len(f))); e == 0 {
				sent.Add(1)
			}
		}
	}()
	asked, answered := 0, 0
	for start := time.Now(); time.Since(start) < 3*time.Second; {
		asked++
		if c.ask(t, request(t, cliMAC, cliMAC, "52:54:00:00:00:01"), time.Second) != nil {
			answered++
		}
	}
	stop.Store(true)
	<-done
	s := waitStats(t, r, "srv0", func(s Stats) bool {
		return s.Unknown+s.Malformed["sender_mismatch"]+s.Malformed["plen"]+s.Malformed["short_frame"]+s.RingDrops >= uint64(sent.Load())
	})
	runtime.GC()
	runtime.ReadMemStats(&after)
	t.Logf("flood: %d bad frames (%.0f/s), counted unknown %d malformed %v, ring drops %d; valid: %d/%d answered; heap in use %d -> %d bytes, %d mallocs",
		sent.Load(), float64(sent.Load())/3, s.Unknown, s.Malformed, s.RingDrops, answered, asked, before.HeapInuse, after.HeapInuse, after.Mallocs-before.Mallocs)
	if answered != asked {
		t.Errorf("%d of %d valid requests unanswered during the flood", asked-answered, asked)
	}
	if sent.Load() < 10000 {
		t.Errorf("only %d flood frames sent: not a flood", sent.Load())
	}
	if grow := int64(after.HeapInuse) - int64(before.HeapInuse); grow > 2<<20 {
		t.Errorf("heap grew by %d bytes during the flood", grow)
	}
	// The test's own client allocates a little per valid request; the
	// responder nothing per bad frame.
	if m := after.Mallocs - before.Mallocs; m > uint64(asked)*50+5000 {
		t.Errorf("%d allocations for %d flood frames and %d requests", m, sent.Load(), asked)
	}
}

// TestARPAdvise: with ARPAdvise, an answered client lands in the server's
// neighbour table (rarpd's SIOCSARP); without, it does not.
func TestARPAdvise(t *testing.T) {
	netnstest.Require(t)
	p := newPair(t, "10.99.255.254/16")
	tbl := holderOf(t, "52:54:00:00:00:01 10.99.0.1", "52:54:00:00:00:02 10.99.0.2")
	c := newClient(t, p.cli, "cli0")
	neigh := func(ip string) string {
		return strings.TrimSpace(p.srv.Exec(t, "ip", "neigh", "show", "dev", "srv0", "to", ip))
	}
	_, stop := serve(t, p.srv, Config{Interfaces: []string{"srv0"}, Table: tbl})
	if c.ask(t, request(t, cliMAC, cliMAC, "52:54:00:00:00:02"), 2*time.Second) == nil {
		t.Fatal("no answer")
	}
	time.Sleep(200 * time.Millisecond)
	if got := neigh("10.99.0.2"); got != "" {
		t.Fatalf("neighbour entry without ARPAdvise: %q", got)
	}
	stop()
	serve(t, p.srv, Config{Interfaces: []string{"srv0"}, Table: tbl, ARPAdvise: true})
	if c.ask(t, request(t, cliMAC, cliMAC, "52:54:00:00:00:01"), 2*time.Second) == nil {
		t.Fatal("no answer")
	}
	netnstest.Eventually(t, 3*time.Second, func() error {
		got := neigh("10.99.0.1")
		if strings.Contains(got, "lladdr 52:54:00:00:00:01") && strings.Contains(got, "REACHABLE") {
			return nil
		}
		return fmt.Errorf("neighbour entry %q, want 10.99.0.1 lladdr 52:54:00:00:00:01 REACHABLE", got)
	})
}
