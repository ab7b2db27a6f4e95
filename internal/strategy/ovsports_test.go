package strategy

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/internal/ovstest"
	"github.com/rarp-announce/rarp-announce/pkg/announce"
	"github.com/rarp-announce/rarp-announce/pkg/ovs"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// fakeVsctl is an ovs-vsctl stand-in: a script printing a file the test
// rewrites, so the Announcer's logic runs without Open vSwitch.
type fakeVsctl struct {
	path, out string
}

func newFakeVsctl(t *testing.T, output string) *fakeVsctl {
	t.Helper()
	dir := t.TempDir()
	f := &fakeVsctl{path: filepath.Join(dir, "ovs-vsctl"), out: filepath.Join(dir, "out")}
	if err := os.WriteFile(f.path, []byte("#!/bin/sh\nexec cat "+f.out+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	f.set(t, output)
	return f
}

func (f *fakeVsctl) set(t *testing.T, output string) {
	t.Helper()
	if err := os.WriteFile(f.out, []byte(output), 0o644); err != nil {
		t.Fatal(err)
	}
}

// fakeInjector records frames; fail, if set, decides each frame's error.
type fakeInjector struct {
	mu     sync.Mutex
	frames []injected
	fail   func(n int) error
	delay  atomic.Int64 // nanoseconds each Inject takes
	before atomic.Pointer[func()]
}

type injected struct {
	bridge string
	inPort int
	src    rarp.MAC
	vlan   uint16
	at     time.Time
}

func (f *fakeInjector) Inject(ctx context.Context, bridge string, inPort int, frame []byte) error {
	time.Sleep(time.Duration(f.delay.Load()))
	if fn := f.before.Load(); fn != nil {
		(*fn)()
	}
	var fr rarp.Frame
	if err := fr.UnmarshalBinary(frame); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.frames = append(f.frames, injected{bridge, inPort, fr.Source, fr.VLAN.ID, time.Now()})
	if f.fail != nil {
		return f.fail(len(f.frames))
	}
	return nil
}

func (f *fakeInjector) Close() error { return nil }

func (f *fakeInjector) got() []injected {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.frames)
}

func fakeAnnouncer(t *testing.T, vsctl string, inj ovs.Injector, tweak func(*ovsConfig)) (*OVSPorts, *ovs.Metrics) {
	t.Helper()
	m := ovs.NewMetrics(nil)
	cfg := ovsConfig{Config: ovs.Config{Lookup: ovs.LookupVsctl, Vsctl: vsctl, Injector: inj}, OVSPortsConfig: OVSPortsConfig{Metrics: m, Logger: zaptest.NewLogger(t)}}
	if tweak != nil {
		tweak(&cfg)
	}
	return newAnnouncer(t, cfg), m
}

var mac = rarp.MAC{0x52, 0x54, 0, 0, 0, 1}

// TestAnnounceSupersedesPerPortAndMAC: a new announce for the same port
// and MAC replaces the old one, including VLANs it no longer asks for.
func TestAnnounceSupersedesPerPortAndMAC(t *testing.T) {
	vs := newFakeVsctl(t, ovstest.VsctlTrunk) // vnet3, ofport 7, trunks 200,300
	inj := &fakeInjector{}
	a, _ := fakeAnnouncer(t, vs.path, inj, nil)
	long := announce.Schedule{Rounds: 2, Initial: time.Hour, Max: time.Hour, Bursts: 1}
	if _, err := a.Announce(context.Background(), "vnet3", mac, []rarp.VLAN{{ID: 200}, {ID: 300}}, long, time.Now()); err != nil {
		t.Fatal(err)
	}
	if n := a.Running(); n != 2 {
		t.Fatalf("%d running, want 2 (one per VLAN)", n)
	}
	got := inj.got()
	if len(got) != 2 || got[0].bridge != "br-int" || got[0].inPort != 7 {
		t.Fatalf("injected %+v", got)
	}
	if _, err := a.Announce(context.Background(), "vnet3", mac, []rarp.VLAN{{ID: 300}}, long, time.Now()); err != nil {
		t.Fatal(err)
	}
	netnstest.WaitFor(t, "the VLAN 200 announce to stop", func() bool { return a.Running() == 1 })
	// Another MAC on the same port is independent.
	other := rarp.MAC{0x52, 0x54, 0, 0, 0, 2}
	if _, err := a.Announce(context.Background(), "vnet3", other, []rarp.VLAN{{ID: 300}}, long, time.Now()); err != nil {
		t.Fatal(err)
	}
	if n := a.Running(); n != 2 {
		t.Fatalf("%d running, want 2", n)
	}
	if n := a.Cancel("vnet3", mac); n != 1 {
		t.Fatalf("Cancel stopped %d", n)
	}
	if n := a.CancelMAC(other); n != 1 {
		t.Fatalf("CancelMAC stopped %d", n)
	}
	netnstest.WaitFor(t, "all announces to stop", func() bool { return a.Running() == 0 })
}

// TestAnnounceReturnsFirstFrameError: Announce reports the first frame's
// failure with its reason; the schedule goes on, and each failed frame is
// counted.
func TestAnnounceReturnsFirstFrameError(t *testing.T) {
	vs := newFakeVsctl(t, ovstest.VsctlAccess)
	inj := &fakeInjector{fail: func(n int) error {
		if n == 1 {
			return ovs.ErrTimeout
		}
		return nil
	}}
	frames := make(chan announce.Sent, 10)
	a, m := fakeAnnouncer(t, vs.path, inj, func(c *ovsConfig) { c.OnFrame = func(s announce.Sent) { frames <- s } })
	s := announce.Schedule{Rounds: 2, Initial: 10 * time.Millisecond, Max: 10 * time.Millisecond, Bursts: 1}
	_, err := a.Announce(context.Background(), "vm0", mac, nil, s, time.Now())
	if !errors.Is(err, ovs.ErrTimeout) {
		t.Fatalf("err %v, want ovs.ErrTimeout", err)
	}
	<-frames
	if second := <-frames; second.Err != nil {
		t.Fatalf("second frame: %v", second.Err)
	}
	if n := failures(m, "timeout"); n != 1 {
		t.Fatalf("timeouts counted %v", n)
	}
}

// TestAnnounceWaitsForTheFirstFrame: Announce returns only after the first
// frame went out, not before.
func TestAnnounceWaitsForTheFirstFrame(t *testing.T) {
	vs := newFakeVsctl(t, ovstest.VsctlAccess)
	inj := &fakeInjector{}
	inj.delay.Store(int64(50 * time.Millisecond))
	a, _ := fakeAnnouncer(t, vs.path, inj, nil)
	if _, err := a.Announce(context.Background(), "vm0", mac, nil, announce.DefaultSchedule(), time.Now()); err != nil {
		t.Fatal(err)
	}
	if n := len(inj.got()); n != 1 {
		t.Fatalf("%d frames injected when Announce returned, want 1", n)
	}
	// A context that ends while Announce waits for its first frame:
	// Announce gives up waiting, the frame still goes out. The frame must
	// wait in the link's queue for that: the first announce's next repeat
	// is parked in Inject, holding the link, so the caller cannot send
	// the new first frame inline (as it does on an idle link). The hook
	// is set before the delay drops, so no Inject misses it.
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	hold := func() { once.Do(func() { close(entered); <-release }) }
	inj.before.Store(&hold)
	inj.delay.Store(0)
	<-entered
	ctx, cancel := context.WithCancel(context.Background())
	other := rarp.MAC{0x52, 0x54, 0, 0, 0, 3}
	res := make(chan error, 1)
	go func() {
		_, err := a.Announce(ctx, "vm0", other, nil, announce.Schedule{Rounds: 1, Bursts: 1}, time.Now())
		res <- err
	}()
	netnstest.WaitFor(t, "the second announce to be queued", func() bool { return a.Running() == 2 })
	cancel()
	if err := <-res; !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want the context's error", err)
	}
	close(release)
	netnstest.WaitFor(t, "the frame to go out anyway", func() bool {
		return slices.ContainsFunc(inj.got(), func(f injected) bool { return f.src == other })
	})
}

