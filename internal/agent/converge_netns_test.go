package agent_test

// The network-following watches (converge.go, departure.go) on the agent's
// harness: real taps, bridges and veths in namespaces, the fake libvirtd
// for the event sequences, frames sent by hand from the old host (the
// fabric's traffic for the VM) and from the VM's tap.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/rarp-announce/rarp-announce/internal/agent"
	"github.com/rarp-announce/rarp-announce/internal/config"
	"github.com/rarp-announce/rarp-announce/internal/frametest"
	"github.com/rarp-announce/rarp-announce/internal/libvirtfake"
	"github.com/rarp-announce/rarp-announce/internal/metrictest"
	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/internal/record"
	"github.com/rarp-announce/rarp-announce/pkg/fdb"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// unicast is a frame to dst from src with a local experimental EtherType.
func unicast(dst, src rarp.MAC) []byte { return frametest.Ether(dst, src, 0x88b5) }

var peerMAC = rarp.MAC{0x02, 0, 0, 0, 0xee, 0x01} // someone talking to the VM, behind the old host

// recordOf waits for the migration record of kind for domain and decodes it.
func (h *host) recordOf(t *testing.T, kind record.Kind, domainName string, timeout time.Duration) record.Record {
	t.Helper()
	var found record.Record
	netnstest.Eventually(t, timeout, func() error {
		var kinds []record.Kind
		for _, e := range h.logged("migration record", domainName) {
			b, err := json.Marshal(e.ContextMap()["record"])
			if err != nil {
				t.Fatal(err)
			}
			var r record.Record
			if err := json.Unmarshal(b, &r); err != nil {
				t.Fatalf("record %s: %v", b, err)
			}
			if r.Kind == kind {
				found = r
				return nil
			}
			kinds = append(kinds, r.Kind)
		}
		return fmt.Errorf("no %s record for %s (records logged: %v)", kind, domainName, kinds)
	})
	return found
}

// histogramCount reads the sample count and sum of a histogram series.
func (h *host) histogram(t testing.TB, name string, labels ...string) (count uint64, sum float64) {
	t.Helper()
	for _, m := range metrictest.Series(t, h.reg, name, labels...) {
		if m.Histogram != nil {
			return m.Histogram.GetSampleCount(), m.Histogram.GetSampleSum()
		}
	}
	return 0, 0
}

func TestReconvergenceMeasuredFromResumedToFirstUnicast(t *testing.T) {
	h := newHost(t, hostOptions{config: func(c *config.Config) { c.Reconvergence.Window = config.Duration(2 * time.Second) }})
	h.tap(t, "vnet0", wired)
	h.tap(t, "vnet1", wired)
	d := h.newDomain(t, stateOff, 0, "vnet0", "vnet1")
	h.land(t, d)
	h.frames.wait(t, d.macs[0], 1, 5*time.Second)
	// The fabric delivers traffic for the first NIC 150 ms after the
	// landing; nobody talks to the second one.
	time.Sleep(150 * time.Millisecond)
	for range 3 {
		netnstest.Send(t, h.rig.Old, netnstest.RigOldPort, unicast(d.macs[0], peerMAC))
	}
	r := h.recordOf(t, record.Landing, d.name, 5*time.Second)
	if r.UUID != d.uuid || r.Event != "resumed/migrated" || r.Trigger != "landed" || r.Received.IsZero() || r.Moves != 1 || len(r.NICs) != 2 {
		t.Fatalf("record %+v", r)
	}
	n0, n1 := r.NICs[0], r.NICs[1]
	if n0.MAC != d.macs[0].String() || n0.Strategy != "host" || n0.Result != "started" || n0.PortReady == nil || n0.FDBRepaired == nil ||
		n0.FirstFrame == nil || n0.Frames != framesPerBurst || n0.Reconverged == nil || n0.Silent {
		t.Fatalf("first NIC %+v", n0)
	}
	if got := float64(*n0.Reconverged); got < 0.15 || got > 1.0 {
		t.Errorf("reconverged after %.3fs, want 0.15 to 1 s (frames sent 150 ms after the landing)", got)
	}
	if n1.Reconverged != nil || !n1.Silent {
		t.Errorf("second NIC %+v: want silent", n1)
	}
	if c, _ := h.histogram(t, "rarp_announce_reconvergence_seconds", "strategy=host"); c != 1 {
		t.Errorf("histogram samples %d, want 1", c)
	}
	if got := h.metric(t, "rarp_announce_reconvergence_silent_total", "strategy=host"); got != 1 {
		t.Errorf("silent %v, want 1", got)
	}
}

