package announce

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// recorder is a fake Opener that records frames with their time; unit
// tests of timing and ordering use it, the netns tests use real sockets.
type recorder struct {
	mu     sync.Mutex
	frames []recorded
	fail   error
}

type recorded struct {
	at     time.Time
	ifname string
	frame  rarp.Frame
}

func (r *recorder) open(ifname string) (Sender, error) {
	if r.fail != nil {
		return nil, r.fail
	}
	return recSender{r, ifname}, nil
}

type recSender struct {
	r      *recorder
	ifname string
}

func (s recSender) Send(b []byte) error {
	var f rarp.Frame
	if err := f.UnmarshalBinary(b); err != nil {
		return err
	}
	s.r.mu.Lock()
	s.r.frames = append(s.r.frames, recorded{time.Now(), s.ifname, f})
	s.r.mu.Unlock()
	return nil
}
func (recSender) Close() error { return nil }

func (r *recorder) all() []recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]recorded(nil), r.frames...)
}

func mac(i byte) rarp.MAC { return rarp.MAC{0x52, 0x54, 0, 0, 0, i} }

// mustAnnounce starts req on a, failing the test if a refuses it.
func mustAnnounce(t testing.TB, a *Announcer, req Request) *Handle {
	t.Helper()
	h, err := a.Announce(req)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// waitAll waits up to d for each of hs in turn.
func waitAll(t *testing.T, hs []*Handle, d time.Duration) {
	t.Helper()
	for _, h := range hs {
		waitDone(t, h, d)
	}
}

func waitDone(t *testing.T, h *Handle, d time.Duration) {
	t.Helper()
	select {
	case <-h.Done():
	case <-time.After(d):
		t.Fatalf("announce %s not done after %v", h.Key(), d)
	}
}

func TestAnnounceFollowsSchedule(t *testing.T) {
	rec := &recorder{}
	a := New(Options{Open: rec.open, Pacing: DefaultPacing()})
	defer a.Close()
	start := time.Now()
	h := mustAnnounce(t, a, Request{MAC: mac(1), Interface: "br0", VLAN: rarp.VLAN{ID: 42}, Schedule: DefaultSchedule()})
	waitDone(t, h, 3*time.Second)
	got := rec.all()
	if len(got) != 5 || h.Sent() != 5 || h.Failed() != 0 {
		t.Fatalf("%d frames recorded, handle says %d sent %d failed", len(got), h.Sent(), h.Failed())
	}
	for i, off := range DefaultSchedule().Burst() {
		at := got[i].at.Sub(start)
		// Never early; late only by scheduling noise on a shared machine.
		if at < off || at > off+200*ms {
			t.Errorf("frame %d at %v, want %v", i, at, off)
		}
		if got[i].frame != rarp.Announce(mac(1), rarp.VLAN{ID: 42}) || got[i].ifname != "br0" {
			t.Errorf("frame %d is %s on %s", i, got[i].frame.String(), got[i].ifname)
		}
	}
}

func TestSupersedeDoesNotDoubleTheBurst(t *testing.T) {
	rec := &recorder{}
	m := NewMetrics(nil)
	a := New(Options{Open: rec.open, Metrics: m})
	defer a.Close()
	s := Schedule{Initial: 100 * ms, Max: 100 * ms, Rounds: 5, Bursts: 1}
	req := Request{MAC: mac(1), Interface: "br0", Schedule: s}
	h1 := mustAnnounce(t, a, req)
	time.Sleep(150 * ms) // h1 sent frames 1 and 2
	h2 := mustAnnounce(t, a, req)
	waitDone(t, h1, time.Second)
	if !h1.Superseded() {
		t.Fatal("first announce not marked superseded")
	}
	waitDone(t, h2, 2*time.Second)
	n := len(rec.all())
	// h1 sent 2 (maybe 3 under load), h2 sent 5: never the 10 of two bursts.
	if h2.Sent() != 5 || n > 8 || n < 7 {
		t.Fatalf("%d frames in all (h1 %d, h2 %d)", n, h1.Sent(), h2.Sent())
	}
	if a.Running() != 0 {
		t.Fatalf("%d still running", a.Running())
	}
	if v := testutil.ToFloat64(m.supersededTotal); v != 1 {
		t.Fatalf("superseded metric %v", v)
	}
	// A different VLAN is a different key: both run.
	h3 := mustAnnounce(t, a, Request{MAC: mac(1), Interface: "br0", Schedule: s})
	h4 := mustAnnounce(t, a, Request{MAC: mac(1), Interface: "br0", VLAN: rarp.VLAN{ID: 5}, Schedule: s})
	waitDone(t, h3, 2*time.Second)
	waitDone(t, h4, 2*time.Second)
	if h3.Superseded() || h3.Sent() != 5 || h4.Sent() != 5 {
		t.Fatalf("distinct keys interfered: %d %d", h3.Sent(), h4.Sent())
	}
}

func TestCancelMAC(t *testing.T) {
	rec := &recorder{}
	a := New(Options{Open: rec.open})
	defer a.Close()
	s := DefaultSchedule()
	hs := []*Handle{}
	for _, ifn := range []string{"br0", "br1"} {
		h := mustAnnounce(t, a, Request{MAC: mac(1), Interface: ifn, Schedule: s})
		hs = append(hs, h)
	}
	other := mustAnnounce(t, a, Request{MAC: mac(2), Interface: "br0", Schedule: s})
	time.Sleep(20 * ms)
	if n := a.CancelMAC(mac(1)); n != 2 {
		t.Fatalf("cancelled %d, want 2", n)
	}
	for _, h := range hs {
		waitDone(t, h, 500*ms)
		if h.Sent() != 1 {
			t.Fatalf("cancelled announce sent %d frames", h.Sent())
		}
	}
	waitDone(t, other, 2*time.Second)
	if other.Sent() != 5 {
		t.Fatalf("other MAC sent %d", other.Sent())
	}
}

func TestPacingQueuesFirstFramesFirstAndDropsNothing(t *testing.T) {
	rec := &recorder{}
	m := NewMetrics(nil)
	// 200 frames/s, burst 1: 30 MACs x 2 rounds cannot all go at once.
	a := New(Options{Open: rec.open, Metrics: m, Pacing: Pacing{PerSecond: 200, Burst: 1}})
	defer a.Close()
	s := Schedule{Initial: 10 * ms, Max: 10 * ms, Rounds: 2, Bursts: 1}
	var hs []*Handle
	for i := range 30 {
		h := mustAnnounce(t, a, Request{MAC: mac(byte(i + 1)), Interface: "br0", Schedule: s})
		hs = append(hs, h)
	}
	waitAll(t, hs, 5*time.Second)
	got := rec.all()
	if len(got) != 60 {
		t.Fatalf("%d frames, want 60: pacing must delay, never drop", len(got))
	}
	// Every MAC's first frame goes before any MAC's second frame except
	// those already sent when the seconds came due.
	seen := map[rarp.MAC]int{}
	firstsDone := 0
	for i, r := range got {
		seen[r.frame.Source]++
		if seen[r.frame.Source] == 1 {
			firstsDone++
		} else if firstsDone < 30 && i < 25 {
			t.Fatalf("repeat of %s at position %d before %d first frames", r.frame.Source, i, 30-firstsDone)
		}
	}
	if span := got[59].at.Sub(got[0].at); span < 250*ms {
		t.Fatalf("60 frames at 200/s took %v: not paced", span)
	}
	if testutil.ToFloat64(m.pacingWaits) < 50 {
		t.Fatalf("pacing waits %v, want about 59", testutil.ToFloat64(m.pacingWaits))
	}
}

func TestSendFailuresAreReported(t *testing.T) {
	rec := &recorder{fail: ErrNoInterface}
	m := NewMetrics(nil)
	var mu sync.Mutex
	var errs []error
	a := New(Options{Open: rec.open, Metrics: m, OnFrame: func(s Sent) {
		mu.Lock()
		errs = append(errs, s.Err)
		mu.Unlock()
	}})
	defer a.Close()
	h := mustAnnounce(t, a, Request{MAC: mac(1), Interface: "gone0", Schedule: Schedule{Rounds: 2, Bursts: 1}})
	waitDone(t, h, time.Second)
	if h.Failed() != 2 || !errors.Is(h.Err(), ErrNoInterface) {
		t.Fatalf("failed %d err %v", h.Failed(), h.Err())
	}
	if v := testutil.ToFloat64(m.failures.WithLabelValues("no_interface")); v != 2 {
		t.Fatalf("failure metric %v", v)
	}
	if len(errs) != 2 || errs[0] == nil {
		t.Fatalf("OnFrame saw %v", errs)
	}
}

func TestRequestValidation(t *testing.T) {
	a := New(Options{Open: (&recorder{}).open})
	defer a.Close()
	bad := []Request{
		{MAC: rarp.Broadcast, Interface: "br0", Schedule: DefaultSchedule()},
		{MAC: rarp.MAC{}, Interface: "br0", Schedule: DefaultSchedule()},
		{MAC: rarp.MAC{1, 0, 0x5e, 0, 0, 1}, Interface: "br0", Schedule: DefaultSchedule()},
		{MAC: mac(1), Interface: "", Schedule: DefaultSchedule()},
		{MAC: mac(1), Interface: "br0", VLAN: rarp.VLAN{ID: 4095}, Schedule: DefaultSchedule()},
		{MAC: mac(1), Interface: "br0", VLAN: rarp.VLAN{Priority: 3}, Schedule: DefaultSchedule()},
		{MAC: mac(1), Interface: "br0", Schedule: Schedule{}},
	}
	for _, r := range bad {
		if _, err := a.Announce(r); err == nil {
			t.Errorf("accepted %+v", r)
		}
	}
}

func TestCloseStopsEverything(t *testing.T) {
	rec := &recorder{}
	a := New(Options{Open: rec.open})
	s := DefaultSchedule()
	s.Refresh = time.Second
	h := mustAnnounce(t, a, Request{MAC: mac(1), Interface: "br0", Schedule: s})
	time.Sleep(10 * ms)
	done := make(chan struct{})
	go func() { a.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Close hangs")
	}
	select {
	case <-h.Done():
	default:
		t.Fatal("Close returned before the announce was done")
	}
	if _, err := a.Announce(Request{MAC: mac(1), Interface: "br0", Schedule: s}); !errors.Is(err, ErrClosed) {
		t.Fatalf("announce after close: %v", err)
	}
}

// slowOpen is an Opener whose Sender on "slow0" takes 40 ms a frame, as a
// bridge with many ports does under a storm, and records like recorder.
func (r *recorder) slowOpen(ifname string) (Sender, error) {
	s := recSender{r, ifname}
	if ifname != "slow0" {
		return s, nil
	}
	return slowSender{recSender: s}, nil
}

// stuckOpen is slowOpen with a Sender on "stuck0" that takes 400 ms a
// frame, as a packet-out to a hung ovs-vswitchd does (its timeout).
func (r *recorder) stuckOpen(ifname string) (Sender, error) {
	s := recSender{r, ifname}
	if ifname != "stuck0" {
		return s, nil
	}
	return slowSender{s, 400 * time.Millisecond}, nil
}

type slowSender struct {
	recSender
	took time.Duration // 0: 40 ms
}

func (s slowSender) Send(b []byte) error {
	time.Sleep(cmp.Or(s.took, 40*time.Millisecond))
	return s.recSender.Send(b)
}

// queueFirsts starts n one-frame announces on ifname at once and waits
// until some of their first frames queue: one goes out in its caller's
// goroutine, the others wait for the link's worker.
func queueFirsts(t *testing.T, a *Announcer, ifname string, n int) {
	t.Helper()
	for i := range n {
		go func() {
			if _, err := a.Announce(Request{MAC: mac(byte(10 + i)), Interface: ifname, Schedule: Schedule{Rounds: 1, Bursts: 1}}); err != nil {
				t.Error(err)
			}
		}()
	}
	netnstest.WaitWithin(t, 2*time.Second, ifname+"'s first frames to queue", func() bool { return a.firsts.Load() >= 1 })
}

func TestRepeatsWaitWhileFirstFramesArePendingElsewhere(t *testing.T) {
	rec := &recorder{}
	a := New(Options{Open: rec.slowOpen})
	defer a.Close()
	// Three first frames come at once on the slow link (120 ms of
	// sending): one goes out in its caller's goroutine, the others queue...
	queueFirsts(t, a, "slow0", 3)
	// ...while a fast link has one first frame and two immediate repeats.
	h := mustAnnounce(t, a, Request{MAC: mac(1), Interface: "fast0", Schedule: Schedule{Rounds: 3, Bursts: 1}})
	waitDone(t, h, 2*time.Second)
	var lastSlowFirst, firstFastRepeat time.Time
	fastSeen := 0
	for _, r := range rec.all() {
		switch r.ifname {
		case "slow0":
			lastSlowFirst = r.at
		case "fast0":
			fastSeen++
			if fastSeen == 2 {
				firstFastRepeat = r.at
			}
		}
	}
	if fastSeen != 3 || lastSlowFirst.IsZero() {
		t.Fatalf("fast frames %d, slow frames seen %v", fastSeen, !lastSlowFirst.IsZero())
	}
	// The slow link's third first frame was queued before the fast
	// repeats came due; the repeats must not go before it is out.
	if firstFastRepeat.Before(lastSlowFirst.Add(-45 * time.Millisecond)) {
		t.Fatalf("a repeat went %v before the last pending first frame elsewhere", lastSlowFirst.Sub(firstFastRepeat))
	}
}

// A stuck segment holds the others' repeats back for its first slow send
// only: once a send took longer than slowSend, its queued first frames no
// longer count. Four first frames on a link whose every send takes
// 400 ms (one sent inline, three queued) are out after 1.6 s; the fast
// link's repeats go after the first.
func TestRepeatsDoNotWaitForAStuckLink(t *testing.T) {
	rec := &recorder{}
	a := New(Options{Open: rec.stuckOpen})
	defer a.Close()
	queueFirsts(t, a, "stuck0", 4)
	start := time.Now()
	h := mustAnnounce(t, a, Request{MAC: mac(1), Interface: "fast0", Schedule: Schedule{Rounds: 3, Bursts: 1}})
	waitDone(t, h, 3*time.Second)
	fast := 0
	var lastFast time.Time
	for _, r := range rec.all() {
		if r.ifname == "fast0" {
			fast++
			lastFast = r.at
		}
	}
	if fast != 3 {
		t.Fatalf("fast frames %d, want 3", fast)
	}
	// Its repeats were due at once; the stuck link's first send ends
	// within 400 ms of start, its last at about 1.6 s.
	took := lastFast.Sub(start)
	t.Logf("the fast link's last repeat %v after its announce", took)
	if took > 900*time.Millisecond {
		t.Fatalf("the fast link's repeats went out %v after its announce: they waited for the stuck link's queue", took)
	}
}

// Warm opens a port's socket before its first frame: the opener runs once,
// at Warm, not at the frame; warming an open link opens nothing more.
func TestWarmOpensTheSocketAhead(t *testing.T) {
	rec := &recorder{}
	var mu sync.Mutex
	var opened []time.Time
	open := func(ifname string) (Sender, error) {
		mu.Lock()
		opened = append(opened, time.Now())
		mu.Unlock()
		return rec.open(ifname)
	}
	a := New(Options{Open: open})
	defer a.Close()
	a.Warm(HostPort("bond0"))
	netnstest.Eventually(t, 2*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if n := len(opened); n != 1 {
			return fmt.Errorf("Warm opened %d sockets, want 1", n)
		}
		return nil
	})
	warmed := time.Now()
	a.Warm(HostPort("bond0"))
	h := mustAnnounce(t, a, Request{MAC: mac(1), Port: HostPort("bond0"), Schedule: Schedule{Initial: ms, Max: ms, Rounds: 1, Bursts: 1}})
	waitDone(t, h, 2*time.Second)
	mu.Lock()
	defer mu.Unlock()
	if len(opened) != 1 || !opened[0].Before(warmed) || h.Sent() != 1 {
		t.Fatalf("%d opens (%v), %d frames sent; want the one open at Warm and the frame on it", len(opened), opened, h.Sent())
	}
}

