package libvirtwatch

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/rarp-announce/rarp-announce/internal/libvirtfake"
	"github.com/rarp-announce/rarp-announce/internal/metrictest"
	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/pkg/domxml"
	"github.com/rarp-announce/rarp-announce/pkg/libvirtconn"
)

// Tests against libvirtfake: event sequences a lab cannot produce, RPC
// timeouts, resync on reconnect.

const (
	stateShutoff = 5
)

// rpcTimeouts reads libvirt_rpc_timeouts_total{procedure=proc} from the
// connections' metrics (pkg/libvirtconn counts them).
func rpcTimeouts(t testing.TB, m *Metrics, proc string) float64 {
	t.Helper()
	return metrictest.Value(t, m.RPC, "rarp_announce_libvirt_rpc_timeouts_total", "procedure="+proc)
}

type running struct {
	w      *Watcher
	events chan Event
	cancel context.CancelFunc
	done   chan error
	m      *Metrics
}

func testConfig(t testing.TB, socket string) Config {
	return Config{
		Conn:             libvirtconn.Config{Socket: socket, URI: "test:///default", RPCTimeout: 2 * time.Second},
		BackoffMin:       20 * time.Millisecond,
		BackoffMax:       200 * time.Millisecond,
		AnnounceOnResync: true,
		Logger:           zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)),
		Metrics:          NewMetrics(nil),
	}
}

func startWatcher(t testing.TB, cfg Config, buffer int) *running {
	t.Helper()
	w := New(cfg)
	r := &running{w: w, events: make(chan Event, buffer), done: make(chan error, 1), m: cfg.Metrics}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- w.Run(ctx, r.events) }()
	t.Cleanup(r.stop)
	return r
}

// startReady starts a watcher of the fake s, with a 16-event buffer, and
// waits until it is ready.
func startReady(t testing.TB, s *libvirtfake.Server) *running {
	t.Helper()
	r := startWatcher(t, testConfig(t, s.Path()), 16)
	r.waitReady(t, 5*time.Second)
	return r
}

func (r *running) stop() {
	r.cancel()
	<-r.done
	// Run returned: put the done value back for later stop calls.
	r.done <- nil
}

func (r *running) waitReady(t testing.TB, timeout time.Duration) {
	t.Helper()
	netnstest.WaitWithin(t, timeout, "the watcher to be ready", r.w.Ready)
}

func (r *running) waitNotReady(t testing.TB, timeout time.Duration) {
	t.Helper()
	netnstest.WaitWithin(t, timeout, "the watcher to be no longer ready", func() bool { return !r.w.Ready() })
}

// next returns the next event, failing after timeout.
func (r *running) next(t testing.TB, timeout time.Duration) Event {
	t.Helper()
	select {
	case ev := <-r.events:
		return ev
	case <-time.After(timeout):
		t.Fatalf("no event within %v", timeout)
	}
	return Event{}
}

// expect reads the next event and checks its kind, domain and name.
func (r *running) expect(t testing.TB, kind EventKind, domain, name string) Event {
	t.Helper()
	ev := r.next(t, 5*time.Second)
	if ev.Kind != kind || ev.Domain.Name != domain || ev.Name() != name {
		t.Fatalf("got %s, want %s %s %s", ev, kind, domain, name)
	}
	return ev
}

func (r *running) expectNone(t testing.TB, d time.Duration) {
	t.Helper()
	select {
	case ev := <-r.events:
		t.Fatalf("unexpected event %s", ev)
	case <-time.After(d):
	}
}

// emitExpect emits ev on dom and expects the watcher's event for it.
func (r *running) emitExpect(t testing.TB, s *libvirtfake.Server, dom string, ev [2]int32, kind EventKind, name string) Event {
	t.Helper()
	emit(t, s, dom, ev)
	return r.expect(t, kind, dom, name)
}

func emit(t testing.TB, s *libvirtfake.Server, dom string, ev [2]int32) {
	t.Helper()
	if _, err := s.Emit(dom, ev[0], ev[1]); err != nil {
		t.Fatal(err)
	}
}

