package uplink

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/pkg/announce"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// hv is a hypervisor in a namespace: bridge br0 with VM taps (held open, so
// they have carrier and the bridge floods to them, as with QEMU) and the
// uplinks given, each a veth to its own switch namespace with bridge sw0.
type hv struct {
	ns       *netnstest.NS
	taps     []string
	tapFDs   []int
	switches []*netnstest.NS
	fars     []*netnstest.NS // behind each switch's "far" port
}

// newHV builds it; each switch also has a port "far" to a namespace standing
// for the rest of the network, where the VM's MAC is learned first.
func newHV(t testing.TB, ntaps int, uplinks ...string) *hv {
	t.Helper()
	netnstest.Require(t)
	h := &hv{ns: netnstest.New(t, "hv")}
	h.ns.Bridge(t, "br0")
	for i, up := range uplinks {
		sw := netnstest.New(t, fmt.Sprintf("sw%d", i))
		sw.Bridge(t, "sw0")
		netnstest.Veth(t, h.ns, up, sw, "down")
		sw.Attach(t, "down", "sw0")
		h.ns.Attach(t, up, "br0")
		far := netnstest.New(t, fmt.Sprintf("far%d", i))
		netnstest.Veth(t, sw, "far", far, "eth0")
		sw.Attach(t, "far", "sw0")
		h.switches = append(h.switches, sw)
		h.fars = append(h.fars, far)
	}
	h.addTaps(t, ntaps)
	return h
}

// tapGroup is the link group of the taps addTaps makes.
const tapGroup = "42"

