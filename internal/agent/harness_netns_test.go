package agent_test

// The agent's integration harness: a real hypervisor network in network
// namespaces (netnstest's rig: switch sw0, host bridge br0 with its uplink,
// the old host), real taps held open as QEMU holds them, a macvtap on a
// veth to the switch, and a fake libvirtd (libvirtfake) on a unix socket;
// the agent runs in this process with the daemon's real parts: a
// libvirtwatch.Watcher on the fake's socket, a portwatch.Watcher and an
// fdb.Repairer working in the host namespace, and an announce.Announcer
// whose sockets are opened in that namespace. What the agent did is read
// from the switch's MAC table, the host bridge's MAC table, the frames the
// announcer reports (OnFrame), the fake's call counters, the logs and the
// metrics.

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netns"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/rarp-announce/rarp-announce/internal/agent"
	"github.com/rarp-announce/rarp-announce/internal/app"
	"github.com/rarp-announce/rarp-announce/internal/config"
	"github.com/rarp-announce/rarp-announce/internal/libvirtfake"
	"github.com/rarp-announce/rarp-announce/internal/metrictest"
	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/internal/strategy"
	"github.com/rarp-announce/rarp-announce/pkg/announce"
	"github.com/rarp-announce/rarp-announce/pkg/fdb"
	"github.com/rarp-announce/rarp-announce/pkg/libvirtconn"
	"github.com/rarp-announce/rarp-announce/pkg/libvirtwatch"
	"github.com/rarp-announce/rarp-announce/pkg/plan"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// Names in the host namespace besides the rig's.
const (
	lowerDev   = "lower0"   // the macvtaps' lower device, a veth to the switch
	switchToMV = "swm"      // its switch side, on sw0
	macvtapDev = "macvtap0" // a direct NIC's device
)

// fastSchedule is one QEMU-like burst of 3 frames at 0, 10 and 30 ms.
func fastSchedule() announce.Schedule {
	return announce.Schedule{Initial: 10 * time.Millisecond, Step: 10 * time.Millisecond, Max: 50 * time.Millisecond, Rounds: 3, Bursts: 1}
}

const framesPerBurst = 3

func defaultSettings() agent.Settings {
	return agent.Settings{
		Plan: plan.Options{
			Strategies: plan.Strategies{
				plan.KindBridge: plan.Host, plan.KindNetwork: plan.Host, plan.KindDirect: plan.Host,
				plan.KindOpenVSwitch: plan.OVS, plan.KindVhostUser: plan.QEMU, plan.KindEthernet: plan.Skip,
			},
			RepairFDB: true,
		},
		Schedule:     fastSchedule(),
		ReadyTimeout: 10 * time.Second,
		WatchWindow:  0,
	}
}

// frameLog records every frame the announcer reports.
type frameLog struct {
	mu     sync.Mutex
	frames []announce.Sent
}

func (l *frameLog) add(s announce.Sent) {
	l.mu.Lock()
	l.frames = append(l.frames, s)
	l.mu.Unlock()
}

// sent returns the frames sent without error for mac (any interface when
// ifname is "").
func (l *frameLog) sent(mac rarp.MAC, ifname string) []announce.Sent {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []announce.Sent
	for _, s := range l.frames {
		if s.MAC == mac && s.Err == nil && (ifname == "" || s.Interface == ifname) {
			out = append(out, s)
		}
	}
	return out
}

func (l *frameLog) count(mac rarp.MAC) int { return len(l.sent(mac, "")) }

// failed returns the frames that failed, for any MAC.
func (l *frameLog) failed() []announce.Sent {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []announce.Sent
	for _, s := range l.frames {
		if s.Err != nil {
			out = append(out, s)
		}
	}
	return out
}

// after counts mac's frames sent after t.
func (l *frameLog) after(mac rarp.MAC, t time.Time) int {
	n := 0
	for _, s := range l.sent(mac, "") {
		if s.Time.After(t) {
			n++
		}
	}
	return n
}

// wait polls until mac has at least n frames, failing after timeout.
func (l *frameLog) wait(t testing.TB, mac rarp.MAC, n int, timeout time.Duration) []announce.Sent {
	t.Helper()
	var got []announce.Sent
	netnstest.Eventually(t, timeout, func() error {
		if got = l.sent(mac, ""); len(got) < n {
			return fmt.Errorf("%s: %d frames, want %d (failed frames: %v)", mac, len(got), n, l.failed())
		}
		return nil
	})
	return got
}

