//go:build kernelrig

// Tests for what the host's kernel lacks (VLAN-filtering bridges, 802.1Q
// sub-interfaces, bonds): they run in the full-kernel rig,
//
//	test/kernel/run.sh pkg/uplink
package uplink

import (
	"encoding/binary"
	"errors"
	"fmt"
	"testing"
	"time"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// sniffer reads the frames arriving on a device with a packet socket,
// VLAN tag included (the kernel moves a received tag out of the frame into
// PACKET_AUXDATA).
type sniffer struct{ fd int }

func sniff(t testing.TB, ns *netnstest.NS, dev string) *sniffer {
	t.Helper()
	ifi := ns.Interface(t, dev)
	var fd int
	err := ns.Do(func() error {
		var err error
		proto := htons(unix.ETH_P_ALL)
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(proto))
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index}); err != nil {
			return err
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_AUXDATA, 1); err != nil {
			return err
		}
		tv := unix.NsecToTimeval((200 * time.Millisecond).Nanoseconds())
		return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	})
	if err != nil {
		t.Fatalf("sniff %s: %v", dev, err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return &sniffer{fd: fd}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// announce waits for vm's announce and returns its VLAN ID (0: untagged).
func (s *sniffer) announce(t testing.TB, vm rarp.MAC, timeout time.Duration) uint16 {
	t.Helper()
	buf, oob := make([]byte, 2048), make([]byte, 256)
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		n, oobn, _, _, err := unix.Recvmsg(s.fd, buf, oob, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		f := buf[:n]
		if n < 14 || string(f[6:12]) != string(vm[:]) {
			continue
		}
		vid := uint16(0)
		if binary.BigEndian.Uint16(f[12:14]) == rarp.EtherTypeVLAN && n >= 18 {
			vid = binary.BigEndian.Uint16(f[14:16]) & 0x0fff // tag left in the frame
			f = append(f[:12:12], f[16:]...)
		}
		cms, _ := unix.ParseSocketControlMessage(oob[:oobn])
		for _, c := range cms {
			if c.Header.Level == unix.SOL_PACKET && c.Header.Type == unix.PACKET_AUXDATA && len(c.Data) >= int(unsafe.Sizeof(unix.TpacketAuxdata{})) {
				aux := (*unix.TpacketAuxdata)(unsafe.Pointer(&c.Data[0]))
				if aux.Status&unix.TP_STATUS_VLAN_VALID != 0 {
					vid = aux.Vlan_tci & 0x0fff
				}
			}
		}
		if binary.BigEndian.Uint16(f[12:14]) == rarp.EtherTypeRARP {
			return vid
		}
	}
	t.Fatalf("no announce from %s within %v", vm, timeout)
	return 0
}

// fdbVLAN waits until bridge in ns has learned mac on port in vlan.
func fdbVLAN(t testing.TB, ns *netnstest.NS, port string, mac rarp.MAC, vlan int) {
	t.Helper()
	idx := ns.Interface(t, port).Index
	var seen []string
	netnstest.Eventually(t, 2*time.Second, func() error {
		neighs, err := ns.Netlink().NeighList(idx, unix.AF_BRIDGE)
		if err != nil {
			t.Fatal(err)
		}
		seen = seen[:0]
		for _, n := range neighs {
			if n.HardwareAddr.String() == mac.String() {
				if n.Vlan == vlan && n.Flags&netlink.NTF_SELF == 0 {
					return nil
				}
				seen = append(seen, n.String())
			}
		}
		return fmt.Errorf("%s: %s not learned on %s in vlan %d (entries: %v)", ns.Name, mac, port, vlan, seen)
	})
}

// TestRigVLANTrunk: a VLAN-aware bridge with VM ports on PVID 100 and 200
// and a trunk uplink: each VM's announce goes on the uplink tagged with its
// own VLAN, and the VLAN-aware switch learns each MAC in that VLAN. A second
// uplink carrying VLAN 100 as its untagged PVID, to a second switch (one
// switch on both would make a loop for VLAN 100), sends it untagged.
func TestRigVLANTrunk(t *testing.T) {
	netnstest.Require(t)
	ns, sw, sw2 := netnstest.New(t, "hv"), netnstest.New(t, "sw"), netnstest.New(t, "sw2")
	for _, x := range []*netnstest.NS{ns, sw, sw2} {
		x.VLANBridge(t, "br0")
	}
	netnstest.Veth(t, ns, "trunk0", sw, "down0")
	netnstest.Veth(t, ns, "access0", sw2, "down1")
	for _, p := range []struct {
		ns   *netnstest.NS
		port string
		args [][]string
	}{
		{ns, "trunk0", [][]string{{"100"}, {"200"}}},
		{sw, "down0", [][]string{{"100"}, {"200"}}},
		{ns, "access0", [][]string{{"100", "pvid", "untagged"}}},
		{sw2, "down1", [][]string{{"100", "pvid", "untagged"}}},
	} {
		p.ns.Attach(t, p.port, "br0")
		p.ns.Exec(t, "bridge", "vlan", "del", "dev", p.port, "vid", "1")
		for _, a := range p.args {
			p.ns.Exec(t, append([]string{"bridge", "vlan", "add", "dev", p.port, "vid"}, a...)...)
		}
	}
	for _, vid := range []string{"100", "200"} {
		tap := "tap" + vid
		ns.Exec(t, "ip", "tuntap", "add", "dev", tap, "mode", "tap")
		ns.Attach(t, tap, "br0")
		ns.Exec(t, "ip", "link", "set", tap, "up")
		ns.Exec(t, "bridge", "vlan", "del", "dev", tap, "vid", "1")
		ns.Exec(t, "bridge", "vlan", "add", "dev", tap, "vid", vid, "pvid", "untagged")
	}
	h := &hv{ns: ns}
	r := h.open(t)
	trunk, access := ns.Interface(t, "trunk0").Index, ns.Interface(t, "access0").Index
	for _, c := range []struct {
		tap  string
		vid  uint16
		want []Target
	}{
		{"tap100", 100, []Target{{Uplink: Port{trunk, "trunk0"}, VLAN: rarp.VLAN{ID: 100}}, {Uplink: Port{access, "access0"}}}},
		{"tap200", 200, []Target{{Uplink: Port{trunk, "trunk0"}, VLAN: rarp.VLAN{ID: 200}}}},
	} {
		got, err := r.Targets("br0", c.tap, nil)
		if err != nil || len(got) != len(c.want) {
			t.Fatalf("%s: Targets %v, %v; want %v", c.tap, got, err, c.want)
		}
		for i := range got {
			if got[i] != c.want[i] {
				t.Fatalf("%s: Targets %v; want %v", c.tap, got, c.want)
			}
		}
		t.Logf("%s: %s", c.tap, Describe(got))
		vm := rarp.MAC{0x52, 0x54, 0, 0x13, byte(c.vid >> 8), byte(c.vid)}
		s0, s1 := sniff(t, sw, "down0"), sniff(t, sw2, "down1")
		h.send(t, got, vm)
		if vid := s0.announce(t, vm, time.Second); vid != c.vid {
			t.Errorf("%s: the trunk carried the announce in vlan %d, want %d", c.tap, vid, c.vid)
		}
		fdbVLAN(t, sw, "down0", vm, int(c.vid))
		if c.vid == 100 {
			if vid := s1.announce(t, vm, time.Second); vid != 0 {
				t.Errorf("the access uplink carried the announce tagged %d, want untagged", vid)
			}
			fdbVLAN(t, sw2, "down1", vm, 100)
		}
	}
	// The contrast the issue describes: untagged on the bridge device, the
	// frame takes the bridge's own PVID (1), which the trunk does not
	// carry: nothing reaches the switch in VLAN 100.
	vm := rarp.MAC{0x52, 0x54, 0, 0x13, 0xee, 0x01}
	s0 := sniff(t, sw, "down0")
	h.send(t, []Target{{Uplink: Port{Name: "br0"}}}, vm)
	buf := make([]byte, 2048)
	for deadline := time.Now().Add(300 * time.Millisecond); time.Now().Before(deadline); {
		n, _, err := unix.Recvfrom(s0.fd, buf, 0)
		if err == nil && n >= 12 && string(buf[6:12]) == string(vm[:]) {
			t.Fatalf("an untagged frame on the bridge device reached the trunk")
		}
	}

	// A VLAN the uplinks do not carry: say so.
	ns.Exec(t, "bridge", "vlan", "add", "dev", "tap200", "vid", "300", "pvid", "untagged")
	netnstest.Eventually(t, 2*time.Second, func() error {
		_, err := r.Targets("br0", "tap200", nil)
		var nu *NoUplinkError
		if errors.As(err, &nu) && nu.Reason == VLANNotCarried {
			t.Logf("pvid 300: %v", err)
			return nil
		}
		return fmt.Errorf("tap200 on pvid 300: %v, want vlan_not_carried", err)
	})
}

// TestRigVLANSubinterface: eth0.100 in a plain bridge: the announce goes
// untagged on eth0.100 and leaves eth0 tagged 100.
func TestRigVLANSubinterface(t *testing.T) {
	netnstest.Require(t)
	ns, sw := netnstest.New(t, "hv"), netnstest.New(t, "sw")
	ns.Bridge(t, "br1")
	netnstest.Veth(t, ns, "eth0", sw, "down0")
	ns.Exec(t, "ip", "link", "add", "link", "eth0", "name", "eth0.100", "type", "vlan", "id", "100")
	ns.Exec(t, "ip", "link", "set", "eth0.100", "up")
	ns.Attach(t, "eth0.100", "br1")
	ns.Exec(t, "ip", "tuntap", "add", "dev", "tap0", "mode", "tap")
	ns.Attach(t, "tap0", "br1")
	h := &hv{ns: ns}
	r := h.open(t)
	got, err := r.Targets("br1", "tap0", nil)
	if err != nil || len(got) != 1 || got[0].Uplink.Name != "eth0.100" || got[0].VLAN.Tagged() {
		t.Fatalf("Targets %v, %v; want eth0.100 untagged", got, err)
	}
	vm := rarp.MAC{0x52, 0x54, 0, 0x13, 0x01, 0x00}
	s := sniff(t, sw, "down0")
	h.send(t, got, vm)
	if vid := s.announce(t, vm, time.Second); vid != 100 {
		t.Fatalf("the announce left eth0 in vlan %d, want 100", vid)
	}
}

// bondHV is a bridge on a bond of two legs, each a veth to the switch
// namespace, with one VM tap.
func bondHV(t *testing.T, mode string) (*hv, *netnstest.NS) {
	return bondHVVia(t, mode, "bond0")
}

// bondHVVia is bondHV with port (bond0, or a VLAN sub-interface of it made
// here, "bond0.100") as the bridge's uplink.
func bondHVVia(t *testing.T, mode, port string) (*hv, *netnstest.NS) {
	t.Helper()
	netnstest.Require(t)
	ns, sw := netnstest.New(t, "hv"), netnstest.New(t, "sw")
	ns.Bridge(t, "br0")
	sw.Bridge(t, "sw0")
	ns.Exec(t, "ip", "link", "add", "bond0", "type", "bond", "mode", mode, "miimon", "10")
	for _, leg := range []string{"leg0", "leg1"} {
		netnstest.Veth(t, ns, leg, sw, "p"+leg)
		sw.Attach(t, "p"+leg, "sw0")
		ns.Exec(t, "ip", "link", "set", leg, "down")
		ns.Exec(t, "ip", "link", "set", leg, "master", "bond0")
		ns.Exec(t, "ip", "link", "set", leg, "up")
	}
	ns.Exec(t, "ip", "link", "set", "bond0", "up")
	if port != "bond0" {
		ns.Exec(t, "ip", "link", "add", "link", "bond0", "name", port, "type", "vlan", "id", "100")
		ns.Exec(t, "ip", "link", "set", port, "up")
	}
	ns.Attach(t, port, "br0")
	h := &hv{ns: ns}
	h.addTaps(t, 1)
	return h, sw
}

// TestRigBondFailover: failing an active-backup bond's active leg yields
// one bond_failover event naming the bond within 100 ms.
func TestRigBondFailover(t *testing.T) {
	t.Run("bond0", func(t *testing.T) { bondFailover(t, "bond0") })
	// The uplink is a VLAN sub-interface of the bond: the event names
	// the uplink, via the bond.
	t.Run("bond0.100", func(t *testing.T) { bondFailover(t, "bond0.100") })
}

func bondFailover(t *testing.T, uplink string) {
	h, sw := bondHVVia(t, "active-backup", uplink)
	r := h.open(t)
	w := r.Watch(WatchConfig{HoldDown: time.Second})
	defer w.Close()
	w.WatchBridge("br0")
	var active string
	netnstest.WaitWithin(t, 2*time.Second, "an active leg of bond0", func() bool {
		if b, ok := r.Link("bond0"); ok && b.BondActive != 0 {
			for _, leg := range []string{"leg0", "leg1"} {
				if l, _ := r.Link(leg); l.Index == b.BondActive {
					active = leg
				}
			}
		}
		return active != ""
	})
	quiet(t, w, 200*time.Millisecond) // nothing from setting it up
	if ts, err := r.Targets("br0", "vnet0", nil); err != nil || ts[0].Uplink.Name != uplink {
		t.Fatalf("Targets %v, %v; want %s", ts, err, uplink)
	}
	// The cable of the active leg: its switch end goes down (through
	// netlink, so no process start-up counts in the time).
	peer, err := sw.Netlink().LinkByName("p" + active)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := sw.Netlink().LinkSetDown(peer); err != nil {
		t.Fatal(err)
	}
	e := next(t, w, 2*time.Second)
	took := e.At.Sub(start)
	t.Logf("%s failed: %v after %v", active, e, took)
	if e.Reason != BondFailover || e.Uplink.Name != uplink || e.Device.Name != "bond0" {
		t.Fatalf("event %v, want bond_failover on %s via bond0", e, uplink)
	}
	if took > 100*time.Millisecond {
		t.Errorf("failover reported %v after the leg failed, want <= 100ms", took)
	}
	quiet(t, w, 1500*time.Millisecond) // one event, not one per notification
}

// TestRigBond8023ad: an 802.3ad bond's leg failing yields no event: the
// switch sees one LAG.
func TestRigBond8023ad(t *testing.T) {
	h, sw := bondHV(t, "802.3ad")
	r := h.open(t)
	w := r.Watch(WatchConfig{HoldDown: 100 * time.Millisecond})
	defer w.Close()
	w.WatchBridge("br0")
	time.Sleep(300 * time.Millisecond)
	// Drain what setting it up may have produced, then fail a leg.
	for drained := false; !drained; {
		select {
		case e := <-w.Events():
			t.Logf("during set-up: %v", e)
		case <-time.After(200 * time.Millisecond):
			drained = true
		}
	}
	sw.Exec(t, "ip", "link", "set", "pleg0", "down")
	quiet(t, w, time.Second)
	sw.Exec(t, "ip", "link", "set", "pleg0", "up")
	quiet(t, w, time.Second)
	t.Logf("stats %+v", w.Stats())
	// The watcher is alive all the same: the whole LAG going down and
	// coming back (the switch flushed it) is a carrier_up on the bond.
	sw.Exec(t, "ip", "link", "set", "pleg0", "down")
	sw.Exec(t, "ip", "link", "set", "pleg1", "down")
	time.Sleep(300 * time.Millisecond)
	sw.Exec(t, "ip", "link", "set", "pleg0", "up")
	sw.Exec(t, "ip", "link", "set", "pleg1", "up")
	if e := next(t, w, 3*time.Second); e.Reason != CarrierUp || e.Uplink.Name != "bond0" {
		t.Fatalf("event %v, want carrier_up on bond0", e)
	}
}

// TestRigDumpReportsPortsWithoutVLANs: the kernel's bridge dump has an
// entry for every port of a VLAN-filtering bridge, one in no VLAN too, so
// the resolver knows that port's (empty) VLAN table from the dump itself;
// a port the dump did not report (skipped while links were deleted) stays
// unknown, and its NIC falls back to the bridge device instead of being
// skipped as in no VLAN.
func TestRigDumpReportsPortsWithoutVLANs(t *testing.T) {
	netnstest.Require(t)
	ns := netnstest.Uplinked(t, "hv", "br0", true, "up0", "down0")
	ns.Exec(t, "bridge", "vlan", "add", "dev", "up0", "vid", "100")
	ns.Exec(t, "ip", "tuntap", "add", "dev", "bare0", "mode", "tap")
	ns.Attach(t, "bare0", "br0")
	ns.Exec(t, "bridge", "vlan", "del", "dev", "bare0", "vid", "1")
	h := &hv{ns: ns}
	r := h.open(t)
	l, ok := r.Link("bare0")
	if !ok || !l.VLANsKnown || len(l.VLANs) != 0 {
		t.Fatalf("bare0: %+v (found %v); want its VLAN table known from the dump, and empty", l, ok)
	}
	var nu *NoUplinkError
	if _, err := r.Targets("br0", "bare0", nil); !errors.As(err, &nu) || nu.Reason != PortWithoutVLAN {
		t.Errorf("bare0: %v, want port_without_vlan", err)
	}
}