// addTaps creates n taps vnetN attached to br0 and up, and holds them open
// as QEMU does. They are made persistent first, with one `ip -batch`: at
// the end the namespace's deletion removes them all in one batch, where
// closing 500 non-persistent taps removes them one by one (seconds).
func (h *hv) addTaps(t testing.TB, n int) {
	t.Helper()
	first := len(h.taps)
	var batch strings.Builder
	for i := first; i < first+n; i++ {
		name := fmt.Sprintf("vnet%d", i)
		h.taps = append(h.taps, name)
		fmt.Fprintf(&batch, "tuntap add dev %s mode tap\nlink set dev %s master br0 group %s up\n", name, name, tapGroup)
	}
	path := filepath.Join(t.TempDir(), "taps.batch")
	if err := os.WriteFile(path, []byte(batch.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	h.ns.Exec(t, "ip", "-batch", path)
	err := h.ns.Do(func() error {
		for _, name := range h.taps[first:] {
			fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
			if err != nil {
				return err
			}
			ifr, err := unix.NewIfreq(name)
			if err != nil {
				return err
			}
			ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
			if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
				unix.Close(fd)
				return fmt.Errorf("TUNSETIFF %s: %w", name, err)
			}
			h.tapFDs = append(h.tapFDs, fd)
		}
		return nil
	})
	t.Cleanup(func() {
		for _, fd := range h.tapFDs {
			if fd >= 0 {
				unix.Close(fd)
			}
		}
		h.tapFDs = nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// tapFrames drains every tap and counts the announces from vm the guests
// would have received (tun counts a frame as sent only once it is read, so
// the queues are read, not the counters).
func (h *hv) tapFrames(t testing.TB, vm rarp.MAC) int {
	t.Helper()
	n := 0
	buf := make([]byte, 2048)
	for _, fd := range h.tapFDs {
		for {
			k, err := unix.Read(fd, buf)
			if err != nil {
				if err == unix.EAGAIN {
					break
				}
				t.Fatal(err)
			}
			if k >= 14 && string(buf[6:12]) == string(vm[:]) && buf[12] == 0x80 && buf[13] == 0x35 {
				n++
			}
		}
	}
	return n
}

// open opens a Resolver inside the hypervisor's namespace.
func (h *hv) open(t testing.TB) *Resolver {
	t.Helper()
	var r *Resolver
	err := h.ns.Do(func() error {
		var err error
		r, err = Open(Options{OnError: func(err error) { t.Logf("resolver: %v", err) }})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// send writes vm's announce on each target with pkg/announce's sender.
func (h *hv) send(t testing.TB, targets []Target, vm rarp.MAC) {
	t.Helper()
	for _, tg := range targets {
		var s announce.Sender
		err := h.ns.Do(func() error {
			var err error
			s, err = announce.OpenPacket(tg.Uplink.Name)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		f := rarp.Announce(vm, tg.VLAN)
		frame, err := f.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Send(frame); err != nil {
			t.Fatal(err)
		}
		s.Close()
	}
}

func TestNetnsOneUplinkManyTaps(t *testing.T) {
	h := newHV(t, 500, "uplink0")
	r := h.open(t)
	vm := rarp.MAC{0x52, 0x54, 0x00, 0x13, 0x00, 0x01}
	sw := h.switches[0]
	h.learnFar(t, 0, vm)

	targets, err := r.Targets("br0", "vnet7", nil)
	want := []Target{{Uplink: Port{Index: h.ns.Interface(t, "uplink0").Index, Name: "uplink0"}}}
	if err != nil || len(targets) != 1 || targets[0] != want[0] {
		t.Fatalf("Targets = %v, %v; want %v", targets, err, want)
	}
	h.tapFrames(t, vm)
	h.send(t, targets, vm)
	if got := sw.WaitFDB(t, "sw0", vm.String(), "down", 2*time.Second); got != "down" {
		t.Fatalf("switch has %s on %q after the announce on the uplink, want down", vm, got)
	}
	if got := h.tapFrames(t, vm); got != 0 {
		t.Fatalf("taps received %d announces sent on the uplink, want 0", got)
	}

	// The control: the same frame on the bridge device reaches every tap.
	h.send(t, []Target{{Uplink: Port{Name: "br0"}}}, vm)
	got := 0
	for deadline := time.Now().Add(2 * time.Second); got < 500 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		got += h.tapFrames(t, vm) // the kernel clones to the taps as it goes
	}
	if got != 500 {
		t.Fatalf("a frame on the bridge device reached %d taps, want 500 (is the tap count measured?)", got)
	}
	h.destroy(t)
}

// destroy removes the taps now, in one batch (they are in link group
// tapGroup): left to the namespace's deletion, the kernel removes them in
// the background, holding the lock every link change needs for seconds,
// which delays the link notifications the next test waits for.
func (h *hv) destroy(t testing.TB) {
	t.Helper()
	for i, fd := range h.tapFDs {
		if fd >= 0 {
			unix.Close(fd)
			h.tapFDs[i] = -1
		}
	}
	start := time.Now()
	h.ns.Exec(t, "ip", "link", "delete", "group", tapGroup)
	t.Logf("removing %d taps took %v", len(h.taps), time.Since(start).Round(time.Millisecond))
}

// learnFar makes switch i learn vm behind its far port, where the VM ran
// before: the announce must move it.
func (h *hv) learnFar(t testing.TB, i int, vm rarp.MAC) {
	t.Helper()
	netnstest.Learn(t, h.fars[i], "eth0", vm.String())
	if got := h.switches[i].WaitFDB(t, "sw0", vm.String(), "far", time.Second); got != "far" {
		t.Fatalf("switch %d learned %s on %q before the announce, want far", i, vm, got)
	}
}

func TestNetnsTwoUplinks(t *testing.T) {
	h := newHV(t, 3, "uplink0", "uplink1")
	r := h.open(t)
	vm := rarp.MAC{0x52, 0x54, 0x00, 0x13, 0x00, 0x02}
	h.learnFar(t, 0, vm)
	h.learnFar(t, 1, vm)
	targets, err := r.Targets("br0", "vnet1", nil)
	if err != nil || len(targets) != 2 || targets[0].Uplink.Name == targets[1].Uplink.Name {
		t.Fatalf("Targets = %v, %v; want uplink0 and uplink1", targets, err)
	}
	h.send(t, targets, vm)
	for i, sw := range h.switches {
		if got := sw.WaitFDB(t, "sw0", vm.String(), "down", 2*time.Second); got != "down" {
			t.Errorf("switch %d has %s on %q, want down", i, vm, got)
		}
	}
	if got := h.tapFrames(t, vm); got != 0 {
		t.Fatalf("taps received %d announces, want 0", got)
	}
}

func TestNetnsIsolatedBridge(t *testing.T) {
	h := newHV(t, 3)
	r := h.open(t)
	targets, err := r.Targets("br0", "vnet0", nil)
	var nu *NoUplinkError
	if !errors.As(err, &nu) || nu.Reason != Isolated {
		t.Fatalf("Targets = %v, %v; want no uplink: isolated", targets, err)
	}
	t.Logf("logged as: %v", err)
	_, err = r.Targets("nobr", "vnet0", nil)
	if !errors.Is(err, ErrFallback) {
		t.Fatalf("unknown bridge: %v, want a fallback error", err)
	}
}

func TestNetnsUplinkAddedAfterStart(t *testing.T) {
	h := newHV(t, 3)
	r := h.open(t)
	if _, err := r.Targets("br0", "vnet0", nil); !errors.Is(err, ErrNoUplink) {
		t.Fatalf("before: %v, want no uplink", err)
	}
	sw := netnstest.New(t, "swlate")
	sw.Bridge(t, "sw0")
	netnstest.Veth(t, h.ns, "late0", sw, "down")
	sw.Attach(t, "down", "sw0")
	h.ns.Attach(t, "late0", "br0")
	netnstest.Eventually(t, 2*time.Second, func() error {
		targets, err := r.Targets("br0", "vnet0", nil)
		if err == nil && len(targets) == 1 && targets[0].Uplink.Name == "late0" {
			return nil
		}
		return fmt.Errorf("after adding late0: %v, %v; want late0 untagged", targets, err)
	})
	vm := rarp.MAC{0x52, 0x54, 0x00, 0x13, 0x00, 0x03}
	targets, _ := r.Targets("br0", "vnet0", nil)
	h.send(t, targets, vm)
	if got := sw.WaitFDB(t, "sw0", vm.String(), "down", 2*time.Second); got != "down" {
		t.Fatalf("switch has %s on %q, want down", vm, got)
	}
	// And it leaves again: the port set follows removals too.
	h.ns.Exec(t, "ip", "link", "set", "dev", "late0", "nomaster")
	netnstest.Eventually(t, 2*time.Second, func() error {
		_, err := r.Targets("br0", "vnet0", nil)
		if errors.Is(err, ErrNoUplink) {
			return nil
		}
		return fmt.Errorf("after removing late0: %v, want no uplink", err)
	})
}

// unixCloseTap closes tap i's descriptor: the tap loses carrier, as when
// QEMU exits.
func unixCloseTap(t testing.TB, h *hv, i int) {
	t.Helper()
	if err := unix.Close(h.tapFDs[i]); err != nil {
		t.Fatal(err)
	}
	h.tapFDs[i] = -1
}

// TestNetnsCapNetRawOnly: the resolver starts (subscribes, dumps) on a
// thread holding CAP_NET_RAW alone, as the agent runs, and follows changes.
// Capabilities are per thread for the kernel: ns.Do's thread drops all
// others and is discarded afterwards.
func TestNetnsCapNetRawOnly(t *testing.T) {
	h := newHV(t, 2, "uplink0")
	var r *Resolver
	err := h.ns.Do(func() error {
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		data[0].Effective = 1 << unix.CAP_NET_RAW
		data[0].Permitted = 1 << unix.CAP_NET_RAW
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			return fmt.Errorf("capset: %w", err)
		}
		// Proof that the drop took: CAP_NET_ADMIN's SO_RCVBUFFORCE fails.
		fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_ROUTE)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 1<<20); err == nil {
			return fmt.Errorf("SO_RCVBUFFORCE worked: CAP_NET_ADMIN was not dropped")
		}
		// The contrast: the same dump on a subscribed socket is refused.
		sub, err := nl.Subscribe(unix.NETLINK_ROUTE, unix.RTNLGRP_LINK)
		if err != nil {
			return err
		}
		defer sub.Close()
		req := nl.NewNetlinkRequest(unix.RTM_GETLINK, unix.NLM_F_DUMP)
		req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
		req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: {Socket: sub}}
		if _, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWLINK); !errors.Is(err, unix.EPERM) {
			return fmt.Errorf("dump on a subscribed socket: %v, want EPERM", err)
		}
		r, err = Open(Options{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if ts, err := r.Targets("br0", "vnet0", nil); err != nil || len(ts) != 1 || ts[0].Uplink.Name != "uplink0" {
		t.Fatalf("Targets %v, %v; want uplink0", ts, err)
	}
	h.ns.Exec(t, "ip", "link", "set", "dev", "uplink0", "nomaster")
	netnstest.WaitWithin(t, 2*time.Second, "the resolver to follow the change", func() bool {
		_, err := r.Targets("br0", "vnet0", nil)
		return errors.Is(err, ErrNoUplink)
	})
}

// The subscription fails (here: its socket is closed under the reader, as
// an error the reader does not expect would end it). The reader used to
// stop for good: every bridge NIC fell back to the bridge device, and no
// uplink event came, until the agent restarted. It now subscribes again,
// in the resolver's namespace although it runs on any thread, and reads
// the topology again: a port added while it was blind is seen, and later
// changes arrive as notifications.
func TestNetnsReaderRecoversFromLostSubscription(t *testing.T) {
	h := newHV(t, 2)
	recovered := make(chan struct{}, 4)
	var r *Resolver
	err := h.ns.Do(func() error {
		var err error
		r, err = Open(Options{
			OnError:     func(err error) { t.Logf("resolver: %v", err) },
			OnRecovered: func() { recovered <- struct{}{} },
		})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })

	r.subMu.Lock()
	r.sub.Close()
	r.subMu.Unlock()
	sw := netnstest.New(t, "swlate")
	sw.Bridge(t, "sw0")
	netnstest.Veth(t, h.ns, "late0", sw, "down")
	h.ns.Attach(t, "late0", "br0")
	select {
	case <-recovered:
	case <-time.After(5 * time.Second):
		_, err := r.Targets("br0", "vnet0", nil)
		t.Fatalf("the reader did not recover within 5s (Targets: %v)", err)
	}
	targets, err := r.Targets("br0", "vnet0", nil)
	if err != nil || len(targets) != 1 || targets[0].Uplink.Name != "late0" {
		t.Fatalf("after recovering: %v, %v; want late0 (added while the reader was blind)", targets, err)
	}
	h.ns.Exec(t, "ip", "link", "set", "dev", "late0", "nomaster")
	netnstest.Eventually(t, 2*time.Second, func() error {
		if _, err := r.Targets("br0", "vnet0", nil); !errors.Is(err, ErrNoUplink) {
			return fmt.Errorf("after removing late0: %v, want no uplink (notifications must flow again)", err)
		}
		return nil
	})
}