// A domain that leaves before its watch's window is over cut the watch
// short: a NIC not seen by then was not measured, and is not counted
// silent (no sign that the fabric did not follow). It was.
func TestLeftBeforeTheWindowIsNotSilent(t *testing.T) {
	h := newHost(t, hostOptions{config: func(c *config.Config) { c.Reconvergence.Window = config.Duration(5 * time.Second) }})
	h.tap(t, "vnet0", wired)
	d := h.newDomain(t, stateOff, 0, "vnet0")
	h.land(t, d)
	h.frames.wait(t, d.macs[0], framesPerBurst, 5*time.Second)
	h.emit(t, d, stoppedDestroyed)
	r := h.recordOf(t, record.Landing, d.name, 3*time.Second)
	if len(r.NICs) != 1 || r.NICs[0].Silent {
		t.Errorf("record %+v: want the NIC not silent", r)
	}
	if got := h.metric(t, "rarp_announce_reconvergence_silent_total", "strategy=host"); got != 0 {
		t.Errorf("silent %v, want 0", got)
	}
}

// A landing that never reaches its watches (its trigger off) closes the
// premature-move watch STARTED/MIGRATED opened: it ran on for ten minutes
// (the prefetch's life), every frame the VM sent out of the uplink waking
// its reader, and nothing was ever counted from it.
func TestPrematureWatchClosedWhenTheTriggerIsOff(t *testing.T) {
	s := defaultSettings()
	s.Disabled = map[string]bool{agent.TriggerMigration: true}
	h := newHost(t, hostOptions{settings: s, config: func(c *config.Config) {
		c.Reconvergence.PrematureMargin = config.Duration(200 * time.Millisecond)
	}})
	h.tap(t, "vnet0", wired)
	d := h.newDomain(t, stateOff, 0, "vnet0")
	h.emit(t, d, startedMigrated)
	netnstest.WaitWithin(t, 2*time.Second, "the premature watch", func() bool { return h.agent.PrematureWatches() == 1 })
	h.emit(t, d, resumedMigrated)
	h.waitLogged(t, "landed; trigger disabled, not announced", d.name, 2*time.Second)
	if n := h.agent.PrematureWatches(); n != 0 {
		t.Errorf("%d premature watches open after the landing, want 0", n)
	}
}

// The migration record says the bridge was repaired only when a repair
// ran: with the repair refused (no CAP_NET_ADMIN), the NIC is announced
// and its record has no fdb_repaired (found in review: it had one).
func TestRecordHasNoRepairThatDidNotRun(t *testing.T) {
	h := newHost(t, hostOptions{config: func(c *config.Config) { c.Reconvergence.Window = config.Duration(300 * time.Millisecond) }})
	h.fdb.mu.Lock()
	h.fdb.refuse = fmt.Errorf("%w: operation not permitted", fdb.ErrPermission)
	h.fdb.mu.Unlock()
	h.tap(t, "vnet0", wired)
	d := h.newDomain(t, stateOff, 0, "vnet0")
	h.land(t, d)
	h.frames.wait(t, d.macs[0], framesPerBurst, 5*time.Second)
	r := h.recordOf(t, record.Landing, d.name, 5*time.Second)
	if len(r.NICs) != 1 {
		t.Fatalf("record %+v", r)
	}
	if n := r.NICs[0]; n.Result != "started" || n.PortReady == nil || n.FDBRepaired != nil {
		t.Errorf("NIC %+v: want started, port ready, and no fdb_repaired", n)
	}
	h.waitLogged(t, "FDB repair disabled: it needs CAP_NET_ADMIN; the local bridge keeps stale entries until they age out", d.name, time.Second)
}