// gatedFDB wraps the real Repairer so a test can hold a landing between
// "port ready" and "announce started".
type gatedFDB struct {
	agent.FDB
	mu      sync.Mutex
	gate    chan struct{} // nil: no gate
	entered chan rarp.MAC
	refuse  error // set: every repair fails with it, as the kernel refuses one
}

func (g *gatedFDB) Repair(bridge string, mac rarp.MAC, own string) ([]fdb.Entry, error) {
	g.mu.Lock()
	gate, refuse := g.gate, g.refuse
	g.mu.Unlock()
	if gate != nil {
		g.entered <- mac
		<-gate
	}
	if refuse != nil {
		return nil, refuse
	}
	return g.FDB.Repair(bridge, mac, own)
}

// hold makes the next repairs block until the returned release is called.
func (g *gatedFDB) hold() (entered <-chan rarp.MAC, release func()) {
	gate := make(chan struct{})
	g.mu.Lock()
	g.gate = gate
	g.entered = make(chan rarp.MAC, 16)
	g.mu.Unlock()
	var once sync.Once
	return g.entered, func() {
		once.Do(func() {
			g.mu.Lock()
			g.gate = nil
			g.mu.Unlock()
			close(gate)
		})
	}
}

// host is a hypervisor the agent runs on.
type host struct {
	rig       *netnstest.Rig
	ns        *netnstest.NS // rig.Host
	fake      *libvirtfake.Server
	watcher   *libvirtwatch.Watcher
	agent     *agent.Agent
	announcer *announce.Announcer
	fdb       *gatedFDB
	frames    *frameLog
	logs      *observer.ObservedLogs
	reg       *prometheus.Registry

	cancel context.CancelFunc
	done   chan struct{}
}

type hostOptions struct {
	settings agent.Settings
	// before runs after the fake server is up and before the agent
	// connects (domains that exist when the agent starts).
	before func(h *host)
	// ovs is the ovs strategy's announcer; nil: not available.
	ovs strategy.OVSAnnouncer
	// config, if set, changes the config the parts are built from.
	config func(*config.Config)
	// warnLogsOnly keeps only warnings and errors, and no record of the
	// frames (the soak test: a memory check must not count the test's own
	// record of every line and frame).
	warnLogsOnly bool
	// sendOn is host.send_on; empty: the default (uplinks).
	sendOn string
	// holdDown, if set, makes the agent follow the uplinks (as the
	// daemon does) with this hold-down.
	holdDown time.Duration
}

