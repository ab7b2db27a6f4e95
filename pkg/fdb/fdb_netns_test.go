package fdb

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
	"github.com/rarp-announce/rarp-announce/pkg/uplink"
)

const (
	vmMAC     = "52:54:00:12:34:56"
	clientMAC = "02:00:00:00:00:c1" // a station beyond the switch talking to the VM
	vmPort    = "vnet0"
)

var vm = rarp.MAC{0x52, 0x54, 0, 0x12, 0x34, 0x56}

// landed builds the destination host of a migration: netnstest's rig (host
// bridge br0 with an uplink to switch sw0, the old host behind it) plus the
// VM's tap vnet0 on br0, held open as QEMU would hold it.
func landed(t *testing.T) (*netnstest.Rig, *netnstest.Tap) {
	t.Helper()
	netnstest.Require(t)
	rig := netnstest.NewRig(t)
	rig.Host.Exec(t, "ip", "tuntap", "add", "dev", vmPort, "mode", "tap")
	rig.Host.Attach(t, vmPort, netnstest.RigHostBridge)
	rig.Host.Exec(t, "ip", "link", "set", "dev", vmPort, "up")
	tap := netnstest.OpenTap(t, rig.Host, vmPort)
	forwarding(t, rig.Host, vmPort)
	return rig, tap
}

// forwarding waits until br0 forwards on port. A tap's bridge port turns
// from disabled to forwarding only when the kernel's linkwatch work handles
// the carrier coming on, some time after the tap was opened; until then the
// bridge drops (and does not learn from) the tap's frames.
func forwarding(t *testing.T, ns *netnstest.NS, port string) {
	t.Helper()
	netnstest.Eventually(t, 5*time.Second, func() error {
		// 3 is BR_STATE_FORWARDING; ip netns exec mounts the
		// namespace's own sysfs.
		state := strings.TrimSpace(ns.Exec(t, "cat", "/sys/class/net/"+port+"/brport/state"))
		if state == "3" {
			return nil
		}
		return fmt.Errorf("bridge port %s not forwarding (state %s)", port, state)
	})
}

// lookup is one way Repair finds entries and links: a single-entry get (no
// VLAN filtering) or a dump of all tables (VLAN filtering); the links by
// netlink, or from a view (an uplink.Resolver, as the agent's).
type lookup struct {
	name       string
	dump, view bool
	// library: the single-entry lookup and the deletions through the
	// netlink package (a 64 KiB buffer per reply), the way before neighConn.
	library bool
}

// lookups are every combination, and the agent's way (get-view) through
// the netlink package.
var lookups = []lookup{{"get", false, false, false}, {"dump", true, false, false}, {"get-view", false, true, false}, {"dump-view", true, true, false},
	{"get-view-library", false, true, true}}

// netlinkGet is the way without VLAN filtering and without a view.
var netlinkGet = lookups[0]

// eachLookup runs a test once per lookup.
func eachLookup(t *testing.T, test func(t *testing.T, l lookup)) {
	for _, l := range lookups {
		t.Run(l.name, func(t *testing.T) { test(t, l) })
	}
}

// repairer makes a Repairer working in ns, with a view of ns's links if l
// says so.
func repairer(t testing.TB, ns *netnstest.NS, m *Metrics, l lookup) *Repairer {
	t.Helper()
	h, err := netns.GetFromName(ns.Name)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	r, err := New(&h, m)
	if err != nil {
		t.Fatal(err)
	}
	r.forceDump = l.dump
	t.Cleanup(r.Close)
	if l.library {
		s, err := nl.GetNetlinkSocketAt(h, netns.None(), unix.NETLINK_ROUTE)
		if err != nil {
			t.Fatal(err)
		}
		r.library = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: {Socket: s}}
	}
	if l.view {
		r.SetLinks(view(t, ns))
	}
	return r
}

// view opens an uplink.Resolver in ns, closed at the test's end.
func view(t testing.TB, ns *netnstest.NS) *uplink.Resolver {
	t.Helper()
	var v *uplink.Resolver
	if err := ns.Do(func() (err error) { v, err = uplink.Open(uplink.Options{}); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = v.Close() })
	return v
}