func TestPrematureMoveCountedBeforeResumed(t *testing.T) {
	h := newHost(t, hostOptions{config: func(c *config.Config) {
		c.Reconvergence.PrematureMargin = config.Duration(200 * time.Millisecond)
	}})
	tap := h.tap(t, "vnet0", wired)
	early := h.newDomain(t, stateOff, 0, "vnet0")
	h.emit(t, early, startedMigrated)
	// The agent prefetches the XML and opens the tap's watch; then the
	// VM's MAC speaks from the pre-created tap 500 ms before RESUMED.
	time.Sleep(300 * time.Millisecond)
	if err := tap.Write(unicast(peerMAC, early.macs[0])); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	h.emit(t, early, resumedMigrated)
	h.waitMetric(t, 1, 5*time.Second, "rarp_announce_premature_moves_total")
	h.waitLogged(t, "premature move: the VM's MAC left this host before the domain resumed here; the fabric saw the MAC move early", early.name, time.Second)

	// A frame within the margin (QEMU's own announce just before
	// RESUMED) is no premature move.
	tap1 := h.tap(t, "vnet1", wired)
	ok := h.newDomain(t, stateOff, 0, "vnet1")
	h.emit(t, ok, startedMigrated)
	time.Sleep(300 * time.Millisecond)
	if err := tap1.Write(unicast(rarp.Broadcast, ok.macs[0])); err != nil {
		t.Fatal(err)
	}
	h.emit(t, ok, resumedMigrated)
	h.frames.wait(t, ok.macs[0], framesPerBurst, 5*time.Second)
	time.Sleep(200 * time.Millisecond)
	if got := h.metric(t, "rarp_announce_premature_moves_total"); got != 1 {
		t.Errorf("premature moves %v, want 1", got)
	}

	// A macvtap NIC: what QEMU writes to it leaves on the lower device
	// (here written on the macvtap, as QEMU's write to /dev/tapN is).
	h.macvtap(t)
	directMAC := rarp.MAC{0x52, 0x54, 0x00, 0xdd, 0x00, 0x07}
	direct := h.nicDomain(t, stateOff, 0, directNIC(directMAC))
	h.emit(t, direct, startedMigrated)
	time.Sleep(300 * time.Millisecond)
	netnstest.Send(t, h.ns, macvtapDev, unicast(peerMAC, directMAC))
	time.Sleep(500 * time.Millisecond)
	h.emit(t, direct, resumedMigrated)
	h.waitMetric(t, 2, 5*time.Second, "rarp_announce_premature_moves_total")
	h.waitLogged(t, "premature move: the VM's MAC left this host before the domain resumed here; the fabric saw the MAC move early", direct.name, time.Second)
}

// On a bridge with two uplinks the frames of the VM still running on the
// source come in on one uplink and leave on the other, from its MAC: there
// the agent watches the tap, and only what the VM wrote into it counts.
func TestPrematureMoveOnABridgeWithTwoUplinks(t *testing.T) {
	h := newHost(t, hostOptions{config: func(c *config.Config) {
		c.Reconvergence.PrematureMargin = config.Duration(200 * time.Millisecond)
	}})
	sw2 := netnstest.New(t, "sw2")
	netnstest.Veth(t, h.ns, "uplink2", sw2, "sw2h")
	h.ns.Attach(t, "uplink2", netnstest.RigHostBridge)
	h.tap(t, "vnet0", wired)
	tap1 := h.tap(t, "vnet1", wired)
	still := h.newDomain(t, stateOff, 0, "vnet0") // still runs on the source
	early := h.newDomain(t, stateOff, 0, "vnet1") // speaks from its tap here
	capt := netnstest.StartCapture(t, sw2, "sw2h", "ether src "+still.macs[0].String())
	h.emit(t, still, startedMigrated)
	h.emit(t, early, startedMigrated)
	time.Sleep(300 * time.Millisecond)
	h.learnOnOld(t, still.macs[0]) // in on uplink, flooded out of uplink2
	if err := tap1.Write(unicast(peerMAC, early.macs[0])); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	h.emit(t, still, resumedMigrated)
	h.emit(t, early, resumedMigrated)
	h.waitMetric(t, 1, 5*time.Second, "rarp_announce_premature_moves_total")
	h.waitLogged(t, "premature move: the VM's MAC left this host before the domain resumed here; the fabric saw the MAC move early", early.name, time.Second)
	h.frames.wait(t, still.macs[0], framesPerBurst, 5*time.Second)
	time.Sleep(300 * time.Millisecond)
	if got := h.metric(t, "rarp_announce_premature_moves_total"); got != 1 {
		t.Errorf("premature moves %v, want 1 (%s's frame from the source must not count)", got, still.name)
	}
	// The source's frame did leave through uplink2 before RESUMED: a
	// watch on the uplinks would have counted it.
	if n := len(netnstest.Tshark(t, capt.Stop(), "frame.time_epoch")); n == 0 {
		t.Errorf("no frame from %s left uplink2: the test did not cross the bridge", still.macs[0])
	}
}

