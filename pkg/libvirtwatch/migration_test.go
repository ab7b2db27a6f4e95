package libvirtwatch

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rarp-announce/rarp-announce/internal/libvirtdtest"
	"github.com/rarp-announce/rarp-announce/internal/netnstest"
)

// hypervisor is one simulated host: a network namespace with br0 and a
// migration link, a real libvirtd in it, and a Watcher on its socket.
type hypervisor struct {
	name string
	ns   *netnstest.NS
	d    *libvirtdtest.Daemon
	r    *running
}

func (h *hypervisor) uri() string { return h.d.URI("qemu") }

// events reads h's events of domain dom until one named last (inclusive).
func (h *hypervisor) events(t *testing.T, dom, last string) []Event {
	t.Helper()
	var evs []Event
	for {
		ev := h.r.next(t, 30*time.Second)
		if ev.Domain.Name != dom {
			continue
		}
		evs = append(evs, ev)
		if ev.Name() == last {
			return evs
		}
	}
}

func names(evs []Event) string {
	var s []string
	for _, ev := range evs {
		s = append(s, ev.Name()+"="+ev.Kind.String())
	}
	return strings.Join(s, ", ")
}

func landings(evs []Event) int {
	n := 0
	for _, ev := range evs {
		if ev.Kind == Landed {
			n++
		}
	}
	return n
}

