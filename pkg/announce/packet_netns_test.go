package announce

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// openIn returns an Opener whose sockets live in ns.
func openIn(ns *netnstest.NS) Opener { return netnstest.OpenIn(ns, OpenPacket) }

const vmMAC = "52:54:00:aa:bb:cc"

// announceOnRig announces vmMAC on the host bridge of a rig whose switch
// learned it on the old host first, capturing (pcap filter) what enters
// the switch from the host, and returns once the announce is done. req
// gives the VLAN and schedule.
func announceOnRig(t *testing.T, filter string, req Request) (*netnstest.Rig, *netnstest.Capture, *Handle) {
	t.Helper()
	netnstest.Require(t, "tcpdump", "tshark")
	rig := netnstest.NewRig(t)
	rig.LearnOnOld(t, vmMAC)
	capture := netnstest.StartCapture(t, rig.Switch, netnstest.RigSwitchToHost, filter)

	a := New(Options{Open: openIn(rig.Host)})
	t.Cleanup(func() { a.Close() })
	req.MAC, req.Interface = rarp.MAC{0x52, 0x54, 0, 0xaa, 0xbb, 0xcc}, netnstest.RigHostBridge
	h := mustAnnounce(t, a, req)
	<-h.Done()
	return rig, capture, h
}

func TestPacketAnnounceMovesTheSwitch(t *testing.T) {
	s := DefaultSchedule()
	s.Rounds = 2
	rig, capture, h := announceOnRig(t, "ether proto 0x8035", Request{Schedule: s})
	if h.Err() != nil || h.Sent() != 2 {
		t.Fatalf("sent %d, err %v", h.Sent(), h.Err())
	}
	if got := rig.Switch.WaitFDB(t, netnstest.RigSwitchBridge, vmMAC, netnstest.RigSwitchToHost, 2*time.Second); got != netnstest.RigSwitchToHost {
		t.Fatalf("switch has %s on %q after the announce, want %s", vmMAC, got, netnstest.RigSwitchToHost)
	}
	// The host's own bridge does not learn from frames the host sends: it
	// still points the VM's MAC at the uplink. This is the stale entry
	// the agent must repair before announcing (DESIGN-NOTES section 3).
	if got := rig.Host.FDB(t, netnstest.RigHostBridge)[vmMAC]; got != netnstest.RigHostUplink {
		t.Fatalf("host bridge has %s on %q; expected the stale uplink entry", vmMAC, got)
	}

	path := capture.Stop()
	frames := netnstest.ReadPcap(t, path)
	if len(frames) != 2 {
		t.Fatalf("captured %d RARP frames on the uplink, want 2", len(frames))
	}
	want := rarp.Announce(rarp.MAC{0x52, 0x54, 0, 0xaa, 0xbb, 0xcc}, rarp.VLAN{})
	wantBytes, _ := want.MarshalBinary()
	if !bytes.Equal(frames[0], wantBytes) {
		t.Fatalf("wire bytes differ from QEMU's announce:\n got %x\nwant %x", frames[0], wantBytes)
	}
	lines := netnstest.Tshark(t, path, "frame.len", "eth.dst", "eth.src", "eth.type", "arp.opcode",
		"arp.src.hw_mac", "arp.src.proto_ipv4", "arp.dst.hw_mac", "arp.dst.proto_ipv4", "_ws.col.Info")
	wantLine := "60|ff:ff:ff:ff:ff:ff|52:54:00:aa:bb:cc|0x8035|3|52:54:00:aa:bb:cc|0.0.0.0|52:54:00:aa:bb:cc|0.0.0.0|Who is 52:54:00:aa:bb:cc? Tell 52:54:00:aa:bb:cc"
	if len(lines) != 2 || lines[0] != wantLine {
		t.Fatalf("tshark dissects\n%q\nwant\n%q", lines, wantLine)
	}
}

