package main

import (
	"strings"
	"testing"
	"time"

	"github.com/rarp-announce/rarp-announce/internal/netnstest"
)

// The proof of issue 2 from the operator's side: the command, run on the
// host, moves the MAC on the upstream switch.
func TestSendMovesTheSwitch(t *testing.T) {
	netnstest.Require(t)
	rig := netnstest.NewRig(t)
	const a, b = "52:54:00:aa:bb:01", "52:54:00:aa:bb:02"
	rig.LearnOnOld(t, a)
	rig.LearnOnOld(t, b)
	r := run(t, rig.Host.Command(binary, "send", "--interface", netnstest.RigHostBridge, "--mac", a, "--mac", b,
		"--rounds", "2", "--initial", "5ms"))
	if r.Code != 0 {
		t.Fatalf("exit %d: %s", r.Code, r.Stderr)
	}
	if n := strings.Count(r.Stdout, " sent\n"); n != 4 {
		t.Fatalf("%d frames reported sent, want 4:\n%s", n, r.Stdout)
	}
	for _, mac := range []string{a, b} {
		if got := rig.Switch.WaitFDB(t, netnstest.RigSwitchBridge, mac, netnstest.RigSwitchToHost, 2*time.Second); got != netnstest.RigSwitchToHost {
			t.Errorf("switch has %s on %q, want %s", mac, got, netnstest.RigSwitchToHost)
		}
	}
}

func TestSendOnDownOrMissingInterfaceExits1(t *testing.T) {
	netnstest.Require(t)
	ns := netnstest.New(t, "down")
	ns.Bridge(t, "br0")
	ns.Exec(t, "ip", "link", "set", "dev", "br0", "down")
	for ifname, want := range map[string]string{"br0": "interface br0: interface is down", "br9": "interface br9: no such interface"} {
		r := run(t, ns.Command(binary, "send", "-i", ifname, "--mac", "52:54:00:aa:bb:cc"))
		if r.Code != 1 || !strings.Contains(r.Stderr, want) {
			t.Errorf("%s: exit %d, stderr %q; want exit 1 and %q", ifname, r.Code, r.Stderr, want)
		}
	}
}