// gateSender holds each Send while blocking is set, until release is
// closed, telling entered when one waits.
type gateSender struct {
	recSender
	blocking *atomic.Bool
	entered  chan struct{}
	release  chan struct{}
}

func (s gateSender) Send(b []byte) error {
	if s.blocking.Load() {
		s.entered <- struct{}{}
		<-s.release
	}
	return s.recSender.Send(b)
}

// An OVS port's first frame never goes out in Announce's goroutine, even
// on an idle link: its injection is a round trip to ovs-vswitchd, up to
// the switch's frame timeout, which must not hold up the caller. Announce
// returns while the frame is still being injected; it goes out after.
func TestOVSFirstFrameNotSentInline(t *testing.T) {
	rec := &recorder{}
	entered, release := make(chan struct{}, 1), make(chan struct{})
	var blocking atomic.Bool
	blocking.Store(true)
	a := New(Options{OpenPort: func(p Port) (Sender, error) {
		return gateSender{recSender{rec, p.Device}, &blocking, entered, release}, nil
	}})
	defer a.Close()
	returned := make(chan *Handle, 1)
	go func() {
		h, err := a.Announce(Request{MAC: mac(1), Port: OVSPort("vnet0", "br-int", 7), Schedule: Schedule{Rounds: 1, Bursts: 1}})
		if err != nil {
			t.Error(err)
		}
		returned <- h
	}()
	<-entered // the frame is being injected
	var h *Handle
	select {
	case h = <-returned:
	case <-time.After(5 * time.Second):
		close(release)
		t.Fatal("Announce did not return while its OVS port's first frame was being injected")
	}
	select {
	case <-h.First():
		t.Fatal("first frame done while its injection was held")
	default:
	}
	close(release)
	waitDone(t, h, 2*time.Second)
	if err := h.FirstErr(); err != nil || h.Sent() != 1 {
		t.Fatalf("first frame: %v, %d sent", err, h.Sent())
	}
}

