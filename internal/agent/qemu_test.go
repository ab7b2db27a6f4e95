package agent_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/rarp-announce/rarp-announce/internal/agent"
	"github.com/rarp-announce/rarp-announce/internal/app"
	"github.com/rarp-announce/rarp-announce/internal/config"
	"github.com/rarp-announce/rarp-announce/internal/libvirtfake"
	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/pkg/announce"
	"github.com/rarp-announce/rarp-announce/pkg/libvirtconn"
	"github.com/rarp-announce/rarp-announce/pkg/libvirtwatch"
	"github.com/rarp-announce/rarp-announce/pkg/plan"
)

// qemuRig is the daemon's event path with the qemu strategy for bridge
// NICs: a fake libvirtd -> libvirtwatch.Watcher -> Agent -> qmp.Announcer
// -> a libvirtconn.Redialer (QMP's own connection, as in the daemon) ->
// the fake's monitor. Only libvirtd and QEMU are fake, so failures can be
// made to order.
type qemuRig struct {
	s    *libvirtfake.Server
	w    *libvirtwatch.Watcher
	qc   *libvirtconn.Redialer
	a    *agent.Agent
	reg  *prometheus.Registry
	logs *observer.ObservedLogs

	mu    sync.Mutex
	reply string   // what the fake QEMU answers
	cmds  []string // what it was asked
}

const qemuVM = "vm1"

func startQEMURig(t *testing.T, rpcTimeout time.Duration) *qemuRig {
	t.Helper()
	s := libvirtfake.StartAt(t, filepath.Join(t.TempDir(), "libvirt-sock"))
	r := &qemuRig{s: s, reply: `{"return":{},"id":"libvirt-1"}`, reg: prometheus.NewRegistry()}
	s.QMP = func(_ libvirtfake.Domain, cmd string) (string, error) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.cmds = append(r.cmds, cmd)
		return r.reply, nil
	}
	uuid := "6c61622d-766d-4000-8000-00000000a001"
	err := s.AddDomain(libvirtfake.Domain{Name: qemuVM, UUID: uuid, ID: 1, State: 1, Reason: 1,
		XML: libvirtfake.LiveXML(qemuVM, uuid, 1, libvirtfake.NIC{MAC: "52:54:00:00:a0:01", Target: "vnet1"})})
	if err != nil {
		t.Fatal(err)
	}

	core, logs := observer.New(zap.InfoLevel)
	r.logs = logs
	log := zap.New(zapcore.NewTee(core, zaptest.NewLogger(t).Core()))
	lvm := libvirtwatch.NewMetrics(nil)
	r.reg.MustRegister(lvm)
	conn := libvirtconn.Config{Socket: s.Path(), URI: "test:///default", RPCTimeout: rpcTimeout,
		Logger: log.Named("libvirt"), Metrics: lvm.RPC}
	r.w = libvirtwatch.New(libvirtwatch.Config{Conn: conn,
		BackoffMin: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond,
		AnnounceOnResync: true, Logger: log.Named("libvirt"), Metrics: lvm,
	})
	r.qc = libvirtconn.NewRedialer(conn)
	t.Cleanup(func() { _ = r.qc.Close() })
	// The parts from the daemon's composition root, QMP through the rig.
	acfg := config.Default()
	acfg.FDBRepair = false
	acfg.Strategies.OpenVSwitch = config.StrategySkip
	parts, err := app.Build(context.Background(), acfg, app.Options{Registerer: r.reg, Logger: log, Monitor: r.monitor})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(parts.Close)
	r.a = agent.New(parts.Deps(r.w, log.Named("agent")), agent.Settings{
		Plan:     plan.Options{Strategies: plan.Strategies{plan.KindBridge: plan.QEMU}},
		Schedule: announce.DefaultSchedule(),
	})

	ctx, cancel := context.WithCancel(context.Background())
	events := make(chan libvirtwatch.Event, 64)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = r.w.Run(ctx, events) }()
	go func() { defer wg.Done(); r.a.Run(ctx, events) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	r.waitSubscribed(t)
	return r
}

// monitor is what the daemon gives qmp.Announcer.
func (r *qemuRig) monitor(ctx context.Context, uuid, cmd string) (string, error) {
	return r.qc.QEMUMonitorCommand(ctx, libvirtwatch.DomainRef{UUID: uuid}, cmd)
}