func TestFakeCancelledMigrationOnSource(t *testing.T) {
	s := libvirtfake.Start(t)
	libvirtfake.AddTestDomain(t, s, 1, libvirtconn.StateRunning, 1 /* booted */, 1)
	r := startReady(t, s)

	r.emitExpect(t, s, "vm1", suspendedMigrated, Cancel, "suspended/migrated")   // source paused for the switch-over
	ev := r.emitExpect(t, s, "vm1", resumedMigrated, Landed, "resumed/migrated") // migration cancelled: runs here again
	if ev.Domain.UUID != libvirtfake.TestUUID(1) || ev.DomainID != 1 || ev.Resync || ev.Received.IsZero() {
		t.Errorf("landed event %+v", ev)
	}
	// and a successful one afterwards only cancels
	r.emitExpect(t, s, "vm1", suspendedMigrated, Cancel, "suspended/migrated")
	r.emitExpect(t, s, "vm1", stoppedMigrated, Cancel, "stopped/migrated")
	r.expectNone(t, 50*time.Millisecond)

	if got := testutil.ToFloat64(r.m.landings.WithLabelValues("event")); got != 1 {
		t.Errorf("landings{source=event} = %v, want 1", got)
	}
	if got := testutil.ToFloat64(r.m.events.WithLabelValues("suspended", "migrated")); got != 2 {
		t.Errorf("events{suspended,migrated} = %v, want 2", got)
	}
}

func TestFakePostcopy(t *testing.T) {
	s := libvirtfake.Start(t)
	libvirtfake.AddTestDomain(t, s, 1, stateShutoff, 0, 2)             // the destination: not running yet
	libvirtfake.AddTestDomain(t, s, 2, libvirtconn.StateRunning, 1, 1) // the source of another migration
	r := startReady(t, s)

	// destination: one announce for the whole post-copy migration
	r.emitExpect(t, s, "vm1", startedMigrated, Other, "started/migrated")
	landed := r.emitExpect(t, s, "vm1", resumedPostcopy, Landed, "resumed/postcopy")
	r.emitExpect(t, s, "vm1", resumedMigrated, Other, "resumed/migrated")
	// source side
	r.emitExpect(t, s, "vm2", suspendedPostcopy, Cancel, "suspended/postcopy")
	r.emitExpect(t, s, "vm2", stoppedMigrated, Cancel, "stopped/migrated")

	// the landed domain is running here and its XML has both NICs
	running, err := r.w.DomainRunning(context.Background(), landed.Domain)
	if err != nil || !running {
		t.Fatalf("DomainRunning = %v, %v", running, err)
	}
	xml, err := r.w.DomainXML(context.Background(), landed.Domain)
	if err != nil {
		t.Fatal(err)
	}
	d, err := domxml.Parse(xml)
	if err != nil || len(d.Interfaces) != 2 || d.Interfaces[1].MAC.String() != libvirtfake.TestMAC(1, 1) {
		t.Fatalf("Parse(XML of %s) = %+v, %v", landed.Domain, d, err)
	}
}

func TestFakePostcopyFailure(t *testing.T) {
	s := libvirtfake.Start(t)
	libvirtfake.AddTestDomain(t, s, 1, stateShutoff, 0, 1)             // destination, keeps running after the failure
	libvirtfake.AddTestDomain(t, s, 2, stateShutoff, 0, 1)             // destination, paused by the failure, then recovered
	libvirtfake.AddTestDomain(t, s, 3, libvirtconn.StateRunning, 1, 1) // source
	r := startReady(t, s)

	r.emitExpect(t, s, "vm1", startedMigrated, Other, "started/migrated")
	r.emitExpect(t, s, "vm1", resumedPostcopy, Landed, "resumed/postcopy")
	r.emitExpect(t, s, "vm1", resumedPostcopyFailed, Other, "resumed/postcopy_failed") // already landed: no second announce

	r.emitExpect(t, s, "vm2", startedMigrated, Other, "started/migrated")
	r.emitExpect(t, s, "vm2", resumedPostcopy, Landed, "resumed/postcopy")
	r.emitExpect(t, s, "vm2", suspendedPostcopyFailed, Cancel, "suspended/postcopy_failed")
	r.emitExpect(t, s, "vm2", resumedPostcopy, Landed, "resumed/postcopy") // post-copy recovery resumed it
	r.emitExpect(t, s, "vm2", resumedMigrated, Other, "resumed/migrated")

	r.emitExpect(t, s, "vm3", suspendedPostcopy, Cancel, "suspended/postcopy")
	r.emitExpect(t, s, "vm3", suspendedPostcopyFailed, Cancel, "suspended/postcopy_failed")
	r.expectNone(t, 50*time.Millisecond)
}

