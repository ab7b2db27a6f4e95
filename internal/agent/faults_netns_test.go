package agent_test

import (
	"testing"
	"time"

	"github.com/rarp-announce/rarp-announce/internal/libvirtfake"
	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/pkg/announce"
)

// Issue 11 #1: a landing whose live-XML read fails because the connection
// to libvirt goes (libvirtd dies mid-call, or a call times out and the
// connection is closed) is not lost. The watcher marked the domain landed
// when it relayed RESUMED/MIGRATED, and the resync after the reconnect
// finds the same QEMU process running and does not land it again: only
// the agent retrying the read within readiness.timeout announces it. The
// proof is the switch's MAC table, which before the fix kept the MAC on
// the old host's port.
func TestLandingSurvivesLostXMLRead(t *testing.T) {
	const pausedMigration, statePaused = 2, 3
	for _, tc := range []struct {
		name  string
		fault func(h *host)
	}{
		// The first GetXMLDesc after the landing closes the connection.
		{"dropped", func(h *host) {
			h.fake.DropNext(libvirtfake.ProgramRemote, libvirtfake.ProcDomainGetXMLDesc, 1)
		}},
		// The first GetXMLDesc is never answered: the watcher's 2 s RPC
		// timeout closes the connection. libvirtd answers again after.
		{"timeout", func(h *host) {
			h.fake.Hang(libvirtfake.ProgramRemote, libvirtfake.ProcDomainGetXMLDesc, true)
			calls := xmlCalls(h)
			go func() {
				for xmlCalls(h) == calls {
					time.Sleep(5 * time.Millisecond)
				}
				h.fake.Hang(libvirtfake.ProgramRemote, libvirtfake.ProcDomainGetXMLDesc, false)
			}()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHost(t, hostOptions{})
			h.tap(t, "vnet0", wired)
			// The incoming migration already started (paused, with a
			// QEMU process id); no STARTED/MIGRATED reaches the agent,
			// so nothing was prefetched: the XML is read at landing.
			d := h.newDomain(t, statePaused, pausedMigration, "vnet0")
			h.learnOnOld(t, d.macs[0])

			tc.fault(h)
			at := h.emit(t, d, resumedMigrated)
			h.frames.wait(t, d.macs[0], framesPerBurst, 8*time.Second)
			took := time.Since(at)
			t.Logf("announced %v after the landing (readiness.timeout 10s)", took)
			if got := h.rig.Switch.WaitFDB(t, netnstest.RigSwitchBridge, d.macs[0].String(), netnstest.RigSwitchToHost, 2*time.Second); got != netnstest.RigSwitchToHost {
				t.Errorf("switch has %s on %q, want %s", d.macs[0], got, netnstest.RigSwitchToHost)
			}
			if got := h.metric(t, "rarp_announce_landing_errors_total", "reason", "xml"); got != 0 {
				t.Errorf("landing_errors{xml} = %v, want 0", got)
			}
			if got := h.metric(t, "rarp_announce_libvirt_reconnects_total"); got < 1 {
				t.Errorf("libvirt reconnects = %v: the fault did not take the connection", got)
			}
			h.waitLogged(t, "read the live XML after libvirt came back", d.name, time.Second)
			// Once per migration: the resync did not land it a second time.
			time.Sleep(fastSchedule().Duration() + 200*time.Millisecond)
			if got := h.frames.count(d.macs[0]); got != framesPerBurst {
				t.Errorf("%d frames for %s, want one burst (%d)", got, d.macs[0], framesPerBurst)
			}
		})
	}
}

