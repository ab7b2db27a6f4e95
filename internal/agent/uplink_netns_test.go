package agent_test

// The host strategy sends a bridge NIC's frames out of the bridge's uplinks
// (host.send_on: uplinks, the default), not on the bridge device: the
// switch learns the MAC, no tap of the bridge receives the frames, every
// uplink gets them, a bridge without an uplink gets none (and says why),
// and an uplink added after the agent started is used.

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rarp-announce/rarp-announce/internal/config"
	"github.com/rarp-announce/rarp-announce/internal/libvirtfake"
	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// manyTaps creates n taps prefix0..prefix<n-1> on bridge, up and held
// open as QEMU holds them, in one ip -batch (hundreds of ip calls would
// take longer than the test).
func (h *host) manyTaps(t testing.TB, prefix, bridge string, n int) []*netnstest.Tap {
	t.Helper()
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "tuntap add dev %s%d mode tap\nlink set dev %s%d master %s up\n", prefix, i, prefix, i, bridge)
	}
	path := filepath.Join(t.TempDir(), "taps.batch")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	h.ns.Exec(t, "ip", "-batch", path)
	taps := make([]*netnstest.Tap, n)
	for i := range n {
		taps[i] = netnstest.OpenTap(t, h.ns, fmt.Sprintf("%s%d", prefix, i))
	}
	return taps
}

// isAnnounceOf matches a RARP announce (tagged or not) of mac.
func isAnnounceOf(mac rarp.MAC) func([]byte) bool {
	return func(f []byte) bool {
		if len(f) < 14 {
			return false
		}
		et, rest := binary.BigEndian.Uint16(f[12:14]), f[14:]
		if et == 0x8100 && len(rest) >= 4 {
			et, rest = binary.BigEndian.Uint16(rest[2:4]), rest[4:]
		}
		return et == 0x8035 && bytes.Contains(rest, mac[:])
	}
}