func TestFakeStartedMigratedNeverTriggers(t *testing.T) {
	s := libvirtfake.Start(t)
	libvirtfake.AddTestDomain(t, s, 1, stateShutoff, 0, 1)
	r := startReady(t, s)
	for i := 0; i < 3; i++ { // three failed incoming migrations
		r.emitExpect(t, s, "vm1", startedMigrated, Other, "started/migrated")
		r.emitExpect(t, s, "vm1", stoppedFailed, Cancel, "stopped/failed")
	}
	r.expectNone(t, 50*time.Millisecond)
	if got := testutil.ToFloat64(r.m.landings.WithLabelValues("event")); got != 0 {
		t.Errorf("landings = %v, want 0", got)
	}
}

func TestFakeResyncOnReconnect(t *testing.T) {
	libvirtfake.CheckLeaks(t)
	s := libvirtfake.Start(t)
	libvirtfake.AddTestDomain(t, s, 1, libvirtconn.StateRunning, libvirtconn.ReasonRunningMigrated, 1) // landed while nobody watched
	libvirtfake.AddTestDomain(t, s, 2, libvirtconn.StateRunning, 1, 1)                                 // booted here
	libvirtfake.AddTestDomain(t, s, 3, libvirtconn.StateRunning, libvirtconn.ReasonRunningPostcopy, 1) // landed by post-copy, still copying
	r := startWatcher(t, testConfig(t, s.Path()), 16)

	ev := r.expect(t, Landed, "vm1", "resync")
	if !ev.Resync || ev.Event != -1 || ev.DomainID != 1 {
		t.Errorf("resync event %+v", ev)
	}
	r.expect(t, Landed, "vm3", "resync")
	r.waitReady(t, 5*time.Second)
	r.expectNone(t, 50*time.Millisecond)

	// libvirtd "restarts"; meanwhile vm3 stops and vm4 lands
	if err := s.SetState("vm3", stateShutoff, 1); err != nil {
		t.Fatal(err)
	}
	libvirtfake.AddTestDomain(t, s, 4, libvirtconn.StateRunning, libvirtconn.ReasonRunningMigrated, 1)
	s.DropConnections()
	r.expect(t, Cancel, "vm3", "resync")
	r.expect(t, Landed, "vm4", "resync") // vm1 (same QEMU process) is not announced again
	r.waitReady(t, 5*time.Second)
	r.expectNone(t, 50*time.Millisecond)

	// events flow on the new connection
	r.emitExpect(t, s, "vm2", suspendedMigrated, Cancel, "suspended/migrated")
	r.emitExpect(t, s, "vm2", resumedMigrated, Landed, "resumed/migrated")

	if got := testutil.ToFloat64(r.m.reconnects); got != 1 {
		t.Errorf("reconnects = %v, want 1", got)
	}
	if got := testutil.ToFloat64(r.m.landings.WithLabelValues("resync")); got != 3 {
		t.Errorf("landings{resync} = %v, want 3", got)
	}
	if got := testutil.ToFloat64(r.m.connected); got != 1 {
		t.Errorf("connected = %v, want 1", got)
	}
	if got := testutil.ToFloat64(r.m.resyncs); got != 2 {
		t.Errorf("resyncs = %v, want 2", got)
	}
	if got := s.URIs(); len(got) != 2 || got[0] != "test:///default" {
		t.Errorf("URIs opened: %q", got)
	}
}