// learnOnUplink reproduces the stale entry: the VM, still running on the old
// host, sends a frame; the switch floods it to this host and br0 learns the
// VM's MAC on its uplink.
func learnOnUplink(t *testing.T, rig *netnstest.Rig) {
	t.Helper()
	netnstest.Learn(t, rig.Old, netnstest.RigOldPort, vmMAC)
	if got := rig.Host.WaitFDB(t, netnstest.RigHostBridge, vmMAC, netnstest.RigHostUplink, 2*time.Second); got != netnstest.RigHostUplink {
		t.Fatalf("br0 did not learn %s on the uplink (has %q)", vmMAC, got)
	}
}

// frame builds an Ethernet frame with the local experimental EtherType and
// a marker payload.
func frame(dst, src string, marker byte) []byte {
	d, _ := net.ParseMAC(dst)
	s, _ := net.ParseMAC(src)
	f := make([]byte, 60)
	copy(f, d)
	copy(f[6:], s)
	f[12], f[13] = 0x88, 0xb5
	f[14] = marker
	return f
}

// toVMFromUplink sends a client's frame for the VM into br0 through the
// uplink, as the switch would deliver it, and reports whether the VM's tap
// received it.
func toVMFromUplink(t *testing.T, rig *netnstest.Rig, tap *netnstest.Tap, marker byte) bool {
	t.Helper()
	f := frame(vmMAC, clientMAC, marker)
	netnstest.Send(t, rig.Switch, netnstest.RigSwitchToHost, f)
	_, err := tap.Read(500*time.Millisecond, func(got []byte) bool { return bytes.Equal(got[:15], f[:15]) })
	if err != nil && !errors.Is(err, netnstest.ErrNoFrame) {
		t.Fatal(err)
	}
	return err == nil
}

func TestRepairRemovesStaleUplinkEntry(t *testing.T) {
	eachLookup(t, func(t *testing.T, l lookup) {
		rig, tap := landed(t)
		learnOnUplink(t, rig)

		// The problem, for real: traffic for the VM that arrives on the uplink
		// is dropped by br0, whose table says the VM is behind the uplink.
		if toVMFromUplink(t, rig, tap, 1) {
			t.Fatal("the VM's tap received a frame br0 should have dropped: no stale entry reproduced")
		}

		m := NewMetrics(nil)
		r := repairer(t, rig.Host, m, l)
		removed, err := r.Repair(netnstest.RigHostBridge, vm, vmPort)
		if err != nil {
			t.Fatal(err)
		}
		if len(removed) != 1 || removed[0].Port != netnstest.RigHostUplink || removed[0].VLAN != 0 {
			t.Fatalf("removed %+v, want the uplink entry", removed)
		}
		if removed[0].Age < 0 || removed[0].Age > 10*time.Second {
			t.Fatalf("entry age %v: not the one just learned", removed[0].Age)
		}
		if got, ok := rig.Host.FDB(t, netnstest.RigHostBridge)[vmMAC]; ok {
			t.Fatalf("br0 still has %s on %s", vmMAC, got)
		}
		if got := testutil.ToFloat64(m.removedTotal); got != 1 {
			t.Fatalf("entries removed metric = %v, want 1", got)
		}

		// Now the same traffic is flooded and reaches the VM.
		if !toVMFromUplink(t, rig, tap, 2) {
			t.Fatal("after the repair, a frame for the VM from the uplink did not reach its tap")
		}
		// And as soon as the VM sends, br0 learns it on its own port.
		if err := tap.Write(frame("ff:ff:ff:ff:ff:ff", vmMAC, 3)); err != nil {
			t.Fatal(err)
		}
		if got := rig.Host.WaitFDB(t, netnstest.RigHostBridge, vmMAC, vmPort, 2*time.Second); got != vmPort {
			t.Fatalf("br0 has %s on %q after the VM sent, want %s", vmMAC, got, vmPort)
		}
		if !toVMFromUplink(t, rig, tap, 4) {
			t.Fatal("a frame for the VM from the uplink did not reach its tap after re-learning")
		}
	})
}

