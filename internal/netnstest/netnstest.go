// Package netnstest builds real kernel networks for tests: network
// namespaces, bridges, veths, taps and macvtaps, made with iproute2 and read
// back through netlink. It is how tests prove an announce worked: by the
// switch bridge's MAC table, not by a mock.
//
// Tests that need it call Require first. Without root they skip, unless
// RARP_REQUIRE_PRIVILEGED=1 (set by .ci/run), where a skip becomes a failure.
package netnstest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// EnvRequire names the variable that turns privileged skips into failures.
const EnvRequire = "RARP_REQUIRE_PRIVILEGED"

// Require skips t without root and the tools it needs, or fails it when
// EnvRequire is set: CI must never pass by skipping.
func Require(t testing.TB, tools ...string) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, tool := range append([]string{"ip", "bridge"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) == 0 {
		return
	}
	Unavailable(t, "privileged test needs "+strings.Join(missing, ", "))
}

// RequireTools is Require without root: for tests that only run tools
// (tshark on a capture file, systemd-analyze).
func RequireTools(t testing.TB, tools ...string) {
	t.Helper()
	var missing []string
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		Unavailable(t, "test needs "+strings.Join(missing, ", "))
	}
}

// Unavailable skips t for the reason msg, or fails it when EnvRequire is
// set: the one place that decides, so CI never passes by skipping.
func Unavailable(t testing.TB, msg string) {
	t.Helper()
	if os.Getenv(EnvRequire) == "1" {
		t.Fatal(msg + " (" + EnvRequire + "=1 forbids skipping)")
	}
	t.Skip(msg)
}

var seq atomic.Int64

// NS is a named network namespace that lives until the test ends.
type NS struct {
	Name   string
	handle netns.NsHandle
	nl     *netlink.Handle
}

// New creates a namespace with loopback up and IPv6 off (no DAD, router
// solicitations or MLD reports in captures and MAC tables). The name is
// unique to this process: "rt<pid>-<n>-<label>".
func New(t testing.TB, label string) *NS {
	t.Helper()
	name := fmt.Sprintf("rt%d-%d-%s", os.Getpid(), seq.Add(1), label)
	Run(t, "ip", "netns", "add", name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	ns := &NS{Name: name}
	ns.Exec(t, "ip", "link", "set", "lo", "up")
	ns.Exec(t, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
	h, err := netns.GetFromName(name)
	if err != nil {
		t.Fatalf("open netns %s: %v", name, err)
	}
	ns.handle = h
	ns.nl, err = netlink.NewHandleAt(h)
	if err != nil {
		t.Fatalf("netlink in %s: %v", name, err)
	}
	t.Cleanup(func() { ns.nl.Close(); h.Close() })
	return ns
}

// Run runs a command in the current namespace and fails t if it fails.
func Run(t testing.TB, argv ...string) string {
	t.Helper()
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	return string(out)
}

// Command returns argv prefixed to run inside ns.
func (ns *NS) Command(argv ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns.Name}, argv...)...)
}

// Exec runs argv inside ns and fails t if it fails.
func (ns *NS) Exec(t testing.TB, argv ...string) string {
	t.Helper()
	return Run(t, append([]string{"ip", "netns", "exec", ns.Name}, argv...)...)
}

// Netlink is a netlink handle bound to ns.
func (ns *NS) Netlink() *netlink.Handle { return ns.nl }