// newHost builds the rig, the fake libvirtd and the agent, and waits until
// the agent is subscribed to the fake's events.
func newHost(t *testing.T, o hostOptions) *host {
	t.Helper()
	netnstest.Require(t)
	if o.settings.Schedule.Rounds == 0 {
		o.settings = defaultSettings()
	}
	rig := netnstest.NewRig(t)
	h := &host{rig: rig, ns: rig.Host, frames: &frameLog{}, reg: prometheus.NewPedanticRegistry(), done: make(chan struct{})}

	h.fake = libvirtfake.Start(t)
	if o.before != nil {
		o.before(h)
	}

	minLevel, testLevel := zapcore.DebugLevel, zapcore.InfoLevel
	if o.warnLogsOnly {
		minLevel, testLevel = zapcore.WarnLevel, zapcore.WarnLevel
	}
	core, logs := observer.New(minLevel)
	h.logs = logs
	log := zap.New(zapcore.NewTee(zaptest.NewLogger(t, zaptest.Level(testLevel)).Core(), core))

	nsh, err := netns.GetFromName(h.ns.Name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nsh.Close() })

	lvm := libvirtwatch.NewMetrics(nil)
	h.reg.MustRegister(lvm)

	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	// The parts come from the composition root the daemon uses; only the
	// namespace, the sockets' opener and the OVS announcer differ.
	cfg := config.Default()
	cfg.FDBRepair = true
	cfg.Pacing.FramesPerSecond = 0 // unpaced: the tests time frames
	if o.sendOn != "" {
		cfg.Host.SendOn = o.sendOn
	}
	if o.ovs == nil {
		cfg.Strategies.OpenVSwitch = config.StrategySkip // no OVS on this agent
	}
	if o.config != nil {
		o.config(cfg)
	}
	if o.holdDown > 0 {
		cfg.Failover.HoldDown = config.Duration(o.holdDown)
	}
	onFrame := h.frames.add
	if o.warnLogsOnly {
		onFrame = nil
	}
	parts, err := app.Build(ctx, cfg, app.Options{
		Netns: &nsh, Open: netnstest.OpenIn(h.ns, announce.OpenPacket), Registerer: h.reg, Logger: log, OnFrame: onFrame, OVS: o.ovs,
		WatchUplinks: o.holdDown > 0,
	})
	if err != nil {
		t.Fatal(err)
	}
	h.fdb = &gatedFDB{FDB: parts.FDB}
	h.announcer = parts.Announcer
	h.watcher = libvirtwatch.New(libvirtwatch.Config{
		Conn:       libvirtconn.Config{Socket: h.fake.Path(), URI: "test:///default", RPCTimeout: 2 * time.Second},
		BackoffMin: 10 * time.Millisecond, BackoffMax: 100 * time.Millisecond,
		AnnounceOnResync: true, ReportConnection: true, Logger: log.Named("libvirt"), Metrics: lvm,
	})
	deps := parts.Deps(h.watcher, log.Named("agent"))
	deps.FDB = h.fdb
	h.agent = agent.New(deps, o.settings)

	events := make(chan libvirtwatch.Event, 4096)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = h.watcher.Run(ctx, events) }()
	go func() { defer wg.Done(); h.agent.Run(ctx, events) }()
	go func() { wg.Wait(); close(h.done) }()
	// Stop everything before the namespaces go (cleanups run last-in
	// first-out, the rig's were registered first).
	t.Cleanup(func() {
		cancel()
		<-h.done
		parts.Close()
	})
	if err := h.fake.WaitSubscribers(1, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	h.waitReady(t)
	return h
}

func (h *host) waitReady(t testing.TB) {
	t.Helper()
	netnstest.WaitWithin(t, 10*time.Second, "the watcher to be ready", h.watcher.Ready)
}

// tapSpec says how far a VM's tap is wired.
type tapSpec struct {
	attach bool // enslaved to br0
	up     bool // admin up
	open   bool // held open (carrier), as QEMU holds it
}

var wired = tapSpec{attach: true, up: true, open: true}

// tap creates a persistent tap on the host and wires it as far as spec
// says; it returns the open tap (nil if not opened).
func (h *host) tap(t testing.TB, name string, spec tapSpec) *netnstest.Tap {
	t.Helper()
	h.ns.Exec(t, "ip", "tuntap", "add", "dev", name, "mode", "tap")
	if spec.attach {
		h.ns.Attach(t, name, netnstest.RigHostBridge)
	}
	if spec.up {
		h.ns.Exec(t, "ip", "link", "set", "dev", name, "up")
	}
	if spec.open {
		return netnstest.OpenTap(t, h.ns, name)
	}
	return nil
}

// macvtap creates the lower device (a veth to the switch) and a macvtap in
// bridge mode on it. A macvtap's carrier follows its lower device; nobody
// needs to hold it.
func (h *host) macvtap(t testing.TB) {
	t.Helper()
	netnstest.Veth(t, h.ns, lowerDev, h.rig.Switch, switchToMV)
	h.rig.Switch.Attach(t, switchToMV, netnstest.RigSwitchBridge)
	h.ns.Exec(t, "ip", "link", "add", "link", lowerDev, "name", macvtapDev, "type", "macvtap", "mode", "bridge")
	h.ns.Exec(t, "ip", "link", "set", "dev", macvtapDev, "up")
}

// directNIC is a direct NIC with mac on the harness's macvtap (h.macvtap).
func directNIC(mac rarp.MAC) libvirtfake.NIC {
	return libvirtfake.NIC{Type: "direct", MAC: mac.String(), Source: lowerDev, Target: macvtapDev}
}

// domain is a domain known to the fake.
type domain struct {
	name, uuid string
	macs       []rarp.MAC
}

var domainSeq int

