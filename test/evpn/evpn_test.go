// Package evpn_test runs rig.sh (two FRR hypervisors with iBGP EVPN, VXLAN
// and neigh_suppress, see the script) and shows which of pkg/ipannounce's
// frames, sent from a silent VM's port on hypervisor B, make B advertise the
// VM's MAC+IP (EVPN type-2 with an IP) route, and how fast; and that a
// RARP alone advertises only the MAC.
package evpn_test

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/packet"
	"github.com/vishvananda/netns"

	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/pkg/ipannounce"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

type rig struct {
	t      *testing.T
	prefix string
	env    []string
}

func startRig(t *testing.T) *rig {
	t.Helper()
	netnstest.Require(t, "/usr/lib/frr/zebra", "/usr/lib/frr/bgpd", "vtysh")
	r := &rig{t: t, prefix: fmt.Sprintf("ev%d", os.Getpid()%100000)}
	// FRR drops to user frr: its directory must be reachable for it,
	// which t.TempDir (0700) is not.
	dir, err := os.MkdirTemp("", "rarp-evpn-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	r.env = append(os.Environ(), "EVPN_PREFIX="+r.prefix, "EVPN_DIR="+filepath.Join(dir, "evpn"))
	t.Cleanup(func() {
		if t.Failed() {
			for _, hv := range []string{"hva", "hvb"} {
				for _, log := range []string{"zebra.log", "bgpd.log"} {
					b, _ := os.ReadFile(filepath.Join(r.dir(), hv, log))
					t.Logf("%s %s:\n%s", hv, log, lastLines(string(b), 30))
				}
			}
		}
		if out, err := r.cmd("down").CombinedOutput(); err != nil {
			t.Errorf("rig.sh down: %v\n%s", err, out)
		}
	})
	start := time.Now()
	if out, err := r.cmd("up").CombinedOutput(); err != nil {
		t.Fatalf("rig.sh up: %v\n%s", err, out)
	}
	t.Logf("rig up, iBGP EVPN established in %s", time.Since(start).Round(time.Millisecond))
	return r
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

func (r *rig) dir() string {
	for _, e := range r.env {
		if v, ok := strings.CutPrefix(e, "EVPN_DIR="); ok {
			return v
		}
	}
	return ""
}

func (r *rig) cmd(args ...string) *exec.Cmd {
	c := exec.Command("./rig.sh", args...)
	c.Env = r.env
	return c
}

func (r *rig) run(args ...string) string {
	r.t.Helper()
	out, err := r.cmd(args...).CombinedOutput()
	if err != nil {
		r.t.Fatalf("rig.sh %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (r *rig) ns(name string) string { return r.prefix + name }

// sysctl sets a sysctl inside a rig namespace.
func (r *rig) sysctl(ns, kv string) {
	r.t.Helper()
	if out, err := exec.Command("ip", "netns", "exec", r.ns(ns), "sysctl", "-qw", kv).CombinedOutput(); err != nil {
		r.t.Fatalf("sysctl %s: %v\n%s", kv, err, out)
	}
}

// send writes frames out of dev inside namespace ns, as the VM would.
func (r *rig) send(ns, dev string, frames ...[]byte) {
	r.t.Helper()
	errc := make(chan error, 1)
	go func() {
		// This thread is left in the namespace and never reused.
		runtime.LockOSThread()
		h, err := netns.GetFromName(r.ns(ns))
		if err != nil {
			errc <- err
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			errc <- err
			return
		}
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			errc <- err
			return
		}
		// Protocol 0: a socket that sends and receives nothing.
		c, err := packet.Listen(ifi, packet.Raw, 0, nil)
		if err != nil {
			errc <- err
			return
		}
		defer c.Close()
		for _, f := range frames {
			if _, err := c.WriteTo(f, &packet.Addr{HardwareAddr: f[0:6]}); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	if err := <-errc; err != nil {
		r.t.Fatalf("send on %s/%s: %v", ns, dev, err)
	}
}

// macip returns hv's EVPN type-2 routes for mac: "mac" for a MAC-only
// route, the IP for a MAC+IP one.
func (r *rig) macip(hv string, mac rarp.MAC) map[string]bool {
	r.t.Helper()
	out := r.run("macip", hv)
	got := map[string]bool{}
	needle := "[" + mac.String() + "]"
	for _, l := range strings.Split(out, "\n") {
		i := strings.Index(l, needle)
		if i < 0 || !strings.HasPrefix(strings.TrimSpace(l[:i]), "*") && !strings.Contains(l[:i], "[2]") {
			continue
		}
		rest := l[i+len(needle):]
		// "...:[32]:[10.66.0.10]" or nothing after the MAC.
		if j := strings.LastIndex(rest, ":["); j >= 0 && strings.HasSuffix(strings.TrimSpace(rest), "]") {
			got[strings.TrimSuffix(strings.TrimSpace(rest[j+2:]), "]")] = true
		} else {
			got["mac"] = true
		}
	}
	return got
}

// waitMacIP polls until hv lists key for mac and returns how long that
// took, or false.
func (r *rig) waitMacIP(hv string, mac rarp.MAC, key string, timeout time.Duration) (time.Duration, bool) {
	start := time.Now()
	for {
		if r.macip(hv, mac)[key] {
			return time.Since(start), true
		}
		if time.Since(start) > timeout {
			return time.Since(start), false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func build(t *testing.T, f ipannounce.Frame) []byte {
	t.Helper()
	b, err := f.Build()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func rarpFrame(t *testing.T, mac rarp.MAC) []byte {
	f := rarp.Announce(mac, rarp.VLAN{})
	b, err := f.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestEVPNMacIPRoute: per VM MAC on B's VM port,
//  1. a RARP makes B advertise the MAC alone (baseline: what the agent's
//     RARP does today), and no MAC+IP route appears within 3 s;
//  2. then the IP-layer frame makes B advertise MAC+IP within 2 s.
//
// Cases: a GARP with the SVI's arp_accept=1 (how EVPN VTEPs are set up to
// learn from GARPs), a GARP with arp_accept=0 (Linux's default: the kernel
// keeps no neighbour, so zebra has nothing to advertise), and the directed
// ARP request to the SVI/gateway address with arp_accept=0 (a request to
// the receiver's own IP creates the entry whatever arp_accept says).
func TestEVPNMacIPRoute(t *testing.T) {
	r := startRig(t)
	gw := netip.MustParseAddr("10.66.0.2") // B's SVI (the anycast gateway's role)
	cases := []struct {
		name      string
		arpAccept string // arp_accept (IPv4) or accept_untracked_na (IPv6) on B's SVI
		mac       rarp.MAC
		ip        netip.Addr
		frame     ipannounce.Frame
		want      bool // MAC+IP route expected
	}{
		{"garp arp_accept=1", "1", rarp.MAC{0x52, 0x54, 0, 0x66, 0, 0x10}, netip.MustParseAddr("10.66.0.10"),
			ipannounce.Frame{Kind: ipannounce.GARPRequest}, true},
		{"garp arp_accept=0", "0", rarp.MAC{0x52, 0x54, 0, 0x66, 0, 0x20}, netip.MustParseAddr("10.66.0.20"),
			ipannounce.Frame{Kind: ipannounce.GARPRequest}, false},
		{"gateway arp arp_accept=0", "0", rarp.MAC{0x52, 0x54, 0, 0x66, 0, 0x30}, netip.MustParseAddr("10.66.0.30"),
			ipannounce.Frame{Kind: ipannounce.GatewayARP, Gateway: gw}, true},
		{"na accept_untracked_na=1", "1", rarp.MAC{0x52, 0x54, 0, 0x66, 0, 0x40}, netip.MustParseAddr("fd66::40"),
			ipannounce.Frame{Kind: ipannounce.UnsolicitedNA}, true},
		{"na accept_untracked_na=0", "0", rarp.MAC{0x52, 0x54, 0, 0x66, 0, 0x50}, netip.MustParseAddr("fd66::50"),
			ipannounce.Frame{Kind: ipannounce.UnsolicitedNA}, false},
		{"gateway ns accept_untracked_na=0", "0", rarp.MAC{0x52, 0x54, 0, 0x66, 0, 0x60}, netip.MustParseAddr("fd66::60"),
			ipannounce.Frame{Kind: ipannounce.GatewayNS, Gateway: netip.MustParseAddr("fd66::2")}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r.t = t
			if c.ip.Is4() {
				r.sysctl("hvb", "net.ipv4.conf.br100.arp_accept="+c.arpAccept)
			} else {
				r.sysctl("hvb", "net.ipv6.conf.br100.accept_untracked_na="+c.arpAccept)
			}
			r.send("vmb", "eth0", rarpFrame(t, c.mac))
			for _, hv := range []string{"hvb", "hva"} {
				if d, ok := r.waitMacIP(hv, c.mac, "mac", 5*time.Second); !ok {
					t.Fatalf("no MAC-only route for %s on %s after the RARP (%s)\n%s", c.mac, hv, d, r.run("macip", hv))
				}
			}
			if _, ok := r.waitMacIP("hvb", c.mac, c.ip.String(), 3*time.Second); ok {
				t.Fatalf("MAC+IP route for %s before any IP-layer frame", c.ip)
			}
			f := c.frame
			f.MAC, f.IP = c.mac, c.ip
			r.send("vmb", "eth0", build(t, f))
			// B must advertise within 2 s; A must then have received it.
			d, ok := r.waitMacIP("hvb", c.mac, c.ip.String(), 2*time.Second)
			if ok != c.want {
				t.Fatalf("%s: MAC+IP route %v after %s, want %v\nB:\n%s\nB neighbours:\n%s", f.Kind, ok, d.Round(time.Millisecond), c.want,
					r.run("macip", "hvb"), r.run("vtysh", "hvb", "show evpn arp-cache vni 100"))
			}
			if ok {
				da, okA := r.waitMacIP("hva", c.mac, c.ip.String(), 2*time.Second)
				if !okA {
					t.Fatalf("B advertised %s %s but A did not receive it within 2 s", c.mac, c.ip)
				}
				t.Logf("%s %s: MAC+IP route on B %s after the %s, on A %s later", c.mac, c.ip, d.Round(time.Millisecond), f.Kind, da.Round(time.Millisecond))
			}
		})
	}
}