// Issue 11 #3 (brief item 2): with a refresh schedule, no refresh frame
// goes out while libvirtd is down (the VM may have been rebuilt on another
// host meanwhile); after libvirtd comes back, refreshes resume for the
// domain the resync finds running here, and not for the one gone.
func TestRefreshSuspendedWhileLibvirtDown(t *testing.T) {
	s := defaultSettings()
	s.Schedule.Refresh = announce.MinRefresh // 1 s
	h := newHost(t, hostOptions{settings: s})
	h.tap(t, "vnet0", wired)
	h.tap(t, "vnet1", wired)
	stays := h.newDomain(t, stateOff, 0, "vnet0")
	goes := h.newDomain(t, stateOff, 0, "vnet1")
	h.land(t, stays)
	h.land(t, goes)
	// The bursts, then at least one refresh frame each: refreshes run.
	h.frames.wait(t, stays.macs[0], framesPerBurst+1, 5*time.Second)
	h.frames.wait(t, goes.macs[0], framesPerBurst+1, 5*time.Second)
	domStays, _ := h.fake.Domain(stays.name)

	// libvirtd stops: the socket is gone, connections dropped.
	path := h.fake.Path()
	h.fake.Close()
	netnstest.WaitFor(t, "watcher not ready", func() bool { return !h.watcher.Ready() })
	time.Sleep(100 * time.Millisecond) // the agent handles the Disconnected event
	down := time.Now()
	time.Sleep(3500 * time.Millisecond) // three refresh periods and a half
	for _, d := range []domain{stays, goes} {
		if n := h.frames.after(d.macs[0], down); n != 0 {
			t.Errorf("%s: %d frames while libvirtd was down, want 0", d.name, n)
		}
	}

	// libvirtd is back; "goes" was rebuilt elsewhere (not here any more),
	// "stays" is the same QEMU process.
	h.libvirtdBack(t, path, domStays, stays, goes)
	if n := len(h.logged("landed", stays.name)); n != 1 {
		t.Errorf("%s landed %d times, want once (the resync must not land the same QEMU process again)", stays.name, n)
	}
}

// An uplink event re-announced two domains that run here but never landed
// here (booted here), with a refresh schedule. libvirtd goes away; one of
// the domains is destroyed meanwhile (an HA controller rebuilds it on
// another host). A resync cancels only the landings it remembers, so no
// event ever says that domain left: the listing after the resync must end
// its re-announce before refreshes resume, or its MAC is refreshed from
// here forever, flapping against the host now running it (found in
// review; it failed so before the fix). The other domain's refreshes go
// on.
func TestReannounceOfDomainGoneWhileLibvirtDownEnds(t *testing.T) {
	s := uplinkSettings()
	s.Schedule.Refresh = announce.MinRefresh // 1 s
	var stays, goes domain
	h := newHost(t, hostOptions{settings: s, holdDown: 200 * time.Millisecond, before: func(h *host) {
		h.tap(t, "vnet1", wired)
		h.tap(t, "vnet2", wired)
		stays = h.newDomain(t, stateRunning, reasonBooted, "vnet1")
		goes = h.newDomain(t, stateRunning, reasonBooted, "vnet2")
	}})
	h.waitRegistry(t, 2)
	h.flap(t, netnstest.RigSwitchToHost)
	for _, d := range []domain{stays, goes} {
		// The bursts, then a refresh frame.
		h.reannounced(t, d.macs[0], uplinkFrames+1, 6*time.Second)
	}
	domStays, _ := h.fake.Domain(stays.name)

	path := h.fake.Path()
	h.fake.Close()
	netnstest.WaitFor(t, "watcher not ready", func() bool { return !h.watcher.Ready() })
	time.Sleep(1500 * time.Millisecond) // goes is destroyed while libvirtd is down

	h.libvirtdBack(t, path, domStays, stays, goes)
}

// libvirtdBack starts libvirtd again at path with one domain, kept (stays,
// the same QEMU process), and waits until the agent follows it. Then stays
// gets refresh frames again (refresh schedule: announce.MinRefresh), and
// goes, gone meanwhile, none for two refresh periods.
func (h *host) libvirtdBack(t testing.TB, path string, kept libvirtfake.Domain, stays, goes domain) {
	t.Helper()
	h.fake = libvirtfake.StartAt(t, path)
	if err := h.fake.AddDomain(kept); err != nil {
		t.Fatal(err)
	}
	h.waitReady(t)
	back := time.Now()
	netnstest.WaitWithin(t, 3*time.Second, "a refresh frame of the domain still here", func() bool { return h.frames.after(stays.macs[0], back) > 0 })
	time.Sleep(2 * announce.MinRefresh)
	if n := h.frames.after(goes.macs[0], back); n != 0 {
		t.Errorf("%s (gone while libvirtd was down): %d frames after libvirtd came back, want 0", goes.name, n)
	}
}