// newDomain adds a domain whose NICs are bridge NICs on br0 with the given
// taps, in the given state (libvirt numbers).
func (h *host) newDomain(t testing.TB, state, reason int32, taps ...string) domain {
	t.Helper()
	domainSeq++
	d := domain{name: fmt.Sprintf("vm%d", domainSeq), uuid: fmt.Sprintf("6167656e-7400-4000-8000-%012x", domainSeq)}
	var nics []libvirtfake.NIC
	for i, tap := range taps {
		mac := rarp.MAC{0x52, 0x54, 0x00, byte(domainSeq >> 8), byte(domainSeq), byte(i)}
		d.macs = append(d.macs, mac)
		nics = append(nics, libvirtfake.NIC{MAC: mac.String(), Target: tap})
	}
	h.addDomain(t, d, state, reason, libvirtfake.LiveXML(d.name, d.uuid, 1, nics...))
	return d
}

// nicDomain adds a domain with nics, in the given state (libvirt numbers).
func (h *host) nicDomain(t testing.TB, state, reason int32, nics ...libvirtfake.NIC) domain {
	t.Helper()
	d := h.rawDomain(t, state, reason, libvirtfake.Interfaces(nics...))
	for _, n := range nics {
		d.macs = append(d.macs, rarp.MustParseMAC(n.MAC))
	}
	return d
}

// rawDomain adds a domain with a hand-written <devices> body.
func (h *host) rawDomain(t testing.TB, state, reason int32, devices string) domain {
	t.Helper()
	domainSeq++
	d := domain{name: fmt.Sprintf("vm%d", domainSeq), uuid: fmt.Sprintf("6167656e-7400-4000-8000-%012x", domainSeq)}
	xml := fmt.Sprintf("<domain type='kvm' id='1'>\n  <name>%s</name>\n  <uuid>%s</uuid>\n  <devices>\n%s  </devices>\n</domain>\n", d.name, d.uuid, devices)
	h.addDomain(t, d, state, reason, xml)
	return d
}

func (h *host) addDomain(t testing.TB, d domain, state, reason int32, xml string) {
	t.Helper()
	if err := h.fake.AddDomain(libvirtfake.Domain{Name: d.name, UUID: d.uuid, State: state, Reason: reason, XML: xml}); err != nil {
		t.Fatal(err)
	}
}

// Lifecycle events by name, for readable sequences.
type ev struct{ event, detail int32 }

var (
	startedBooted          = ev{libvirtwatch.EventStarted, 0}
	startedMigrated        = ev{libvirtwatch.EventStarted, libvirtwatch.DetailStartedMigrated}
	suspendedPaused        = ev{libvirtwatch.EventSuspended, 0}
	suspendedMigrated      = ev{libvirtwatch.EventSuspended, libvirtwatch.DetailSuspendedMigrated}
	suspendedPostcopy      = ev{libvirtwatch.EventSuspended, libvirtwatch.DetailSuspendedPostcopy}
	suspendedPostcopyFail  = ev{libvirtwatch.EventSuspended, libvirtwatch.DetailSuspendedPostcopyFailed}
	resumedUnpaused        = ev{libvirtwatch.EventResumed, libvirtwatch.DetailResumedUnpaused}
	resumedMigrated        = ev{libvirtwatch.EventResumed, libvirtwatch.DetailResumedMigrated}
	resumedPostcopy        = ev{libvirtwatch.EventResumed, libvirtwatch.DetailResumedPostcopy}
	resumedPostcopyFailed  = ev{libvirtwatch.EventResumed, libvirtwatch.DetailResumedPostcopyFailed}
	stoppedDestroyed       = ev{libvirtwatch.EventStopped, 1}
	stoppedMigrated        = ev{libvirtwatch.EventStopped, libvirtwatch.DetailStoppedMigrated}
	stoppedFailed          = ev{libvirtwatch.EventStopped, libvirtwatch.DetailStoppedFailed}
	stateRunning, stateOff = libvirtconn.StateRunning, int32(5)
	reasonBooted           = int32(1)
)

// emit sends events of d, in order, and returns when the last was written.
func (h *host) emit(t testing.TB, d domain, evs ...ev) time.Time {
	t.Helper()
	var at time.Time
	for _, e := range evs {
		var err error
		if at, err = h.fake.Emit(d.name, e.event, e.detail); err != nil {
			t.Fatal(err)
		}
	}
	return at
}

// land emits a pre-copy landing: STARTED/MIGRATED then RESUMED/MIGRATED.
func (h *host) land(t testing.TB, d domain) time.Time {
	t.Helper()
	return h.emit(t, d, startedMigrated, resumedMigrated)
}