func TestRepairWithNothingLearned(t *testing.T) {
	eachLookup(t, func(t *testing.T, l lookup) {
		rig, _ := landed(t)
		m := NewMetrics(nil)
		removed, err := repairer(t, rig.Host, m, l).Repair(netnstest.RigHostBridge, vm, vmPort)
		if err != nil || len(removed) != 0 {
			t.Fatalf("removed %+v, err %v; want nothing, no error", removed, err)
		}
		if got := testutil.ToFloat64(m.repairsTotal); got != 1 {
			t.Fatalf("repairs metric = %v, want 1", got)
		}
	})
}

func TestRepairLeavesTheVMsOwnPort(t *testing.T) {
	eachLookup(t, func(t *testing.T, l lookup) {
		rig, tap := landed(t)
		// The VM already sent from here (QEMU's own RARPs, or guest traffic).
		if err := tap.Write(frame("ff:ff:ff:ff:ff:ff", vmMAC, 1)); err != nil {
			t.Fatal(err)
		}
		if got := rig.Host.WaitFDB(t, netnstest.RigHostBridge, vmMAC, vmPort, 2*time.Second); got != vmPort {
			t.Fatalf("br0 did not learn %s on %s (has %q)", vmMAC, vmPort, got)
		}
		removed, err := repairer(t, rig.Host, nil, l).Repair(netnstest.RigHostBridge, vm, vmPort)
		if err != nil || len(removed) != 0 {
			t.Fatalf("removed %+v, err %v; want nothing", removed, err)
		}
		if got := rig.Host.FDB(t, netnstest.RigHostBridge)[vmMAC]; got != vmPort {
			t.Fatalf("br0 has %s on %q after the repair, want %s untouched", vmMAC, got, vmPort)
		}
	})
}

// Other VMs' and hosts' entries are left alone: only the landed MAC goes.
func TestRepairLeavesOtherMACs(t *testing.T) {
	eachLookup(t, func(t *testing.T, l lookup) {
		rig, _ := landed(t)
		learnOnUplink(t, rig)
		const other = "52:54:00:99:99:99"
		netnstest.Learn(t, rig.Old, netnstest.RigOldPort, other)
		if got := rig.Host.WaitFDB(t, netnstest.RigHostBridge, other, netnstest.RigHostUplink, 2*time.Second); got != netnstest.RigHostUplink {
			t.Fatalf("br0 did not learn %s", other)
		}
		if _, err := repairer(t, rig.Host, nil, l).Repair(netnstest.RigHostBridge, vm, vmPort); err != nil {
			t.Fatal(err)
		}
		fdb := rig.Host.FDB(t, netnstest.RigHostBridge)
		if _, ok := fdb[vmMAC]; ok {
			t.Fatalf("%s still in br0's table", vmMAC)
		}
		if fdb[other] != netnstest.RigHostUplink {
			t.Fatalf("%s lost from br0's table: %v", other, fdb)
		}
	})
}

// Configured entries (what `bridge fdb add` makes) are the operator's, not
// the bridge's learning, and stay.
func TestRepairLeavesConfiguredEntries(t *testing.T) {
	eachLookup(t, func(t *testing.T, l lookup) { configuredEntries(t, l) })
}

func configuredEntries(t *testing.T, l lookup) {
	for _, kind := range [][]string{{"static"}, {"permanent"}, {"static", "sticky"}, {"extern_learn"}} {
		t.Run(kind[0]+map[bool]string{true: "_" + kind[len(kind)-1]}[len(kind) > 1], func(t *testing.T) {
			rig, _ := landed(t)
			rig.Host.Exec(t, append([]string{"bridge", "fdb", "add", vmMAC, "dev", netnstest.RigHostUplink, "master"}, kind...)...)
			before := entries(t, rig.Host.Netlink(), vmMAC)
			if len(before) != 1 {
				t.Fatalf("bridge fdb add made %d entries", len(before))
			}
			removed, err := repairer(t, rig.Host, nil, l).Repair(netnstest.RigHostBridge, vm, vmPort)
			if err != nil || len(removed) != 0 {
				t.Fatalf("removed %+v, err %v; want nothing", removed, err)
			}
			if after := entries(t, rig.Host.Netlink(), vmMAC); len(after) != 1 || after[0].LinkIndex != before[0].LinkIndex {
				t.Fatalf("entry changed: before %+v, after %+v", before, after)
			}
		})
	}
}