func (r *qemuRig) setReply(s string) {
	r.mu.Lock()
	r.reply = s
	r.mu.Unlock()
}

func (r *qemuRig) waitSubscribed(t *testing.T) {
	t.Helper()
	if err := r.s.WaitSubscribers(1, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	netnstest.WaitWithin(t, 10*time.Second, "the watcher to be ready", r.w.Ready)
}

// migrateIn plays an incoming pre-copy migration on the fake.
func (r *qemuRig) migrateIn(t *testing.T) {
	t.Helper()
	for _, ev := range [][2]int32{
		{libvirtwatch.EventStarted, libvirtwatch.DetailStartedMigrated},
		{libvirtwatch.EventResumed, libvirtwatch.DetailResumedMigrated},
	} {
		if _, err := r.s.Emit(qemuVM, ev[0], ev[1]); err != nil {
			t.Fatal(err)
		}
	}
}

// counter reads one counter of the registry by name and label values
// ("k=v" pairs); the series must exist.
func (r *qemuRig) counter(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	v, ok := gathered(t, r.reg, name, labels...)
	if !ok {
		t.Fatalf("no %s%v", name, labels)
	}
	return v
}

func (r *qemuRig) qmpCalls(t *testing.T, result string) float64 {
	return r.counter(t, "rarp_announce_qmp_announce_self_total", "result="+result)
}

func (r *qemuRig) nics(t *testing.T, result string) float64 {
	return r.counter(t, "rarp_announce_nic_announces_total", "strategy=qemu", "result="+result)
}

// waitLog waits for the n-th log entry with this message and returns it.
func (r *qemuRig) waitLog(t *testing.T, msg string, n int) observer.LoggedEntry {
	t.Helper()
	var got []observer.LoggedEntry
	netnstest.WaitWithin(t, 10*time.Second, fmt.Sprintf("log %q #%d", msg, n), func() bool {
		got = r.logs.FilterMessage(msg).All()
		return len(got) >= n
	})
	return got[n-1]
}

func qemuErrorField(e observer.LoggedEntry) string {
	if err, ok := e.ContextMap()["error"].(string); ok {
		return err
	}
	return ""
}

// The failures of the qemu strategy, one landing each, on one running
// agent: QEMU's error reply, libvirt not answering (as during an incoming
// migration job), the read-only socket. Each is a failed NIC, logged with
// its reason and counted under its own result; the agent keeps serving
// and the next landing is announced.
func TestQEMUStrategyFailures(t *testing.T) {
	r := startQEMURig(t, 300*time.Millisecond)

	// 1. QEMU refuses: a QEMU before 4.1 knows no "id" argument. libvirt's
	// call succeeds; the error is in the reply.
	r.setReply(`{"id":"libvirt-14","error":{"class":"GenericError","desc":"Parameter 'id' is unexpected"}}`)
	r.migrateIn(t)
	e := r.waitLog(t, "QEMU announce-self failed", 1)
	if err := qemuErrorField(e); !strings.Contains(err, "GenericError: Parameter 'id' is unexpected") {
		t.Errorf("QMP error logged as %q, want QEMU's class and description", err)
	}
	netnstest.WaitWithin(t, 10*time.Second, "the NIC counted failed", func() bool { return r.nics(t, agent.ResultFailed) == 1 })
	if got := r.qmpCalls(t, "qmp_error"); got != 1 {
		t.Errorf("qmp_error = %v, want 1", got)
	}

	// 2. libvirt does not answer (during an incoming migration job the
	// monitor call waits for the job): timeout; the QMP connection is
	// closed, the watcher's is not touched.
	r.s.Hang(libvirtfake.ProgramQEMU, libvirtfake.ProcQEMUDomainMonitorCommand, true)
	r.migrateIn(t)
	t0 := time.Now()
	e = r.waitLog(t, "QEMU announce-self failed: libvirt did not answer in time (monitor commands wait while a migration job runs)", 1)
	t.Logf("timeout logged after %v: %s", time.Since(t0).Round(time.Millisecond), qemuErrorField(e))
	if e.Level != zapcore.ErrorLevel || !strings.Contains(qemuErrorField(e), "did not answer in time") {
		t.Errorf("timeout logged as %v %q", e.Level, qemuErrorField(e))
	}
	netnstest.WaitWithin(t, 10*time.Second, "the NIC counted failed", func() bool { return r.nics(t, agent.ResultFailed) == 2 })
	if got := r.qmpCalls(t, "timeout"); got != 1 {
		t.Errorf("timeout = %v, want 1", got)
	}
	if got := r.counter(t, "rarp_announce_libvirt_rpc_timeouts_total", "procedure=domain_qemu_monitor_command"); got != 1 {
		t.Errorf("libvirt rpc_timeouts{domain_qemu_monitor_command} = %v, want 1", got)
	}
	if got := r.counter(t, "rarp_announce_libvirt_reconnects_total"); got != 0 {
		t.Errorf("the watcher reconnected %v times: a QMP timeout must not cost the event connection", got)
	}
	r.s.Hang(libvirtfake.ProgramQEMU, libvirtfake.ProcQEMUDomainMonitorCommand, false)

	// 3. The agent keeps serving: the next landing is announced (on a new
	// QMP connection), with our schedule's timings, the NIC's alias and our
	// timer id.
	r.setReply(`{"return":{},"id":"libvirt-15"}`)
	r.mu.Lock()
	r.cmds = nil
	r.mu.Unlock()
	r.migrateIn(t)
	r.waitLog(t, "QEMU announce-self accepted", 1)
	// The landing counts its NICs once every strategy returned, after
	// the strategy's log line.
	netnstest.WaitWithin(t, 10*time.Second, "the NIC counted started", func() bool { return r.nics(t, agent.ResultStarted) >= 1 })
	if got := r.nics(t, agent.ResultStarted); got != 1 {
		t.Errorf("started = %v, want 1", got)
	}
	if got := r.qmpCalls(t, "ok"); got != 1 {
		t.Errorf("ok = %v, want 1", got)
	}
	r.mu.Lock()
	cmds := append([]string(nil), r.cmds...)
	r.mu.Unlock()
	want := `{"execute":"announce-self","arguments":{"initial":50,"max":550,"rounds":5,"step":100,"interfaces":["net0"],"id":"rarp-announce:net0"}}` // the timer named by the NICs (qmp.Announcer)
	if len(cmds) != 1 || cmds[0] != want {
		t.Errorf("QEMU was asked %q, want once %s", cmds, want)
	}

	// 4. The read-only socket: libvirt refuses the call.
	r.s.SetReadOnly(true)
	r.migrateIn(t)
	e = r.waitLog(t, "QEMU announce-self failed", 2)
	if err := qemuErrorField(e); !strings.Contains(err, "read only access prevents virDomainQemuMonitorCommand") {
		t.Errorf("read-only refusal logged as %q", err)
	}
	netnstest.WaitWithin(t, 10*time.Second, "the NIC counted failed", func() bool { return r.nics(t, agent.ResultFailed) == 3 })
	if got := r.qmpCalls(t, "rpc_error"); got != 1 {
		t.Errorf("rpc_error = %v, want 1", got)
	}

	// 5. The same failure by hand (rarp-announce announce): the NIC's
	// result says failed and why.
	ref, err := r.w.LookupDomain(context.Background(), qemuVM) // as the command does
	if err != nil {
		t.Fatal(err)
	}
	res, err := r.a.AnnounceDomain(context.Background(), ref, plan.QEMU)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 || res[0].Result != agent.ResultFailed || res[0].Err == nil || !strings.Contains(res[0].Err.Error(), "read only") {
		t.Errorf("AnnounceDomain on the read-only socket: %+v", res)
	}
	r.s.SetReadOnly(false)
	r.setReply(`{"error":{"class":"CommandNotFound","desc":"The command announce-self has not been found"}}`)
	res, err = r.a.AnnounceDomain(context.Background(), ref, plan.QEMU)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 || res[0].Result != agent.ResultFailed || !strings.Contains(fmt.Sprint(res[0].Err), "CommandNotFound") {
		t.Errorf("AnnounceDomain on a QEMU without announce-self: %+v", res)
	}
	if got := r.qmpCalls(t, "qmp_error"); got != 2 {
		t.Errorf("qmp_error = %v, want 2", got)
	}
	if n := r.logs.FilterLevelExact(zapcore.DPanicLevel).Len() + r.logs.FilterLevelExact(zapcore.PanicLevel).Len(); n != 0 {
		t.Errorf("%d panic-level log entries", n)
	}
}