func TestStaleDeliveriesAfterDeparture(t *testing.T) {
	// A post-copy migration pauses the source a second time
	// (SUSPENDED/POSTCOPY) before it stops: that must not drop the live
	// XML read at the migration's start (it did: no post-copy departure
	// was ever watched).
	for _, c := range []struct {
		name  string
		leave []ev
	}{
		{"pre-copy", []ev{suspendedMigrated}},
		{"post-copy", []ev{suspendedMigrated, suspendedPostcopy}},
	} {
		t.Run(c.name, func(t *testing.T) { staleDeliveriesAfterDeparture(t, c.leave) })
	}
}

func staleDeliveriesAfterDeparture(t *testing.T, leave []ev) {
	posted := make(chan record.Record, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var rec record.Record
		if err := json.NewDecoder(r.Body).Decode(&rec); err != nil {
			t.Errorf("webhook body: %v", err)
		}
		posted <- rec
	}))
	t.Cleanup(srv.Close)
	h := newHost(t, hostOptions{config: func(c *config.Config) {
		c.Reconvergence.StaleWindow = config.Duration(time.Second)
		c.Reconvergence.Webhook = srv.URL
	}})
	h.tap(t, "vnet0", wired)
	d := h.newDomain(t, stateRunning, reasonBooted, "vnet0")
	for _, e := range leave {
		h.emit(t, d, e)
		time.Sleep(100 * time.Millisecond) // the prefetch of the live XML
	}
	h.emit(t, d, stoppedMigrated)
	time.Sleep(100 * time.Millisecond)
	// The switch does not know the MAC elsewhere: it floods the frames
	// to this host's uplink, as a fabric that did not follow would.
	for range 4 {
		netnstest.Send(t, h.rig.Old, netnstest.RigOldPort, unicast(d.macs[0], peerMAC))
	}
	r := h.recordOf(t, record.Departure, d.name, 5*time.Second)
	if len(r.NICs) != 1 || r.NICs[0].StaleDeliveries != 4 || r.Event != "stopped/migrated" {
		t.Fatalf("departure record %+v", r)
	}
	if got := h.metric(t, "rarp_announce_stale_deliveries_total"); got != 4 {
		t.Errorf("stale deliveries %v, want 4", got)
	}
	h.waitLogged(t, "stale deliveries after the domain left: the fabric did not follow it; re-announce requested from the destination", d.name, time.Second)
	select {
	case p := <-posted:
		if p.Kind != record.Departure || p.UUID != d.uuid || p.NICs[0].StaleDeliveries != 4 {
			t.Errorf("webhook got %+v", p)
		}
	case <-time.After(5 * time.Second):
		t.Error("the webhook got no record")
	}
}

// A domain leaves (STOPPED/MIGRATED) while the live XML read its
// migration's start began is still in flight (libvirtd is busiest then):
// the departure watch waits for it, the agent's event loop does not. A
// landing of another domain right behind it announces at once (found in
// review: it waited for the read, up to the RPC timeout, 2 s here).
func TestDepartureDoesNotHoldTheNextLanding(t *testing.T) {
	h := newHost(t, hostOptions{config: func(c *config.Config) {
		c.Reconvergence.StaleWindow = config.Duration(time.Second)
	}})
	h.tap(t, "vnet0", wired)
	h.tap(t, "vnet1", wired)
	leaves := h.newDomain(t, stateRunning, reasonBooted, "vnet0")
	lands := h.newDomain(t, stateOff, 0, "vnet1")
	h.emit(t, lands, startedMigrated) // its XML is prefetched now
	time.Sleep(100 * time.Millisecond)

	h.fake.Hang(libvirtfake.ProgramRemote, libvirtfake.ProcDomainGetXMLDesc, true)
	t.Cleanup(func() { h.fake.Hang(libvirtfake.ProgramRemote, libvirtfake.ProcDomainGetXMLDesc, false) })
	h.emit(t, leaves, suspendedMigrated, stoppedMigrated) // its prefetch hangs
	resumed := h.emit(t, lands, resumedMigrated)
	fs := h.frames.wait(t, lands.macs[0], 1, 5*time.Second)
	h.fake.Hang(libvirtfake.ProgramRemote, libvirtfake.ProcDomainGetXMLDesc, false)
	if lag := fs[0].Time.Sub(resumed); lag > 500*time.Millisecond {
		t.Errorf("first frame of %s %v after its RESUMED, want well under the 2 s RPC timeout: the departure before it held the event loop", lands.name, lag)
	}
}