// entries lists every AF_BRIDGE entry for mac, whatever its kind.
func entries(t *testing.T, h *netlink.Handle, mac string) []netlink.Neigh {
	t.Helper()
	all, err := h.NeighList(0, unix.AF_BRIDGE)
	if err != nil {
		t.Fatal(err)
	}
	var out []netlink.Neigh
	for _, n := range all {
		if n.HardwareAddr.String() == mac && n.Flags&netlink.NTF_SELF == 0 {
			out = append(out, n)
		}
	}
	return out
}

func TestRepairWithoutCapNetAdmin(t *testing.T) {
	eachLookup(t, func(t *testing.T, l lookup) {
		rig, _ := landed(t)
		learnOnUplink(t, rig)
		m := NewMetrics(nil)
		var removed []Entry
		var err error
		r := repairer(t, rig.Host, m, l)
		withoutNetAdmin(t, rig.Host, func() {
			removed, err = r.Repair(netnstest.RigHostBridge, vm, vmPort)
		})
		if !errors.Is(err, ErrPermission) || !errors.Is(err, unix.EPERM) {
			t.Fatalf("err = %v, want ErrPermission wrapping EPERM", err)
		}
		if len(removed) != 0 {
			t.Fatalf("removed %+v without the capability", removed)
		}
		if got := testutil.ToFloat64(m.failuresTotal.WithLabelValues(ReasonPermission)); got != 1 {
			t.Fatalf("permission failures = %v, want 1", got)
		}
		if got := rig.Host.FDB(t, netnstest.RigHostBridge)[vmMAC]; got != netnstest.RigHostUplink {
			t.Fatalf("entry is on %q; a failed repair must leave it", got)
		}
		t.Logf("error: %v", err)
	})
}

// withoutNetAdmin runs fn on a thread in ns that has dropped CAP_NET_ADMIN
// from its effective set, as an agent started without the capability. The
// kernel checks the capability of the task sending each rtnetlink request
// (seen here: not of the socket's opener), so fn's requests fail with EPERM.
func withoutNetAdmin(t *testing.T, ns *netnstest.NS, fn func()) {
	t.Helper()
	err := ns.Do(func() error {
		// Capabilities are per thread; ns.Do's thread is never reused.
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			return err
		}
		data[0].Effective &^= 1 << unix.CAP_NET_ADMIN
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			return err
		}
		fn()
		return nil
	})
	if err != nil {
		t.Fatalf("drop CAP_NET_ADMIN: %v", err)
	}
}

func TestRepairNoSuchBridge(t *testing.T) {
	rig, _ := landed(t)
	m := NewMetrics(nil)
	r := repairer(t, rig.Host, m, netlinkGet)
	if _, err := r.Repair("nosuchbr", vm, vmPort); !errors.Is(err, ErrNoBridge) {
		t.Fatalf("missing bridge: err = %v, want ErrNoBridge", err)
	}
	if _, err := r.Repair(netnstest.RigHostUplink, vm, vmPort); !errors.Is(err, ErrNotBridge) {
		t.Fatalf("veth as bridge: err = %v, want ErrNotBridge", err)
	}
	if got := testutil.ToFloat64(m.failuresTotal.WithLabelValues(ReasonNoBridge)); got != 2 {
		t.Fatalf("no_bridge failures = %v, want 2", got)
	}
}