// flush proves that the agent handled every event emitted so far: it lands
// a fresh probe domain on tap and waits for its frames. Events are handled
// in order, so the earlier ones have been acted on by then; it then waits
// for one more schedule so that their frames would have been sent.
func (h *host) flush(t testing.TB, tap string) {
	t.Helper()
	p := h.newDomain(t, stateOff, 0, tap)
	h.land(t, p)
	h.frames.wait(t, p.macs[0], framesPerBurst, 5*time.Second)
	time.Sleep(fastSchedule().Duration() + 150*time.Millisecond)
}

// logged returns the log entries with this message whose fields include
// domain name.
func (h *host) logged(msg, domainName string) []observer.LoggedEntry {
	var out []observer.LoggedEntry
	for _, e := range h.logs.FilterMessage(msg).All() {
		if domainName == "" || e.ContextMap()["domain"] == domainName {
			out = append(out, e)
		}
	}
	return out
}

// waitLogged polls for a log entry.
func (h *host) waitLogged(t testing.TB, msg, domainName string, timeout time.Duration) observer.LoggedEntry {
	t.Helper()
	var e observer.LoggedEntry
	netnstest.Eventually(t, timeout, func() error {
		es := h.logged(msg, domainName)
		if len(es) == 0 {
			return fmt.Errorf("no log %q for %q", msg, domainName)
		}
		e = es[0]
		return nil
	})
	return e
}

// metric returns the value of the counter or gauge name with these label
// values ("k=v" pairs); 0 if absent.
func (h *host) metric(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	v, _ := gathered(t, h.reg, name, labels...)
	return v
}

// gathered reads one counter or gauge of a registry by name and label
// values ("k=v" pairs); found is false if no such series exists.
func gathered(t testing.TB, reg prometheus.Gatherer, name string, labels ...string) (v float64, found bool) {
	t.Helper()
	return metrictest.Gathered(t, reg, name, labels...)
}

// nics reads rarp_announce_nic_announces_total{strategy,result}.
func (h *host) nics(t testing.TB, strategy, result string) float64 {
	t.Helper()
	return h.metric(t, "rarp_announce_nic_announces_total", "strategy="+strategy, "result="+result)
}

// waitMetric polls until a metric reaches want.
func (h *host) waitMetric(t testing.TB, want float64, timeout time.Duration, name string, labels ...string) {
	t.Helper()
	netnstest.Eventually(t, timeout, func() error {
		if got := h.metric(t, name, labels...); got < want {
			return fmt.Errorf("%s%v = %v, want %v", name, labels, got, want)
		}
		return nil
	})
}

// quiet asserts that mac gets no frame for d.
func (h *host) quiet(t testing.TB, mac rarp.MAC, d time.Duration, why string) {
	t.Helper()
	before := h.frames.count(mac)
	time.Sleep(d)
	if n := h.frames.count(mac) - before; n != 0 {
		t.Fatalf("%s: %s got %d frames, want none", why, mac, n)
	}
}

// fdbOf returns where br0 (host) and sw0 (switch) have mac.
func (h *host) hostFDB(t testing.TB, mac rarp.MAC) string {
	return h.ns.FDB(t, netnstest.RigHostBridge)[mac.String()]
}

func (h *host) switchFDB(t testing.TB, mac rarp.MAC) string {
	return h.rig.Switch.FDB(t, netnstest.RigSwitchBridge)[mac.String()]
}

// learnOnOld makes the switch (and, through it, br0's uplink) learn mac
// behind the old host, as while the VM ran there.
func (h *host) learnOnOld(t testing.TB, mac rarp.MAC) {
	t.Helper()
	h.rig.LearnOnOld(t, mac.String())
	if got := h.ns.WaitFDB(t, netnstest.RigHostBridge, mac.String(), netnstest.RigHostUplink, 2*time.Second); got != netnstest.RigHostUplink {
		t.Fatalf("br0 did not learn %s on the uplink (has %q)", mac, got)
	}
}

// interfacesOf lists the interfaces mac's frames went out of.
func interfacesOf(frames []announce.Sent) []string {
	var out []string
	for _, f := range frames {
		if !slices.Contains(out, f.Interface) {
			out = append(out, f.Interface)
		}
	}
	return out
}
