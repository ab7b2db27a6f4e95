package fdb

import (
	"bytes"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
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
	deadline := time.Now().Add(5 * time.Second)
	for {
		// 3 is BR_STATE_FORWARDING; ip netns exec mounts the
		// namespace's own sysfs.
		state := strings.TrimSpace(ns.Exec(t, "cat", "/sys/class/net/"+port+"/brport/state"))
		if state == "3" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("bridge port %s not forwarding (state %s)", port, state)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// lookups are the two ways Repair finds entries: a single-entry get (no
// VLAN filtering) and a dump of all tables (VLAN filtering).
var lookups = []struct {
	name string
	dump bool
}{{"get", false}, {"dump", true}}

// eachLookup runs a test once per lookup.
func eachLookup(t *testing.T, test func(t *testing.T, dump bool)) {
	for _, l := range lookups {
		t.Run(l.name, func(t *testing.T) { test(t, l.dump) })
	}
}

// repairer makes a Repairer working in ns.
func repairer(t testing.TB, ns *netnstest.NS, m *Metrics, dump bool) *Repairer {
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
	r.forceDump = dump
	t.Cleanup(r.Close)
	return r
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
	eachLookup(t, func(t *testing.T, dump bool) {
		rig, tap := landed(t)
		learnOnUplink(t, rig)

		// The problem, for real: traffic for the VM that arrives on the uplink
		// is dropped by br0, whose table says the VM is behind the uplink.
		if toVMFromUplink(t, rig, tap, 1) {
			t.Fatal("the VM's tap received a frame br0 should have dropped: no stale entry reproduced")
		}

		m := NewMetrics(nil)
		r := repairer(t, rig.Host, m, dump)
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
	eachLookup(t, func(t *testing.T, dump bool) {
		rig, _ := landed(t)
		m := NewMetrics(nil)
		removed, err := repairer(t, rig.Host, m, dump).Repair(netnstest.RigHostBridge, vm, vmPort)
		if err != nil || len(removed) != 0 {
			t.Fatalf("removed %+v, err %v; want nothing, no error", removed, err)
		}
		if got := testutil.ToFloat64(m.repairsTotal); got != 1 {
			t.Fatalf("repairs metric = %v, want 1", got)
		}
	})
}

func TestRepairLeavesTheVMsOwnPort(t *testing.T) {
	eachLookup(t, func(t *testing.T, dump bool) {
		rig, tap := landed(t)
		// The VM already sent from here (QEMU's own RARPs, or guest traffic).
		if err := tap.Write(frame("ff:ff:ff:ff:ff:ff", vmMAC, 1)); err != nil {
			t.Fatal(err)
		}
		if got := rig.Host.WaitFDB(t, netnstest.RigHostBridge, vmMAC, vmPort, 2*time.Second); got != vmPort {
			t.Fatalf("br0 did not learn %s on %s (has %q)", vmMAC, vmPort, got)
		}
		removed, err := repairer(t, rig.Host, nil, dump).Repair(netnstest.RigHostBridge, vm, vmPort)
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
	eachLookup(t, func(t *testing.T, dump bool) {
		rig, _ := landed(t)
		learnOnUplink(t, rig)
		const other = "52:54:00:99:99:99"
		netnstest.Learn(t, rig.Old, netnstest.RigOldPort, other)
		if got := rig.Host.WaitFDB(t, netnstest.RigHostBridge, other, netnstest.RigHostUplink, 2*time.Second); got != netnstest.RigHostUplink {
			t.Fatalf("br0 did not learn %s", other)
		}
		if _, err := repairer(t, rig.Host, nil, dump).Repair(netnstest.RigHostBridge, vm, vmPort); err != nil {
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
	eachLookup(t, func(t *testing.T, dump bool) { configuredEntries(t, dump) })
}

func configuredEntries(t *testing.T, dump bool) {
	for _, kind := range [][]string{{"static"}, {"permanent"}, {"static", "sticky"}, {"extern_learn"}} {
		t.Run(kind[0]+map[bool]string{true: "_" + kind[len(kind)-1]}[len(kind) > 1], func(t *testing.T) {
			rig, _ := landed(t)
			rig.Host.Exec(t, append([]string{"bridge", "fdb", "add", vmMAC, "dev", netnstest.RigHostUplink, "master"}, kind...)...)
			before := entries(t, rig.Host.Netlink(), vmMAC)
			if len(before) != 1 {
				t.Fatalf("bridge fdb add made %d entries", len(before))
			}
			removed, err := repairer(t, rig.Host, nil, dump).Repair(netnstest.RigHostBridge, vm, vmPort)
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
	eachLookup(t, func(t *testing.T, dump bool) {
		rig, _ := landed(t)
		learnOnUplink(t, rig)
		m := NewMetrics(nil)
		var removed []Entry
		var err error
		r := repairer(t, rig.Host, m, dump)
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
	r := repairer(t, rig.Host, m, false)
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
	eachLookup(t, func(t *testing.T, dump bool) {
		rig, _ := landed(t)
		learnOnUplink(t, rig)
		removed, err := repairer(t, rig.Host, nil, dump).Repair(netnstest.RigHostBridge, vm, "")
		if err != nil || len(removed) != 1 || removed[0].Port != netnstest.RigHostUplink {
			t.Fatalf("removed %+v, err %v; want the uplink entry", removed, err)
		}
	})
}