func TestTaggedAnnounceLeavesTheUplinkTagged(t *testing.T) {
	rig, capture, h := announceOnRig(t, "", Request{VLAN: rarp.VLAN{ID: 100, Priority: 5}, Schedule: Schedule{Rounds: 1, Bursts: 1}})
	if h.Err() != nil {
		t.Fatal(h.Err())
	}
	if got := rig.Switch.WaitFDB(t, netnstest.RigSwitchBridge, vmMAC, netnstest.RigSwitchToHost, 2*time.Second); got != netnstest.RigSwitchToHost {
		t.Fatalf("switch has %s on %q after a tagged announce", vmMAC, got)
	}
	path := capture.Stop()
	lines := netnstest.Tshark(t, path, "frame.len", "vlan.id", "vlan.priority", "eth.src", "arp.opcode", "arp.dst.hw_mac")
	want := "64|100|5|52:54:00:aa:bb:cc|3|52:54:00:aa:bb:cc"
	if !slices.Contains(lines, want) {
		t.Fatalf("no tagged announce on the uplink; tshark saw %q, want %q", lines, want)
	}
	// Our own decoder agrees. The capture may hold other frames of the
	// namespace (IPv6 multicast listener reports): look for ours.
	found := false
	for _, b := range netnstest.ReadPcap(t, path) {
		var f rarp.Frame
		if f.UnmarshalBinary(b) == nil && f.VLAN.ID == 100 && f.VLAN.Priority == 5 {
			found = true
		}
	}
	if !found {
		t.Fatal("no frame of the capture decodes as a RARP announce tagged 100, priority 5")
	}
}

func TestSendOnDownOrMissingInterfaceFails(t *testing.T) {
	netnstest.Require(t)
	rig := netnstest.NewRig(t)
	rig.Host.Exec(t, "ip", "link", "set", netnstest.RigHostBridge, "down")
	a := New(Options{Open: openIn(rig.Host)})
	defer a.Close()
	for _, c := range []struct {
		ifname string
		want   error
	}{{netnstest.RigHostBridge, ErrInterfaceDown}, {"nosuch0", ErrNoInterface}} {
		h := mustAnnounce(t, a, Request{MAC: rarp.MAC{0x52, 0x54, 0, 0, 0, 1}, Interface: c.ifname, Schedule: Schedule{Rounds: 1, Bursts: 1}})
		<-h.Done()
		if !errors.Is(h.Err(), c.want) || h.Sent() != 0 {
			t.Fatalf("%s: err %v (sent %d), want %v", c.ifname, h.Err(), h.Sent(), c.want)
		}
	}
}

// A device deleted and created again under the same name (a bond or VLAN
// device rebuilt) while the announcer keeps a socket on the old one
// (Warm): the next announce's first frame goes out on the new device. It
// used to fail with "no such interface", the socket being reopened only
// for the repeat.
func TestFirstFrameAfterTheDeviceWasRecreated(t *testing.T) {
	netnstest.Require(t)
	x, y := netnstest.New(t, "rx"), netnstest.New(t, "ry")
	netnstest.Veth(t, x, "va", y, "vb")
	a := New(Options{Open: openIn(x)})
	defer a.Close()
	mac := rarp.MAC{0x52, 0x54, 0, 0, 0, 1}
	h := mustAnnounce(t, a, Request{MAC: mac, Interface: "va", Schedule: Schedule{Rounds: 1, Bursts: 1}})
	<-h.Done()
	if h.Err() != nil {
		t.Fatal(h.Err())
	}
	x.Exec(t, "ip", "link", "del", "dev", "va")
	netnstest.Veth(t, x, "va", y, "vb")
	h = mustAnnounce(t, a, Request{MAC: mac, Interface: "va", Schedule: Schedule{Rounds: 1, Bursts: 1}})
	<-h.First()
	if err := h.FirstErr(); err != nil {
		t.Fatalf("first frame on the re-created va: %v", err)
	}
}

// An empty frame is refused with the interface named, before any system
// call (the send reads its first byte's address).
func TestSendRefusesAnEmptyFrame(t *testing.T) {
	netnstest.Require(t)
	x, y := netnstest.New(t, "ex"), netnstest.New(t, "ey")
	netnstest.Veth(t, x, "va", y, "vb")
	s, err := openIn(x)("va")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Send(nil); err == nil || !strings.Contains(err.Error(), "va: empty frame") {
		t.Fatalf("Send(nil) = %v, want va: empty frame", err)
	}
}