func TestFakeRPCTimeout(t *testing.T) {
	libvirtfake.CheckLeaks(t)
	s := libvirtfake.Start(t)
	vm := libvirtfake.AddTestDomain(t, s, 1, libvirtconn.StateRunning, 1, 1)
	cfg := testConfig(t, s.Path())
	cfg.Conn.RPCTimeout = 300 * time.Millisecond
	r := startWatcher(t, cfg, 16)
	r.waitReady(t, 5*time.Second)
	ref := DomainRef{Name: vm.Name, UUID: vm.UUID}

	s.Hang(libvirtfake.ProgramRemote, libvirtfake.ProcDomainGetXMLDesc, true)
	t0 := time.Now()
	_, err := r.w.DomainXML(context.Background(), ref)
	took := time.Since(t0)
	if !errors.Is(err, libvirtconn.ErrTimeout) {
		t.Fatalf("DomainXML on a server that never answers: %v, want libvirtconn.ErrTimeout", err)
	}
	var te interface{ Timeout() bool }
	if !errors.As(err, &te) || !te.Timeout() {
		t.Errorf("%v: no Timeout() true, callers cannot tell it from other failures", err)
	}
	if took < 300*time.Millisecond || took > 2*time.Second {
		t.Errorf("DomainXML returned after %v, want about 300ms", took)
	}
	t.Logf("DomainXML timed out after %v: %v", took, err)
	// the timeout closed the connection: the watcher reconnects
	netnstest.WaitFor(t, "the reconnect", func() bool { return testutil.ToFloat64(r.m.reconnects) == 1 })
	r.waitReady(t, 5*time.Second)
	if got := rpcTimeouts(t, r.m, "domain_get_xml_desc"); got != 1 {
		t.Errorf("rpc_timeouts{domain_get_xml_desc} = %v, want 1", got)
	}
	if got := testutil.ToFloat64(r.m.reconnects); got != 1 {
		t.Errorf("reconnects = %v, want 1", got)
	}

	// a caller's shorter deadline returns at once; the call keeps its own
	// timeout and, never answered, breaks the connection then
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	t0 = time.Now()
	_, err = r.w.DomainXML(ctx, ref)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(t0) > 250*time.Millisecond {
		t.Errorf("DomainXML with a 50ms deadline: %v after %v", err, time.Since(t0))
	}
	netnstest.WaitFor(t, "the second reconnect", func() bool { return testutil.ToFloat64(r.m.reconnects) == 2 })
	r.waitReady(t, 5*time.Second)

	// answered again: works
	s.Hang(libvirtfake.ProgramRemote, libvirtfake.ProcDomainGetXMLDesc, false)
	if _, err := r.w.DomainXML(context.Background(), ref); err != nil {
		t.Fatal(err)
	}
}

// A libvirtd that accepts connections but never answers anything: Run keeps
// retrying with backoff, is never ready, and recovers when it answers.
func TestFakeServerNeverAnswers(t *testing.T) {
	libvirtfake.CheckLeaks(t)
	s := libvirtfake.Start(t)
	s.Hang(libvirtfake.ProgramRemote, libvirtfake.ProcAuthList, true)
	cfg := testConfig(t, s.Path())
	cfg.Conn.RPCTimeout = 100 * time.Millisecond
	r := startWatcher(t, cfg, 16)
	netnstest.WaitFor(t, "3 failed attempts", func() bool { return testutil.ToFloat64(r.m.connectFailures) >= 3 })
	if r.w.Ready() {
		t.Fatal("ready although libvirt never answered")
	}
	if _, err := r.w.DomainXML(context.Background(), DomainRef{Name: "x", UUID: libvirtfake.TestUUID(1)}); !errors.Is(err, ErrNotConnected) {
		t.Errorf("DomainXML while not connected: %v, want ErrNotConnected", err)
	}
	if got := rpcTimeouts(t, r.m, "connect_open"); got < 3 {
		t.Errorf("rpc_timeouts{connect_open} = %v, want >= 3", got)
	}
	s.Hang(libvirtfake.ProgramRemote, libvirtfake.ProcAuthList, false)
	r.waitReady(t, 5*time.Second)
	if got := testutil.ToFloat64(r.m.reconnects); got != 0 {
		t.Errorf("reconnects = %v, want 0 (never connected before)", got)
	}
}

// The socket disappears (libvirtd stopped) and comes back.
func TestFakeSocketGone(t *testing.T) {
	libvirtfake.CheckLeaks(t)
	path := libvirtfake.SocketPath(t)
	s, err := libvirtfake.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	libvirtfake.AddTestDomain(t, s, 1, libvirtconn.StateRunning, 1, 1)
	cfg := testConfig(t, path)
	r := startWatcher(t, cfg, 16)
	r.waitReady(t, 5*time.Second)
	s.Close() // removes the socket file
	r.waitNotReady(t, 2*time.Second)
	if got := testutil.ToFloat64(r.m.connected); got != 0 {
		t.Errorf("connected = %v while the socket is gone", got)
	}
	time.Sleep(300 * time.Millisecond) // a few failed attempts
	s, err = libvirtfake.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	libvirtfake.AddTestDomain(t, s, 1, libvirtconn.StateRunning, 1, 1)
	r.waitReady(t, 5*time.Second)
	r.emitExpect(t, s, "vm1", resumedMigrated, Landed, "resumed/migrated")
	if got := testutil.ToFloat64(r.m.connectFailures); got < 1 {
		t.Errorf("connect_failures = %v, want >= 1", got)
	}
}