// A first frame on an idle link leaves in Announce's own goroutine: its
// First is done when Announce returns. While another goroutine is writing
// on the link, the next first frame queues behind it (Announce returns at
// once) and goes out after it, in order.
func TestFirstFrameGoesOutDirectlyWhenTheLinkIsIdle(t *testing.T) {
	rec := &recorder{}
	entered, release := make(chan struct{}, 4), make(chan struct{})
	var blocking atomic.Bool
	a := New(Options{Open: func(ifname string) (Sender, error) {
		return gateSender{recSender{rec, ifname}, &blocking, entered, release}, nil
	}})
	defer a.Close()
	one := Schedule{Rounds: 1, Bursts: 1}

	h1 := mustAnnounce(t, a, Request{MAC: mac(1), Interface: "br0", Schedule: one})
	select {
	case <-h1.First():
	default:
		t.Fatal("first frame on an idle link not sent when Announce returned")
	}
	if err := h1.FirstErr(); err != nil || h1.Sent() != 1 {
		t.Fatalf("first frame: %v, %d sent", err, h1.Sent())
	}

	// A writer holds the link: the next first frame queues.
	blocking.Store(true)
	h2done := make(chan *Handle)
	go func() {
		h, err := a.Announce(Request{MAC: mac(2), Interface: "br0", Schedule: one})
		if err != nil {
			t.Error(err)
		}
		h2done <- h
	}()
	<-entered // mac 2's frame is being written, in that goroutine
	h3 := mustAnnounce(t, a, Request{MAC: mac(3), Interface: "br0", Schedule: one})
	select {
	case <-h3.First():
		t.Fatal("a first frame went out while another was being written on its link")
	default:
	}
	blocking.Store(false)
	close(release)
	h2 := <-h2done
	waitDone(t, h2, 2*time.Second)
	waitDone(t, h3, 2*time.Second)
	var order []rarp.MAC
	for _, r := range rec.all() {
		order = append(order, r.frame.Source)
	}
	if want := []rarp.MAC{mac(1), mac(2), mac(3)}; !slices.Equal(order, want) {
		t.Fatalf("frames from %v, want %v", order, want)
	}
}