// A VM whose tap is not known (or gone) still gets its stale entries
// removed: no port is spared.
func TestRepairWithoutOwnPort(t *testing.T) {
	eachLookup(t, func(t *testing.T, l lookup) {
		rig, _ := landed(t)
		learnOnUplink(t, rig)
		removed, err := repairer(t, rig.Host, nil, l).Repair(netnstest.RigHostBridge, vm, "")
		if err != nil || len(removed) != 1 || removed[0].Port != netnstest.RigHostUplink {
			t.Fatalf("removed %+v, err %v; want the uplink entry", removed, err)
		}
	})
}

// With a view of the links (the agent's topology), a repair makes no
// RTM_GETLINK: the bridge, the VM's port and the removed entry's port come
// from the view. Without one it makes three.
func TestRepairLooksLinksUpInTheView(t *testing.T) {
	for _, tt := range []struct {
		l    lookup
		want int64
	}{{netlinkGet, 3}, {lookups[2], 0}} {
		t.Run(tt.l.name, func(t *testing.T) {
			rig, _ := landed(t)
			learnOnUplink(t, rig)
			r := repairer(t, rig.Host, nil, tt.l)
			removed, err := r.Repair(netnstest.RigHostBridge, vm, vmPort)
			if err != nil || len(removed) != 1 || removed[0].Port != netnstest.RigHostUplink {
				t.Fatalf("removed %+v, err %v; want the uplink entry", removed, err)
			}
			if got := r.getLinks.Load(); got != tt.want {
				t.Errorf("%d RTM_GETLINK requests, want %d", got, tt.want)
			}
		})
	}
}

// staleView knows only what it is given: a view that has not seen a device
// yet, or knows a name as another kind of device.
type staleView map[string]uplink.Link

func (v staleView) Link(name string) (uplink.Link, bool) { l, ok := v[name]; return l, ok }

func (v staleView) LinkByIndex(i int) (uplink.Link, bool) {
	for _, l := range v {
		if l.Index == i {
			return l, true
		}
	}
	return uplink.Link{}, false
}

// Where the view does not know a device, or does not know it as a bridge,
// netlink answers, as without a view: the repair still removes the stale
// entry, still spares the VM's port, and still tells a missing bridge.
func TestRepairLooksUpWhatTheViewLacks(t *testing.T) {
	rig, tap := landed(t)
	uplinkIdx := rig.Host.Interface(t, netnstest.RigHostUplink).Index
	r := repairer(t, rig.Host, nil, netlinkGet)
	// br0 known as something else, the tap unknown, the uplink known.
	r.SetLinks(staleView{
		netnstest.RigHostBridge: {Port: uplink.Port{Index: 9999, Name: netnstest.RigHostBridge}, Kind: "veth"},
		netnstest.RigHostUplink: {Port: uplink.Port{Index: uplinkIdx, Name: netnstest.RigHostUplink}, Kind: "veth"},
	})
	learnOnUplink(t, rig)
	removed, err := r.Repair(netnstest.RigHostBridge, vm, vmPort)
	if err != nil || len(removed) != 1 || removed[0].Port != netnstest.RigHostUplink {
		t.Fatalf("removed %+v, err %v; want the uplink entry", removed, err)
	}
	if got := r.getLinks.Load(); got != 2 {
		t.Errorf("%d RTM_GETLINK requests, want 2 (the bridge, the tap; the uplink's name from the view)", got)
	}
	// The VM's own entry, found through netlink's answer for the tap.
	if err := tap.Write(frame("ff:ff:ff:ff:ff:ff", vmMAC, 1)); err != nil {
		t.Fatal(err)
	}
	if got := rig.Host.WaitFDB(t, netnstest.RigHostBridge, vmMAC, vmPort, 2*time.Second); got != vmPort {
		t.Fatalf("br0 did not learn %s on %s (has %q)", vmMAC, vmPort, got)
	}
	if removed, err := r.Repair(netnstest.RigHostBridge, vm, vmPort); err != nil || len(removed) != 0 {
		t.Fatalf("removed %+v, err %v; want the VM's own entry spared", removed, err)
	}
	if _, err := r.Repair("nosuchbr", vm, vmPort); !errors.Is(err, ErrNoBridge) {
		t.Fatalf("missing bridge: err = %v, want ErrNoBridge", err)
	}
}