func TestFakeQueries(t *testing.T) {
	libvirtfake.CheckLeaks(t)
	s := libvirtfake.Start(t)
	vm1 := libvirtfake.AddTestDomain(t, s, 1, libvirtconn.StateRunning, 1, 1)
	vm2 := libvirtfake.AddTestDomain(t, s, 2, libvirtconn.StatePaused, 1, 1)
	s.QMP = func(d libvirtfake.Domain, cmd string) (string, error) {
		if strings.Contains(cmd, "announce-self") {
			return `{"return":{},"id":"libvirt-23"}`, nil
		}
		return `{"id":"libvirt-24","error":{"class":"CommandNotFound","desc":"The command nope has not been found"}}`, nil
	}
	r := startReady(t, s)
	ctx := context.Background()

	for _, key := range []string{"vm1", libvirtfake.TestUUID(1), strings.ToUpper(strings.ReplaceAll(libvirtfake.TestUUID(1), "-", ""))} {
		got, err := r.w.LookupDomain(ctx, key)
		if err != nil || got != (DomainRef{Name: "vm1", UUID: libvirtfake.TestUUID(1)}) {
			t.Errorf("LookupDomain(%q) = %+v, %v", key, got, err)
		}
	}
	for _, key := range []string{"nope", libvirtfake.TestUUID(9)} {
		if _, err := r.w.LookupDomain(ctx, key); !errors.Is(err, libvirtconn.ErrDomainNotFound) {
			t.Errorf("LookupDomain(%q): %v, want libvirtconn.ErrDomainNotFound", key, err)
		}
	}
	for _, c := range []struct {
		d    DomainRef
		want bool
	}{
		{DomainRef{Name: vm1.Name, UUID: vm1.UUID}, true},
		{DomainRef{UUID: vm1.UUID}, true}, // name looked up
		{DomainRef{Name: vm1.Name}, true}, // UUID looked up
		{DomainRef{Name: vm2.Name, UUID: vm2.UUID}, false},
		{DomainRef{Name: "gone", UUID: libvirtfake.TestUUID(9)}, false},
	} {
		got, err := r.w.DomainRunning(ctx, c.d)
		if err != nil || got != c.want {
			t.Errorf("DomainRunning(%+v) = %v, %v; want %v", c.d, got, err, c.want)
		}
	}
	if _, err := r.w.DomainXML(ctx, DomainRef{Name: "gone", UUID: libvirtfake.TestUUID(9)}); !errors.Is(err, libvirtconn.ErrDomainNotFound) {
		t.Errorf("DomainXML(gone): %v", err)
	}
	if _, err := r.w.DomainXML(ctx, DomainRef{Name: "x", UUID: "not-a-uuid"}); err == nil {
		t.Error("DomainXML with a bad UUID: no error")
	}

	ref1 := DomainRef{Name: vm1.Name, UUID: vm1.UUID}
	reply, err := r.w.QEMUMonitorCommand(ctx, ref1, `{"execute":"announce-self","arguments":{"initial":50,"max":550,"rounds":5,"step":100,"interfaces":["net0"]}}`)
	if err != nil || !strings.Contains(reply, `"return"`) {
		t.Errorf("announce-self: %q, %v", reply, err)
	}
	reply, err = r.w.QEMUMonitorCommand(ctx, ref1, `{"execute":"nope"}`)
	if err != nil || !strings.Contains(reply, "CommandNotFound") || !strings.Contains(reply, "libvirt-24") {
		t.Errorf("QMP error: %q, %v; want the reply, unparsed", reply, err)
	}
	s.SetReadOnly(true)
	if _, err := r.w.QEMUMonitorCommand(ctx, ref1, `{"execute":"announce-self"}`); err == nil || !strings.Contains(err.Error(), "read only") {
		t.Errorf("QMP on a read-only connection: %v", err)
	}
	if got := s.Calls(libvirtfake.ProgramQEMU, libvirtfake.ProcQEMUDomainMonitorCommand); got != 3 {
		t.Errorf("monitor commands received: %d, want 3", got)
	}
}