// receivers returns the taps that received an announce of mac; each tap is
// read for up to wait.
func receivers(taps []*netnstest.Tap, mac rarp.MAC, wait time.Duration) []string {
	var mu sync.Mutex
	var got []string
	var wg sync.WaitGroup
	for _, tp := range taps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := tp.Read(wait, isAnnounceOf(mac)); err == nil {
				mu.Lock()
				got = append(got, tp.Name)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return got
}

func TestBridgeNICLeavesOnTheUplinkOnly(t *testing.T) {
	for _, c := range []struct {
		sendOn string
		taps   int
		iface  string
	}{
		{config.SendOnUplinks, 500, netnstest.RigHostUplink},
		// The way before, as the control: the same count sees the
		// bridge flood the frames to every tap.
		{config.SendOnBridge, 5, netnstest.RigHostBridge},
	} {
		t.Run(c.sendOn, func(t *testing.T) {
			h := newHost(t, hostOptions{sendOn: c.sendOn})
			own := h.tap(t, "vnet0", wired)
			others := h.manyTaps(t, "t", netnstest.RigHostBridge, c.taps)
			d := h.newDomain(t, stateOff, 0, "vnet0")
			mac := d.macs[0]
			h.learnOnOld(t, mac)
			h.land(t, d)

			frames := h.frames.wait(t, mac, framesPerBurst, 10*time.Second)
			if got := interfacesOf(frames); len(got) != 1 || got[0] != c.iface {
				t.Errorf("frames went out of %v, want [%s]", got, c.iface)
			}
			if got := h.rig.Switch.WaitFDB(t, netnstest.RigSwitchBridge, mac.String(), netnstest.RigSwitchToHost, 2*time.Second); got != netnstest.RigSwitchToHost {
				t.Errorf("switch has %s on %q, want %s", mac, got, netnstest.RigSwitchToHost)
			}
			got := receivers(append(others, own), mac, 300*time.Millisecond)
			switch c.sendOn {
			case config.SendOnUplinks:
				if len(got) != 0 {
					t.Errorf("%d of %d taps received the announce (%v...); want none", len(got), c.taps+1, got[:min(len(got), 5)])
				}
			case config.SendOnBridge:
				if len(got) != c.taps+1 {
					t.Errorf("%d of %d taps received the announce on the bridge device; want all (the control of the count)", len(got), c.taps+1)
				}
			}
		})
	}
}

func TestBridgeNICOnTwoUplinks(t *testing.T) {
	h := newHost(t, hostOptions{})
	h.tap(t, "vnet0", wired)
	sw2 := netnstest.New(t, "sw2")
	netnstest.Veth(t, h.ns, "uplink2", sw2, "sw2h")
	h.ns.Attach(t, "uplink2", netnstest.RigHostBridge)
	capt := netnstest.StartCapture(t, sw2, "sw2h", "rarp")

	d := h.newDomain(t, stateOff, 0, "vnet0")
	mac := d.macs[0]
	h.land(t, d)
	h.frames.wait(t, mac, 2*framesPerBurst, 10*time.Second)
	time.Sleep(fastSchedule().Duration())
	if got := interfacesOf(h.frames.sent(mac, "")); len(got) != 2 || !strings.Contains(strings.Join(got, ","), netnstest.RigHostUplink) || !strings.Contains(strings.Join(got, ","), "uplink2") {
		t.Errorf("frames went out of %v, want uplink and uplink2", got)
	}
	if got := h.rig.Switch.WaitFDB(t, netnstest.RigSwitchBridge, mac.String(), netnstest.RigSwitchToHost, 2*time.Second); got != netnstest.RigSwitchToHost {
		t.Errorf("switch has %s on %q, want %s", mac, got, netnstest.RigSwitchToHost)
	}
	lines := netnstest.Tshark(t, capt.Stop(), "eth.src")
	n := 0
	for _, l := range lines {
		if l == mac.String() {
			n++
		}
	}
	if n != framesPerBurst {
		t.Errorf("second uplink's peer captured %d announces of %s, want %d (capture: %v)", n, mac, framesPerBurst, lines)
	}
}

func TestIsolatedBridgeThenAnUplinkAdded(t *testing.T) {
	h := newHost(t, hostOptions{})
	// An isolated libvirt network: a bridge with VM taps only, made after
	// the agent started.
	h.ns.Bridge(t, "br1")
	h.ns.Exec(t, "ip", "tuntap", "add", "dev", "vnet9", "mode", "tap")
	h.ns.Attach(t, "vnet9", "br1")
	h.ns.Exec(t, "ip", "link", "set", "dev", "vnet9", "up")
	netnstest.OpenTap(t, h.ns, "vnet9")
	mac := rarp.MAC{0x52, 0x54, 0x00, 0x1a, 0x00, 0x09}
	d := h.nicDomain(t, stateOff, 0, libvirtfake.NIC{MAC: mac.String(), Bridge: "br1", Target: "vnet9"})

	h.land(t, d)
	e := h.waitLogged(t, "bridge NIC not announced: no uplink to send on", d.name, 5*time.Second).ContextMap()
	if e["reason"] != "isolated" || e["bridge"] != "br1" {
		t.Errorf("logged %v, want reason isolated on br1", e)
	}
	h.waitMetric(t, 1, 2*time.Second, "rarp_announce_uplink_unsent_total", "reason=isolated")
	h.waitMetric(t, 1, 2*time.Second, "rarp_announce_nic_announces_total", "strategy=host", "result=skipped")
	h.quiet(t, mac, 200*time.Millisecond, "an isolated bridge")

	// A port added to the bridge later is an uplink from then on.
	ext := netnstest.New(t, "ext")
	netnstest.Veth(t, h.ns, "up1", ext, "ext0")
	h.ns.Attach(t, "up1", "br1")
	capt := netnstest.StartCapture(t, ext, "ext0", "rarp")
	h.land(t, d)
	frames := h.frames.wait(t, mac, framesPerBurst, 5*time.Second)
	if got := interfacesOf(frames); len(got) != 1 || got[0] != "up1" {
		t.Errorf("frames went out of %v, want [up1], the uplink added after start", got)
	}
	time.Sleep(fastSchedule().Duration())
	n := 0
	for _, l := range netnstest.Tshark(t, capt.Stop(), "eth.src") {
		if l == mac.String() {
			n++
		}
	}
	if n != framesPerBurst {
		t.Errorf("the new uplink's peer captured %d announces, want %d", n, framesPerBurst)
	}
	if got := h.metric(t, "rarp_announce_uplink_unsent_total", "reason=isolated"); got != 1 {
		t.Errorf("unsent isolated = %v after the uplink came, want still 1", got)
	}
}