// TestLibvirtdMigration live-migrates a real QEMU domain between two real
// libvirtds (pre-copy A->B, post-copy B->A, pre-copy A->B again after B's
// libvirtd was killed with SIGKILL and restarted) and checks what each
// Watcher makes of libvirt's events: the destination lands exactly once per
// migration, the source only cancels, STARTED/MIGRATED never lands, and a
// restarted libvirtd does not re-announce a domain that already landed.
func TestLibvirtdMigration(t *testing.T) {
	libvirtdtest.RequireQEMU(t)
	nsA, nsB := netnstest.New(t, "lvwa"), netnstest.New(t, "lvwb")
	netnstest.Veth(t, nsA, "mga", nsB, "mgb")
	hosts := []*hypervisor{{name: "a", ns: nsA}, {name: "b", ns: nsB}}
	for i, h := range hosts {
		ip := []string{"10.77.0.1", "10.77.0.2"}[i]
		dev := []string{"mga", "mgb"}[i]
		h.ns.Exec(t, "ip", "addr", "add", ip+"/24", "dev", dev)
		h.ns.Bridge(t, "br0")
		h.d = libvirtdtest.Start(t, libvirtdtest.Options{
			NetNS:    h.ns.Name,
			HostUUID: "6c61622d-0000-4000-8000-00000000000" + h.name,
			QEMUConf: "migration_address = \"" + ip + "\"\nmigration_host = \"" + ip + "\"",
		})
		cfg := realConfig(t, h.d.Socket)
		cfg.Conn.URI = "qemu:///system"
		h.r = startWatcher(t, cfg, 256)
		h.r.waitReady(t, 10*time.Second)
	}
	a, b := hosts[0], hosts[1]

	def := libvirtdtest.XMLFile(t, "qmp1.xml", qemuDomainXML)
	a.d.Virsh(t, a.uri(), "create "+def)
	a.events(t, "qmp1", "started/booted")

	migrate := func(from, to *hypervisor, flags string) {
		t.Helper()
		t0 := time.Now()
		from.d.Virsh(t, from.uri(), "migrate --live "+flags+" qmp1 '"+to.uri()+"'")
		t.Logf("migrate %s %s->%s took %v", flags, from.name, to.name, time.Since(t0).Round(time.Millisecond))
	}
	check := func(what string, dst, src []Event, dstFirstLanding ...string) {
		t.Helper()
		t.Logf("%s: destination: %s", what, names(dst))
		t.Logf("%s: source: %s", what, names(src))
		if landings(dst) != 1 {
			t.Errorf("%s: %d landings on the destination, want 1", what, landings(dst))
		}
		if landings(src) != 0 {
			t.Errorf("%s: %d landings on the source, want 0", what, landings(src))
		}
		if dst[0].Name() != "started/migrated" || dst[0].Kind != Other {
			t.Errorf("%s: destination's first event %s, want started/migrated (other)", what, dst[0])
		}
		for _, ev := range dst {
			if ev.Kind == Landed {
				ok := false
				for _, n := range dstFirstLanding {
					ok = ok || ev.Name() == n
				}
				if !ok {
					t.Errorf("%s: landed on %s, want one of %v", what, ev.Name(), dstFirstLanding)
				}
			}
		}
		for _, ev := range src {
			if ev.Kind != Cancel {
				t.Errorf("%s: source event %s is not a cancel", what, ev)
			}
		}
	}

	// 1. pre-copy A -> B
	migrate(a, b, "")
	check("pre-copy a->b", b.events(t, "qmp1", "resumed/migrated"), a.events(t, "qmp1", "stopped/migrated"), "resumed/migrated")

	// 2. B's libvirtd crashes and comes back: reconnect, resync, no
	// second announce of the same QEMU process
	b.d.Kill(t)
	b.d.Start(t)
	netnstest.WaitFor(t, "b to reconnect", func() bool { return testutil.ToFloat64(b.r.m.reconnects) == 1 && b.r.w.Ready() })
	b.r.expectNone(t, 200*time.Millisecond)

	// 3. post-copy B -> A: pre-copy throttled to 2 MiB/s so that it cannot
	// converge, switched to post-copy once it runs. A lands once.
	t0 := time.Now()
	mig := exec.Command("virsh", "-q", "-c", b.uri(), "migrate", "--live", "--postcopy", "--bandwidth", "2", "qmp1", a.uri())
	out := &strings.Builder{}
	mig.Stdout, mig.Stderr = out, out
	if err := mig.Start(); err != nil {
		t.Fatal(err)
	}
	// switch once the migration job is running and memory is moving
	for i := 0; ; i++ {
		info, _ := b.d.TryVirsh(b.uri(), "domjobinfo qmp1")
		if strings.Contains(info, "Unbounded") && strings.Contains(info, "Memory processed") {
			break
		}
		if i == 200 {
			t.Fatalf("migration job never started:\n%s\n%s", info, out)
		}
		time.Sleep(25 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	b.d.Virsh(t, b.uri(), "migrate-postcopy qmp1")
	if err := mig.Wait(); err != nil {
		t.Fatalf("post-copy migration: %v\n%s", err, out)
	}
	t.Logf("post-copy migration b->a took %v", time.Since(t0).Round(time.Millisecond))
	dst, src := a.events(t, "qmp1", "resumed/migrated"), b.events(t, "qmp1", "stopped/migrated")
	// libvirt 9.0 + QEMU 7.2 here: the destination's only RESUMED often
	// says MIGRATED even in post-copy (QEMU's RESUME reaches libvirt before
	// the postcopy-active status); either way it lands once.
	check("post-copy b->a", dst, src, "resumed/postcopy", "resumed/migrated")
	if got := names(src); !strings.Contains(got, "suspended/postcopy=cancel") {
		t.Errorf("post-copy source events: %s, want suspended/postcopy", got)
	}

	// 4. and back to B, whose watcher reconnected in 2.
	migrate(a, b, "")
	check("pre-copy a->b after b's libvirtd restart", b.events(t, "qmp1", "resumed/migrated"), a.events(t, "qmp1", "stopped/migrated"), "resumed/migrated")

	a.r.expectNone(t, 100*time.Millisecond)
	b.r.expectNone(t, 100*time.Millisecond)
	if got := testutil.ToFloat64(b.r.m.landings.WithLabelValues("event")); got != 2 {
		t.Errorf("b landings{event} = %v, want 2", got)
	}
	if got := testutil.ToFloat64(b.r.m.landings.WithLabelValues("resync")); got != 0 {
		t.Errorf("b landings{resync} = %v, want 0", got)
	}
}