// Twenty connection losses leak neither goroutines nor file descriptors.
func TestFakeReconnectNoLeak(t *testing.T) {
	s := libvirtfake.Start(t)
	libvirtfake.AddTestDomain(t, s, 1, libvirtconn.StateRunning, 1, 1)
	ignore := goleak.IgnoreCurrent()
	fdsBefore := openFDs(t)
	func() {
		cfg := testConfig(t, s.Path())
		cfg.Logger = zap.NewNop()
		w := New(cfg)
		events := make(chan Event, 64)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- w.Run(ctx, events) }()
		received := make(chan Event, 64)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { // the consumer
			defer wg.Done()
			for {
				select {
				case ev := <-events:
					received <- ev
				case <-ctx.Done():
					return
				}
			}
		}()
		for i := 0; i < 20; i++ {
			// connected, and the previous connection gone from the server
			netnstest.WaitFor(t, "ready", func() bool { return w.Ready() && s.Connections() == 1 && s.Subscribers() == 1 })
			emit(t, s, "vm1", resumedUnpaused)
			select {
			case ev := <-received:
				if ev.Name() != "resumed/unpaused" {
					t.Fatalf("got %s", ev)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("reconnect %d: event not received", i)
			}
			s.DropConnections()
			netnstest.WaitFor(t, "reconnect", func() bool { return testutil.ToFloat64(cfg.Metrics.reconnects) == float64(i+1) })
		}
		netnstest.WaitFor(t, "ready", w.Ready)
		if got := testutil.ToFloat64(cfg.Metrics.reconnects); got != 20 {
			t.Errorf("reconnects = %v, want 20", got)
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run returned %v", err)
		}
		wg.Wait()
	}()
	netnstest.WaitFor(t, "all connections closed", func() bool { return s.Connections() == 0 })
	if err := goleak.Find(ignore); err != nil {
		t.Errorf("goroutines leaked: %v", err)
	}
	if after := openFDs(t); after > fdsBefore {
		t.Errorf("open fds: %d before, %d after 20 reconnects", fdsBefore, after)
	}
}

// openFDs counts this process's open file descriptors.
func openFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// checkLeaks fails t if goroutines started during the test outlive it
// (checked after every cleanup registered later, the fake server's too).
func TestRunMisuse(t *testing.T) {
	s := libvirtfake.Start(t)
	r := startWatcher(t, testConfig(t, s.Path()), 1)
	r.waitReady(t, 5*time.Second)
	if err := r.w.Run(context.Background(), make(chan Event)); err == nil {
		t.Error("a second Run did not fail")
	}
	if err := New(Config{}).Run(context.Background(), nil); err == nil {
		t.Error("Run without an output channel did not fail")
	}
}

// A libvirtd that keeps the socket open but stops answering is noticed by
// the ping, without any call from the agent.
func TestFakeWedgedLibvirtdNoticedByPing(t *testing.T) {
	libvirtfake.CheckLeaks(t)
	s := libvirtfake.Start(t)
	cfg := testConfig(t, s.Path())
	cfg.Conn.RPCTimeout = 100 * time.Millisecond
	cfg.PingEvery = 50 * time.Millisecond
	r := startWatcher(t, cfg, 16)
	r.waitReady(t, 5*time.Second)
	time.Sleep(200 * time.Millisecond) // a few answered pings
	if testutil.ToFloat64(r.m.reconnects) != 0 {
		t.Fatal("reconnected although libvirt answered")
	}
	s.Hang(libvirtfake.ProgramRemote, libvirtfake.ProcConnectGetLibVersion, true)
	netnstest.WaitFor(t, "a ping to time out", func() bool { return rpcTimeouts(t, r.m, "connect_get_lib_version") >= 1 })
	netnstest.WaitFor(t, "the reconnect", func() bool { return testutil.ToFloat64(r.m.reconnects) >= 1 })
	s.Hang(libvirtfake.ProgramRemote, libvirtfake.ProcConnectGetLibVersion, false)
	r.waitReady(t, 5*time.Second)
	if n := s.Calls(libvirtfake.ProgramRemote, libvirtfake.ProcConnectGetLibVersion); n < 3 {
		t.Errorf("%d pings, want >= 3", n)
	}
}