// Do runs fn on an OS thread switched into ns. Sockets fn opens stay in ns
// after it returns, whichever goroutine then uses them.
func (ns *NS) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		// The thread is discarded afterwards (never unlocked), so no other
		// goroutine can ever run in the wrong namespace.
		runtime.LockOSThread()
		if err := netns.Set(ns.handle); err != nil {
			errc <- fmt.Errorf("setns %s: %w", ns.Name, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// OpenIn wraps an open function (announce.OpenPacket) so that what it
// opens lives in ns: an announce.Opener for ns.
func OpenIn[S any](ns *NS, open func(ifname string) (S, error)) func(ifname string) (S, error) {
	return func(ifname string) (S, error) {
		var s S
		err := ns.Do(func() error {
			var err error
			s, err = open(ifname)
			return err
		})
		return s, err
	}
}

// Uplinked returns a hypervisor namespace named name with bridge
// (VLAN-filtering if vlans) whose port uplink is a veth to peer in a
// second namespace, the switch side.
func Uplinked(t testing.TB, name, bridge string, vlans bool, uplink, peer string) *NS {
	t.Helper()
	hv, sw := New(t, name), New(t, name+"sw")
	if vlans {
		hv.VLANBridge(t, bridge)
	} else {
		hv.Bridge(t, bridge)
	}
	Veth(t, hv, uplink, sw, peer)
	hv.Attach(t, uplink, bridge)
	return hv
}

// HangingDNS makes host-name lookups of a command run in ns wait on a name
// server that never answers: its address sits behind a veth whose peer
// drops the queries (a permanent neighbour entry with a MAC nobody has;
// this kernel has no dummy links), and it returns a shell prefix for "unshare -m sh -c"
// that bind-mounts a resolv.conf naming it (30 s timeout, one attempt) and
// an nsswitch.conf that asks DNS after /etc/hosts.
func (ns *NS) HangingDNS(t testing.TB) string {
	t.Helper()
	ns.Exec(t, "ip", "link", "add", "dns0", "type", "veth", "peer", "name", "dns1")
	ns.Exec(t, "ip", "addr", "add", "192.0.2.2/24", "dev", "dns0")
	ns.Exec(t, "ip", "link", "set", "dns0", "up")
	ns.Exec(t, "ip", "link", "set", "dns1", "up")
	ns.Exec(t, "ip", "neigh", "replace", "192.0.2.1", "lladdr", "02:00:00:00:00:99", "dev", "dns0", "nud", "permanent")
	dir := t.TempDir()
	resolv := filepath.Join(dir, "resolv.conf")
	nss := filepath.Join(dir, "nsswitch.conf")
	for p, content := range map[string]string{resolv: "nameserver 192.0.2.1\noptions timeout:30 attempts:1\n", nss: "hosts: files dns\n"} {
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return fmt.Sprintf("mount --bind %s /etc/resolv.conf && mount --bind %s /etc/nsswitch.conf && ", resolv, nss)
}

// Bridge creates a Linux bridge with STP off, no forwarding delay and the
// default 300 s ageing, and brings it up.
func (ns *NS) Bridge(t testing.TB, name string) {
	t.Helper()
	ns.Exec(t, "ip", "link", "add", name, "type", "bridge", "stp_state", "0", "forward_delay", "0")
	ns.Exec(t, "ip", "link", "set", "dev", name, "up")
}

// VLANBridge is Bridge with VLAN filtering on (802.1Q-aware: each port's
// VLANs and PVID decide what it carries; the full-kernel rig has it).
func (ns *NS) VLANBridge(t testing.TB, name string) {
	t.Helper()
	ns.Exec(t, "ip", "link", "add", name, "type", "bridge", "vlan_filtering", "1", "stp_state", "0", "forward_delay", "0")
	ns.Exec(t, "ip", "link", "set", "dev", name, "up")
}

// Veth joins ns:a to peer:b with a veth pair, both up.
func Veth(t testing.TB, ns *NS, a string, peer *NS, b string) {
	t.Helper()
	Run(t, "ip", "link", "add", a, "netns", ns.Name, "type", "veth", "peer", "name", b, "netns", peer.Name)
	ns.Exec(t, "ip", "link", "set", "dev", a, "up")
	peer.Exec(t, "ip", "link", "set", "dev", b, "up")
}

// Attach enslaves port to bridge.
func (ns *NS) Attach(t testing.TB, port, bridge string) {
	t.Helper()
	ns.Exec(t, "ip", "link", "set", "dev", port, "master", bridge)
}

// Interface looks a device up inside ns.
func (ns *NS) Interface(t testing.TB, name string) *net.Interface {
	t.Helper()
	l, err := ns.nl.LinkByName(name)
	if err != nil {
		t.Fatalf("%s: link %s: %v", ns.Name, name, err)
	}
	a := l.Attrs()
	return &net.Interface{Index: a.Index, MTU: a.MTU, Name: a.Name, HardwareAddr: a.HardwareAddr, Flags: a.Flags}
}

// FDB returns the dynamic (learned) entries of bridge's MAC table: MAC ->
// port name. Permanent and local entries are left out: they are the
// bridge's own addresses, not what it learned.
func (ns *NS) FDB(t testing.TB, bridge string) map[string]string {
	t.Helper()
	br, err := ns.nl.LinkByName(bridge)
	if err != nil {
		t.Fatalf("%s: bridge %s: %v", ns.Name, bridge, err)
	}
	neighs, err := ns.nl.NeighList(0, unix.AF_BRIDGE)
	if err != nil {
		t.Fatalf("%s: fdb: %v", ns.Name, err)
	}
	names := map[int]string{}
	out := map[string]string{}
	for _, n := range neighs {
		if n.MasterIndex != br.Attrs().Index || n.State&(netlink.NUD_PERMANENT|netlink.NUD_NOARP) != 0 {
			continue
		}
		if n.Flags&netlink.NTF_SELF != 0 {
			continue
		}
		name, ok := names[n.LinkIndex]
		if !ok {
			if l, err := ns.nl.LinkByIndex(n.LinkIndex); err == nil {
				name = l.Attrs().Name
			} else {
				name = fmt.Sprintf("if%d", n.LinkIndex)
			}
			names[n.LinkIndex] = name
		}
		out[n.HardwareAddr.String()] = name
	}
	return out
}

// WaitFDB polls bridge's MAC table until mac is learned on port or timeout
// passes; it returns the port last seen ("" if none).
func (ns *NS) WaitFDB(t testing.TB, bridge, mac, port string, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := ns.FDB(t, bridge)[mac]
		if got == port || time.Now().After(deadline) {
			return got
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Learn makes bridge (in ns) learn mac on the port facing from: it sends one
// broadcast frame with source mac from device from in namespace fromNS.
func Learn(t testing.TB, fromNS *NS, from string, mac string) {
	t.Helper()
	hw, err := net.ParseMAC(mac)
	if err != nil {
		t.Fatal(err)
	}
	ifi := fromNS.Interface(t, from)
	err = fromNS.Do(func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		// An IPv4 EtherType with a zero payload: any frame teaches a
		// bridge its source; this one is not RARP, so it cannot be
		// mistaken for an announce in captures.
		frame := make([]byte, 60)
		copy(frame, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
		copy(frame[6:], hw)
		frame[12], frame[13] = 0x88, 0xb5 // IEEE local experimental EtherType
		sa := &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6}
		copy(sa.Addr[:], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
		return unix.Sendto(fd, frame, 0, sa)
	})
	if err != nil {
		t.Fatalf("learn %s via %s: %v", mac, from, err)
	}
}
