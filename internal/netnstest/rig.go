package netnstest

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Rig is the smallest network that shows a MAC moving between hosts:
//
//	Old: o0 ──── swo ┐
//	                 sw0 (Switch)
//	Host: br0 ─ uplink ─ swh ┘
//
// Host stands for the hypervisor a VM lands on, Old for where it ran; the
// switch's MAC table says which port it believes the VM is behind.
type Rig struct {
	Switch, Host, Old *NS
}

// Switch-side and host-side names in a Rig.
const (
	RigSwitchBridge = "sw0"
	RigSwitchToHost = "swh"
	RigSwitchToOld  = "swo"
	RigHostBridge   = "br0"
	RigHostUplink   = "uplink"
	RigOldPort      = "o0"
)

// NewRig builds a Rig.
func NewRig(t testing.TB) *Rig {
	t.Helper()
	r := &Rig{Switch: New(t, "sw"), Host: New(t, "hv"), Old: New(t, "old")}
	r.Switch.Bridge(t, RigSwitchBridge)
	r.Host.Bridge(t, RigHostBridge)
	Veth(t, r.Host, RigHostUplink, r.Switch, RigSwitchToHost)
	Veth(t, r.Old, RigOldPort, r.Switch, RigSwitchToOld)
	r.Host.Attach(t, RigHostUplink, RigHostBridge)
	r.Switch.Attach(t, RigSwitchToHost, RigSwitchBridge)
	r.Switch.Attach(t, RigSwitchToOld, RigSwitchBridge)
	return r
}

// LearnOnOld makes the switch learn mac behind the old host's port, as it
// did while the VM ran there, and checks that it did.
func (r *Rig) LearnOnOld(t testing.TB, mac string) {
	t.Helper()
	Learn(t, r.Old, RigOldPort, mac)
	if got := r.Switch.WaitFDB(t, RigSwitchBridge, mac, RigSwitchToOld, 2*time.Second); got != RigSwitchToOld {
		t.Fatalf("switch did not learn %s on %s (has %q)", mac, RigSwitchToOld, got)
	}
}

// Capture is a tcpdump writing a pcap file inside a namespace.
type Capture struct {
	Path string
	cmd  *exec.Cmd
	t    testing.TB
}

// StartCapture runs tcpdump on ifname in ns with a capture filter and
// returns once it is capturing.
func StartCapture(t testing.TB, ns *NS, ifname, filter string) *Capture {
	t.Helper()
	path := filepath.Join(t.TempDir(), ifname+".pcap")
	args := []string{"tcpdump", "-i", ifname, "-U", "--immediate-mode", "-n", "-w", path}
	if filter != "" {
		args = append(args, strings.Fields(filter)...)
	}
	cmd := ns.Command(args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("tcpdump: %v", err)
	}
	c := &Capture{Path: path, cmd: cmd, t: t}
	t.Cleanup(c.stop)
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		var seen []string
		for sc.Scan() {
			seen = append(seen, sc.Text())
			if strings.Contains(sc.Text(), "listening on") {
				ready <- ""
				// Keep draining so tcpdump never blocks on stderr.
				for sc.Scan() {
				}
				return
			}
		}
		ready <- strings.Join(seen, "\n")
	}()
	select {
	case msg := <-ready:
		if msg != "" {
			t.Fatalf("tcpdump on %s did not start: %s", ifname, msg)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("tcpdump on %s did not start within 10s", ifname)
	}
	return c
}

func (c *Capture) stop() {
	if c.cmd.Process == nil || c.cmd.ProcessState != nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGINT)
	done := make(chan struct{})
	go func() { _ = c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = c.cmd.Process.Kill()
		<-done
	}
}

// Stop ends the capture and flushes the file.
func (c *Capture) Stop() string {
	// Give frames in flight a moment to reach the capture.
	time.Sleep(100 * time.Millisecond)
	c.stop()
	return c.Path
}

// Tshark dissects a pcap file and returns one line per frame holding the
// given fields, separated by '|'.
func Tshark(t testing.TB, path string, fields ...string) []string {
	t.Helper()
	args := []string{"-r", path, "-T", "fields", "-E", "separator=|", "-E", "occurrence=a"}
	for _, f := range fields {
		args = append(args, "-e", f)
	}
	cmd := exec.Command("tshark", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tshark %s: %v\n%s", path, err, stderr.String())
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l != "" {
			lines = append(lines, l)
		}
	}
	return lines
}

// RARPFrom counts the RARP frames (EtherType 0x8035) among frames whose
// Ethernet source is mac.
func RARPFrom(frames [][]byte, mac []byte) int {
	n := 0
	for _, f := range frames {
		if len(f) >= 14 && bytes.Equal(f[6:12], mac) && f[12] == 0x80 && f[13] == 0x35 {
			n++
		}
	}
	return n
}

// ReadPcap returns the frames of a classic pcap file (what tcpdump -w
// writes), so a test can compare captured bytes exactly.
func ReadPcap(t testing.TB, path string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 24 {
		t.Fatalf("%s: %d bytes, no pcap header", path, len(b))
	}
	var order binary.ByteOrder
	switch binary.LittleEndian.Uint32(b) {
	case 0xa1b2c3d4, 0xa1b23c4d:
		order = binary.LittleEndian
	case 0xd4c3b2a1, 0x4d3cb2a1:
		order = binary.BigEndian
	default:
		t.Fatalf("%s: not a pcap file (magic %x)", path, b[:4])
	}
	var frames [][]byte
	for p := b[24:]; len(p) >= 16; {
		n := int(order.Uint32(p[8:12]))
		if len(p) < 16+n {
			t.Fatalf("%s: truncated record", path)
		}
		frames = append(frames, p[16:16+n])
		p = p[16+n:]
	}
	return frames
}