// TestCancelWhileInjecting: while a first frame is being injected (a hung
// ovs-vswitchd holds it up to the frame timeout), a stopped domain's
// cancel and the landing's context still act at once. Injected inline in
// Announce's goroutine, the frame held OVSPorts' lock through it.
func TestCancelWhileInjecting(t *testing.T) {
	vs := newFakeVsctl(t, ovstest.VsctlAccess)
	inj := &fakeInjector{}
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	hold := func() { once.Do(func() { close(entered); <-release }) }
	inj.before.Store(&hold)
	a, _ := fakeAnnouncer(t, vs.path, inj, nil)
	defer close(release)
	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan error, 1)
	go func() {
		_, err := a.Announce(ctx, "vm0", mac, nil, announce.DefaultSchedule(), time.Now())
		res <- err
	}()
	<-entered
	cancelled := make(chan int, 1)
	go func() { cancelled <- a.CancelMAC(mac) }()
	select {
	case n := <-cancelled:
		if n != 1 {
			t.Fatalf("CancelMAC cancelled %d announces, want 1", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("CancelMAC waited for the injection")
	}
	cancel()
	select {
	case err := <-res:
		if err == nil {
			t.Fatal("Announce returned no error for a cancelled first frame")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Announce waited for the injection after its context ended")
	}
}

// TestBridgePacing: the frame limit applies per bridge, across its ports.
func TestBridgePacing(t *testing.T) {
	vs := newFakeVsctl(t, ovstest.VsctlAccess)
	inj := &fakeInjector{}
	a, _ := fakeAnnouncer(t, vs.path, inj, func(c *ovsConfig) { c.Pacing = announce.Pacing{PerSecond: 50, Burst: 2} })
	start := time.Now()
	for i := range 4 {
		// Different MACs on the same bridge; the fake reports one port,
		// pacing does not care which.
		m := rarp.MAC{0x52, 0x54, 0, 0, 1, byte(i)}
		if _, err := a.Announce(context.Background(), "vm0", m, nil, announce.Schedule{Rounds: 1, Bursts: 1}, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	got := inj.got()
	if len(got) != 4 {
		t.Fatalf("%d frames", len(got))
	}
	// Two tokens of burst, then one per 20 ms: the 4th frame cannot be
	// earlier than 40 ms after the start.
	if d := got[3].at.Sub(start); d < 35*time.Millisecond {
		t.Fatalf("4th frame after %v: pacing did not hold it back", d)
	}
}

func TestAnnounceRejectsBadInput(t *testing.T) {
	vs := newFakeVsctl(t, ovstest.VsctlAccess)
	inj := &fakeInjector{}
	a, m := fakeAnnouncer(t, vs.path, inj, nil)
	if _, err := a.Announce(context.Background(), "vm0", rarp.Broadcast, nil, announce.DefaultSchedule(), time.Now()); err == nil {
		t.Fatal("broadcast MAC accepted")
	}
	if _, err := a.Announce(context.Background(), "vm0", mac, nil, announce.Schedule{}, time.Now()); err == nil {
		t.Fatal("zero schedule accepted")
	}
	if _, err := a.Announce(context.Background(), "", mac, nil, announce.DefaultSchedule(), time.Now()); !errors.Is(err, ovs.ErrPortNotFound) {
		t.Fatalf("empty port: %v", err)
	}
	vs.set(t, "garbage\n")
	if _, err := a.Announce(context.Background(), "vm0", mac, nil, announce.DefaultSchedule(), time.Now()); !errors.Is(err, ovs.ErrCommand) {
		t.Fatalf("garbage from ovs-vsctl: %v", err)
	}
	vs.set(t, ovstest.VsctlTrunk)
	if _, err := a.Announce(context.Background(), "vm0", mac, nil, announce.DefaultSchedule(), time.Now()); !errors.Is(err, ovs.ErrCommand) {
		t.Fatalf("ovs-vsctl answering for another port: %v", err)
	}
	if n := len(inj.got()); n != 0 {
		t.Fatalf("%d frames injected", n)
	}
	if n := failures(m, "command"); n != 2 {
		t.Fatalf("command failures %v, want 2", n)
	}
	a.Close()
	vs.set(t, ovstest.VsctlAccess)
	if _, err := a.Announce(context.Background(), "vm0", mac, nil, announce.DefaultSchedule(), time.Now()); !errors.Is(err, announce.ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
	for _, c := range []ovs.Config{{Injection: "carrier-pigeon"}, {Lookup: "guess"}, {DB: "ssl:10.0.0.1:6640"}} {
		if _, err := ovs.Open(c); err == nil {
			t.Fatalf("%+v accepted", c)
		}
	}
}

// TestFinishedAnnouncesAreForgotten: the per port+MAC bookkeeping does not
// grow with every VM ever announced.
func TestFinishedAnnouncesAreForgotten(t *testing.T) {
	vs := newFakeVsctl(t, ovstest.VsctlAccess)
	a, _ := fakeAnnouncer(t, vs.path, &fakeInjector{}, nil)
	for i := range 50 {
		m := rarp.MAC{0x52, 0x54, 0, 0, 2, byte(i)}
		if _, err := a.Announce(context.Background(), "vm0", m, nil, announce.Schedule{Rounds: 1, Bursts: 1}, time.Now()); err != nil {
			t.Fatal(err)
		}
		netnstest.WaitFor(t, "the announce to end", func() bool { return a.Running() == 0 })
	}
	a.mu.Lock()
	n := len(a.active)
	a.mu.Unlock()
	if n > 1 {
		t.Fatalf("%d port+MAC entries kept after their announces ended", n)
	}
}

// Two announces of one port and MAC race across a re-plug: the older
// lookup read the old ofport and answers last. The newer lookup's ofport
// must win; before, the older announce superseded the newer and moved the
// frames back to an OpenFlow port that no longer exists.
func TestAnnounceOlderLookupDoesNotWin(t *testing.T) {
	dir := t.TempDir()
	vsctl, out, slow := filepath.Join(dir, "ovs-vsctl"), filepath.Join(dir, "out"), filepath.Join(dir, "slow")
	// Every call reads the port as it is when the call starts; the first
	// call after slow is created answers 300 ms later.
	script := "#!/bin/sh\no=$(cat " + out + ")\nif rm " + slow + " 2>/dev/null; then sleep 0.3; fi\nprintf '%s\\n' \"$o\"\n"
	if err := os.WriteFile(vsctl, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name, s string) {
		t.Helper()
		if err := os.WriteFile(name, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(out, ovstest.VsctlTrunk) // vnet3, ofport 7
	write(slow, "")
	inj := &fakeInjector{}
	a, _ := fakeAnnouncer(t, vsctl, inj, func(c *ovsConfig) { c.Vsctl = vsctl })
	long := announce.Schedule{Rounds: 2, Initial: time.Hour, Max: time.Hour, Bursts: 1}
	vlans := []rarp.VLAN{{ID: 200}}

	type answer struct {
		hs  []*announce.Handle
		err error
	}
	older := make(chan answer, 1)
	go func() {
		hs, err := a.Announce(context.Background(), "vnet3", mac, vlans, long, time.Now())
		older <- answer{hs, err}
	}()
	netnstest.WaitFor(t, "the older lookup to start", func() bool {
		_, err := os.Stat(slow)
		return errors.Is(err, os.ErrNotExist)
	})
	// The port is re-plugged: ofport 7 becomes 9.
	write(out, strings.Replace(ovstest.VsctlTrunk, `["vnet3",7,`, `["vnet3",9,`, 1))
	newer, err := a.Announce(context.Background(), "vnet3", mac, vlans, long, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	o := <-older
	if o.err != nil || len(o.hs) != 0 {
		t.Errorf("the older announce returned %d handles, error %v; want none and nil", len(o.hs), o.err)
	}
	for _, h := range newer {
		if h.Superseded() || done(h) {
			t.Errorf("the newer announce %s was stopped by the older one", h.Key())
		}
	}
	for _, f := range inj.got() {
		if f.inPort != 9 {
			t.Errorf("a frame was injected on ofport %d; want only the re-plugged port's 9", f.inPort)
		}
	}
	if n := a.Running(); n != 1 {
		t.Errorf("%d announces running, want 1", n)
	}
}

// The ovs strategy tries a port parked on VLAN 4095 again every
// RewireEvery: each try is the same failure, logged and counted once per
// failureQuiet. Each try used to warn and count (100 ports waiting for
// Neutron: 500 warnings a second).
func TestRetriedFailureLoggedOnce(t *testing.T) {
	vs := newFakeVsctl(t, strings.Replace(ovstest.VsctlAccess, `"vm0",100,`, `"vm0",4095,`, 1))
	core, logs := observer.New(zap.DebugLevel)
	a, m := fakeAnnouncer(t, vs.path, &fakeInjector{}, func(c *ovsConfig) { c.Logger = zap.New(core) })
	for range 5 {
		if _, err := a.Announce(context.Background(), "vm0", mac, nil, oneFrame(), time.Now()); !errors.Is(err, ovs.ErrPortNotWired) {
			t.Fatalf("err %v, want ErrPortNotWired", err)
		}
	}
	if n := failures(m, "port_not_wired"); n != 1 {
		t.Errorf("port_not_wired counted %v times for five tries, want 1", n)
	}
	if n := logs.FilterLevelExact(zap.WarnLevel).Len(); n != 1 {
		t.Errorf("%d warnings for five tries, want 1", n)
	}
	if n := logs.FilterMessage("ovs announce not possible (again)").Len(); n != 4 {
		t.Errorf("%d debug lines for the four retries, want 4", n)
	}
}