func TestMoveLedgerWarnsOnTheSecondLocalLanding(t *testing.T) {
	h := newHost(t, hostOptions{config: func(c *config.Config) {
		c.MoveLedger.Limit = 2
		c.MoveLedger.Window = config.Duration(time.Minute)
	}})
	h.tap(t, "vnet0", wired)
	d := h.newDomain(t, stateOff, 0, "vnet0")
	h.land(t, d)
	h.frames.wait(t, d.macs[0], framesPerBurst, 5*time.Second)
	if got := h.metric(t, "rarp_announce_mac_moves_over_limit_total"); got != 0 {
		t.Fatalf("over limit after one landing: %v", got)
	}
	// It leaves and comes back: the third move of the fabric, the second
	// landing here. Warned, counted, and still announced.
	h.emit(t, d, suspendedMigrated, stoppedMigrated)
	h.land(t, d)
	h.frames.wait(t, d.macs[0], 2*framesPerBurst, 5*time.Second)
	h.waitMetric(t, 1, 2*time.Second, "rarp_announce_mac_moves_over_limit_total")
	e := h.waitLogged(t, "MAC moved too often: the fabric may freeze it (duplicate-MAC detection)", d.name, time.Second)
	if e.ContextMap()["moves"] != int64(2) {
		t.Errorf("moves %v, want 2", e.ContextMap()["moves"])
	}
}

// move_ledger.max_macs_per_minute: the second distinct MAC landing on the
// same bridge within the minute waits for its slot (held, not dropped).
func TestMoveCapHoldsTheNextMACOnTheBridge(t *testing.T) {
	h := newHost(t, hostOptions{config: func(c *config.Config) { c.MoveLedger.MaxMACsPerMinute = 1 }})
	h.tap(t, "vnet0", wired)
	h.tap(t, "vnet1", wired)
	first := h.newDomain(t, stateOff, 0, "vnet0")
	second := h.newDomain(t, stateOff, 0, "vnet1")
	h.land(t, first)
	h.frames.wait(t, first.macs[0], framesPerBurst, 5*time.Second)
	h.land(t, second)
	h.quiet(t, second.macs[0], time.Second, "over the cap of one MAC a minute on br0")
	if got := h.nics(t, "host", "failed") + h.nics(t, "host", "cancelled"); got != 0 {
		t.Errorf("held NIC counted as failed or cancelled: %v", got)
	}
}

// A domain found landed when the agent connects (resync) is announced, but
// it is no migration to measure: no watch, no record, no ledger move.
func TestResyncLandingWritesNoRecord(t *testing.T) {
	var d domain
	h := newHost(t, hostOptions{
		// No watch: a landing's record would follow its schedule at once.
		config: func(c *config.Config) { c.Reconvergence.Window = 0 },
		before: func(h *host) {
			h.tap(t, "vnet0", wired)
			d = h.newDomain(t, stateRunning, 2 /* VIR_DOMAIN_RUNNING_MIGRATED */, "vnet0")
		}})
	h.frames.wait(t, d.macs[0], framesPerBurst, 5*time.Second)
	time.Sleep(fastSchedule().Duration() + 200*time.Millisecond)
	if es := h.logged("migration record", d.name); len(es) != 0 {
		t.Errorf("resync wrote a record: %v", es[0].ContextMap())
	}
	if c, _ := h.histogram(t, "rarp_announce_reconvergence_seconds", "strategy=host"); c != 0 {
		t.Errorf("resync observed %d reconvergence samples", c)
	}
}
