package qmp_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rarp-announce/rarp-announce/internal/libvirtdtest"
	"github.com/rarp-announce/rarp-announce/internal/metrictest"
	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/pkg/announce"
	"github.com/rarp-announce/rarp-announce/pkg/libvirtconn"
	"github.com/rarp-announce/rarp-announce/pkg/libvirtwatch"
	"github.com/rarp-announce/rarp-announce/pkg/qmp"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// Two NICs on br0: libvirt names them net0 and net1 (the <alias> of the
// live XML, QEMU's device ids).
var twoNICDomain = libvirtdtest.QEMUDomainXML("qmp2", "6c61622d-766d-4000-8000-00000000f102", "52:54:00:f1:02:00", "52:54:00:f1:02:01")

var nicMACs = [2]rarp.MAC{{0x52, 0x54, 0, 0xf1, 2, 0}, {0x52, 0x54, 0, 0xf1, 2, 1}}

// The Announcer's exact command against a real QEMU (Debian 12: 7.2)
// through a real libvirtd (9.0): QEMU accepts the "id" argument and takes
// libvirt's NIC aliases as "interfaces"; it silently accepts aliases that
// name no NIC; a command it lacks is a qmp_error; the read-only socket is
// refused; libvirt marks the domain tainted.
func TestAnnounceSelfRealQEMU(t *testing.T) {
	netnstest.Require(t, "tcpdump")
	ns, d := libvirtdtest.StartQEMU(t, "qmpreal")
	def := libvirtdtest.XMLFile(t, "qmp2.xml", twoNICDomain)
	d.Virsh(t, d.URI("qemu"), "create "+def)
	t.Logf("versions:\n%s", d.Virsh(t, d.URI("qemu"), "version"))

	ctx := context.Background()
	dial := func(socket string) *libvirtconn.Conn {
		c, err := libvirtconn.Dial(ctx, libvirtconn.Config{Socket: socket, URI: "qemu:///system", RPCTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	rw := dial(d.Socket)
	ref, err := rw.LookupDomain(ctx, "qmp2")
	if err != nil {
		t.Fatal(err)
	}
	if got := d.Virsh(t, d.URI("qemu"), "dominfo qmp2"); strings.Contains(got, "custom monitor") {
		t.Fatalf("tainted before any monitor command:\n%s", got)
	}
	monitor := func(c *libvirtconn.Conn) qmp.Monitor {
		return func(ctx context.Context, uuid, cmd string) (string, error) {
			return c.QEMUMonitorCommand(ctx, libvirtwatch.DomainRef{UUID: uuid}, cmd)
		}
	}
	reg := prometheus.NewRegistry()
	m := qmp.NewMetrics(nil)
	reg.MustRegister(m)
	a := &qmp.Announcer{Monitor: monitor(rw), Metrics: m}

	// announce runs one AnnounceSelf and counts each NIC's RARPs on br0.
	announceOn := func(a *qmp.Announcer, aliases ...string) ([2]int, error) {
		t.Helper()
		capture := netnstest.StartCapture(t, ns, "br0", "rarp")
		err := a.AnnounceSelf(ctx, ref.UUID, aliases, announce.DefaultSchedule())
		time.Sleep(1200 * time.Millisecond) // QEMU's schedule ends at +800 ms
		frames := netnstest.ReadPcap(t, capture.Stop())
		var n [2]int
		for i, mac := range nicMACs {
			n[i] = netnstest.RARPFrom(frames, mac[:])
		}
		return n, err
	}
	for _, c := range []struct {
		aliases []string
		want    [2]int
	}{
		{[]string{"net0"}, [2]int{5, 0}},
		{[]string{"net1", "net0"}, [2]int{5, 5}},
		// QEMU 7.2 does not check the names: a wrong alias is a success
		// that sends nothing. The agent takes aliases from the live XML.
		{[]string{"net9"}, [2]int{0, 0}},
		// the netdev's id is not the NIC's name
		{[]string{"hostnet0"}, [2]int{0, 0}},
	} {
		n, err := announceOn(a, c.aliases...)
		if err != nil {
			t.Errorf("announce-self on %v: %v", c.aliases, err)
		}
		if n != c.want {
			t.Errorf("announce-self on %v: RARPs from net0, net1 = %v, want %v", c.aliases, n, c.want)
		}
	}
	if got := counter(t, reg, "ok"); got != 4 {
		t.Errorf("ok = %v, want 4", got)
	}

	// Two announces at once: the landing's on net0 (5 rounds), then the
	// guest's ask (1 round) on net1 and on net0. QEMU runs one timer per
	// id and a second announce-self with the same id replaces the first:
	// with one id for all (as before the review), net0 got 1 RARP of its
	// 5. Each runs to its end now.
	capture := netnstest.StartCapture(t, ns, "br0", "rarp")
	if err := a.AnnounceSelf(ctx, ref.UUID, []string{"net0"}, announce.DefaultSchedule()); err != nil {
		t.Fatal(err)
	}
	guest := &qmp.Announcer{Monitor: monitor(rw), Metrics: m, Name: "rarp-announce-guest"}
	once := announce.DefaultSchedule()
	once.Rounds = 1
	for _, alias := range []string{"net1", "net0"} {
		if err := guest.AnnounceSelf(ctx, ref.UUID, []string{alias}, once); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(1200 * time.Millisecond)
	frames := netnstest.ReadPcap(t, capture.Stop())
	if n0, n1 := netnstest.RARPFrom(frames, nicMACs[0][:]), netnstest.RARPFrom(frames, nicMACs[1][:]); n0 != 6 || n1 != 1 {
		t.Errorf("concurrent announces: RARPs from net0, net1 = %d, %d; want 6 (5 + the guest's 1), 1", n0, n1)
	}
	if got := counter(t, reg, "ok"); got != 7 {
		t.Errorf("ok = %v, want 7", got)
	}

	// Two bursts 200 ms apart, each 800 ms long: the second announce-self
	// (same NICs, same timer) waits until QEMU sent the first's last round,
	// else it replaces the rounds left (a plain ticker, as before the review,
	// gave 8 RARPs of 10).
	capture = netnstest.StartCapture(t, ns, "br0", "rarp")
	two := announce.DefaultSchedule()
	two.Bursts, two.BurstInterval = 2, 200*time.Millisecond
	if err := a.AnnounceSelf(ctx, ref.UUID, []string{"net0"}, two); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // the second burst starts at 850 ms and lasts 800
	frames = netnstest.ReadPcap(t, capture.Stop())
	if n := netnstest.RARPFrom(frames, nicMACs[0][:]); n != 10 {
		t.Errorf("two bursts of 5: %d RARPs from net0, want 10", n)
	}
	if got := counter(t, reg, "ok"); got != 9 {
		t.Errorf("ok = %v, want 9", got)
	}

	// A command QEMU lacks (as announce-self before QEMU 4.0): libvirt's
	// call succeeds, QEMU's error is in the reply.
	lacking := &qmp.Announcer{Metrics: m, Monitor: func(ctx context.Context, uuid, cmd string) (string, error) {
		return monitor(rw)(ctx, uuid, strings.Replace(cmd, `"announce-self"`, `"announce-self-x"`, 1))
	}}
	n, err := announceOn(lacking, "net0")
	if !errors.Is(err, qmp.ErrQMP) || !strings.Contains(err.Error(), "CommandNotFound: The command announce-self-x has not been found") {
		t.Errorf("unknown command: %v, want QEMU's CommandNotFound", err)
	}
	if n != [2]int{} {
		t.Errorf("unknown command sent %v RARPs", n)
	}
	if got := counter(t, reg, "qmp_error"); got != 1 {
		t.Errorf("qmp_error = %v, want 1", got)
	}

	// The read-only socket: libvirt refuses before QEMU sees anything.
	ro := &qmp.Announcer{Monitor: monitor(dial(d.ROSocket)), Metrics: m}
	n, err = announceOn(ro, "net0")
	if err == nil || !strings.Contains(err.Error(), "read only access prevents virDomainQemuMonitorCommand") {
		t.Errorf("read-only socket: %v, want libvirt's refusal", err)
	}
	if n != [2]int{} {
		t.Errorf("read-only socket: %v RARPs sent", n)
	}
	if got := counter(t, reg, "rpc_error"); got != 1 {
		t.Errorf("rpc_error = %v, want 1", got)
	}

	// libvirt marks the domain tainted, once, in dominfo and the domain log.
	if got := d.Virsh(t, d.URI("qemu"), "dominfo qmp2"); !strings.Contains(got, "tainted: custom monitor control commands issued") {
		t.Errorf("dominfo does not show the taint:\n%s", got)
	}
	logText, err := os.ReadFile(filepath.Join(d.Dir, "log", "qemu", "qmp2.log"))
	if err != nil {
		t.Fatal(err)
	}
	if c := strings.Count(string(logText), "is tainted: custom-monitor"); c != 1 {
		t.Errorf(`domain log has "is tainted: custom-monitor" %d times, want 1:\n%s`, c, logText)
	}
	for _, l := range strings.Split(string(logText), "\n") {
		if strings.Contains(l, "tainted") {
			t.Logf("domain log: %s", l)
		}
	}
}

func counter(t *testing.T, reg *prometheus.Registry, result string) float64 {
	t.Helper()
	v, ok := metrictest.Gathered(t, reg, "rarp_announce_qmp_announce_self_total", "result="+result)
	if !ok {
		t.Fatalf("no result %q", result)
	}
	return v
}
