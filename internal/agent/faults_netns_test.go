package agent_test

import (
	"testing"
	"time"

	"github.com/rarp-announce/rarp-announce/internal/libvirtfake"
	"github.com/rarp-announce/rarp-announce/internal/netnstest"
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
