package agent_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/packet"

	"github.com/rarp-announce/rarp-announce/internal/config"
	"github.com/rarp-announce/rarp-announce/internal/libvirtfake"
	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// switchCounter counts the RARP frames arriving at the switch, per source
// MAC, with a packet socket on the switch's port towards this host.
type switchCounter struct {
	mu     sync.Mutex
	bySrc  map[rarp.MAC]int
	conn   *packet.Conn
	closed chan struct{}
}

func countAtSwitch(t *testing.T, ns *netnstest.NS, ifname string) *switchCounter {
	t.Helper()
	c := &switchCounter{bySrc: map[rarp.MAC]int{}, closed: make(chan struct{})}
	ifi := ns.Interface(t, ifname)
	err := ns.Do(func() error {
		var err error
		// ETH_P_ALL: a socket of one protocol on a bridge port sees
		// nothing (the bridge consumes frames before protocol handlers);
		// taps of every protocol see them first.
		c.conn, err = packet.Listen(ifi, packet.Raw, 0x0003, nil)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(c.closed)
		buf := make([]byte, 2048)
		for {
			n, _, err := c.conn.ReadFrom(buf)
			if err != nil {
				return
			}
			var f rarp.Frame
			if f.UnmarshalBinary(buf[:n]) == nil && f.EtherType == rarp.EtherTypeRARP {
				c.mu.Lock()
				c.bySrc[f.Source]++
				c.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { c.conn.Close(); <-c.closed })
	return c
}

func (c *switchCounter) count(mac rarp.MAC) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bySrc[mac]
}

func (c *switchCounter) wait(t testing.TB, mac rarp.MAC, n int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for c.count(mac) < n {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

func openFDs(t testing.TB) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// fdTargets is what each open file descriptor points at (socket:[inode],
// anon_inode:[eventpoll], a path), to name the one a failing fd check found.
func fdTargets() map[string]string {
	ents, _ := os.ReadDir("/proc/self/fd")
	out := map[string]string{}
	for _, e := range ents {
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil {
			out[e.Name()] = target
		}
	}
	return out
}

// goroutineGroups counts the goroutines by stack (pprof's debug=1 text:
// a group's first line "N @ pcs" and its frames), to name what a failing
// goroutine or fd check found more of.
func goroutineGroups() map[string]int {
	var b strings.Builder
	_ = pprof.Lookup("goroutine").WriteTo(&b, 1)
	out := map[string]int{}
	for _, g := range strings.Split(b.String(), "\n\n") {
		head, frames, ok := strings.Cut(g, "\n")
		var n int
		if _, err := fmt.Sscanf(head, "%d @", &n); err != nil || !ok {
			continue
		}
		out[frames] += n
	}
	return out
}

// heapInuse is the live heap (after the GC of settle).
func heapInuse() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

func rssKB(t testing.TB) int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// TestSoak (issue 11): 200 landings (40 domains migrating in and out 5
// times each, after a warm-up round in which one port is also re-plugged)
// through the fake libvirtd while it is killed and restarted
// 5 times at random moments (connections dropped, socket gone, then a new
// server on the same path with the same domains). Every landing is
// announced exactly once, counted at the switch with a packet socket (one
// burst of 3 frames per migration: no landing lost, none doubled by a
// resync), and the agent neither grows goroutines nor file descriptors,
// nor its RSS by more than 10%. Bounded: about 15 s.
func TestSoak(t *testing.T) {
	const (
		domains  = 40
		cycles   = 5
		restarts = 5
	)
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("RARP_SOAK_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("seed %d (RARP_SOAK_SEED reruns it)", seed)
	rng := rand.New(rand.NewPCG(seed, 11))      // the rounds (test goroutine)
	faultRng := rand.New(rand.NewPCG(seed, 12)) // the restarts (their goroutine)

	settings := defaultSettings()
	settings.WatchWindow = 10 * time.Second // a re-plug after landing re-announces
	// The soak migrates each VM six times in seconds: far over the move
	// ledger's limit by design. Its warnings (kept by the test's logger)
	// would count as growth, so the ledger's limit is out of reach here;
	// the ledger has tests of its own (pkg/moves, TestMoveLedger*).
	h := newHost(t, hostOptions{settings: settings, warnLogsOnly: true, config: func(c *config.Config) { c.MoveLedger.Limit = 1000 }})
	sw := countAtSwitch(t, h.rig.Switch, netnstest.RigSwitchToHost)
	doms := make([]domain, domains)
	for i := range doms {
		tap := "vs" + strconv.Itoa(i)
		h.tap(t, tap, wired)
		doms[i] = h.newDomain(t, stateOff, 0, tap)
	}

	// The fake libvirtd, restartable: emitters hold mu for reading.
	var mu sync.RWMutex
	fake := h.fake
	path := fake.Path()
	// Only the current server is closed at the end; the old ones are
	// closed and garbage (retaining them would count against the heap).
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		fake.Close()
	})
	emit := func(d domain, e ev) {
		mu.RLock()
		defer mu.RUnlock()
		if _, err := fake.Emit(d.name, e.event, e.detail); err != nil {
			t.Error(err)
		}
	}
	restart := func() {
		mu.Lock()
		defer mu.Unlock()
		state := fake.Domains()
		fake.Close()
		time.Sleep(time.Duration(20+faultRng.IntN(200)) * time.Millisecond)
		nf, err := libvirtfake.Listen(path)
		if err != nil {
			t.Error(err)
			return
		}
		for _, d := range state {
			if err := nf.AddDomain(d); err != nil {
				t.Error(err)
			}
		}
		fake = nf
	}

	// One round: every domain lands (STARTED/MIGRATED, RESUMED/MIGRATED),
	// its burst is awaited at the switch, then it migrates away
	// (STOPPED/MIGRATED). Domains run side by side.
	// In the warm-up round one domain's port is re-plugged after its
	// landing (os-vif re-plugging it): one more burst, then no more. It
	// happens while libvirt is up: the re-announce asks libvirt whether
	// the domain still runs here.
	bursts := map[rarp.MAC]int{}
	replugged := rng.IntN(domains)
	round := func(r int) {
		var wg sync.WaitGroup
		delays := make([]time.Duration, len(doms))
		for i := range doms {
			delays[i] = time.Duration(rng.IntN(400)) * time.Millisecond
			bursts[doms[i].macs[0]]++
		}
		if r == 0 {
			bursts[doms[replugged].macs[0]]++
		}
		for i, d := range doms {
			wg.Add(1)
			go func() {
				defer wg.Done()
				time.Sleep(delays[i])
				emit(d, startedMigrated)
				emit(d, resumedMigrated)
				want := framesPerBurst * (r + 1)
				if r > 0 && i == replugged {
					want += framesPerBurst
				}
				if !sw.wait(t, d.macs[0], want, 15*time.Second) {
					t.Errorf("round %d: %s has %d frames at the switch, want %d", r, d.name, sw.count(d.macs[0]), want)
				}
				if r == 0 && i == replugged {
					tap := "vs" + strconv.Itoa(i)
					h.ns.Exec(t, "ip", "link", "set", "dev", tap, "nomaster")
					h.ns.Attach(t, tap, netnstest.RigHostBridge)
					if !sw.wait(t, d.macs[0], want+framesPerBurst, 10*time.Second) {
						t.Errorf("%s re-plugged: %d frames at the switch, want %d", d.name, sw.count(d.macs[0]), want+framesPerBurst)
					}
				}
				// Let the burst's last frame go before it leaves.
				time.Sleep(fastSchedule().Duration() + 20*time.Millisecond)
				emit(d, stoppedMigrated)
			}()
		}
		wg.Wait()
	}
	settle := func() {
		time.Sleep(500 * time.Millisecond)
		runtime.GC()
		debug.FreeOSMemory()
	}

	start := time.Now()
	round(0) // warm-up: links opened, pools filled
	settle()
	g0, fd0, rss0, heap0 := runtime.NumGoroutine(), openFDs(t), rssKB(t), heapInuse()
	fds0, groups0 := fdTargets(), goroutineGroups()

	// The restarts, at random moments of the next rounds.
	stop := make(chan struct{})
	var fwg sync.WaitGroup
	fwg.Add(1)
	go func() {
		defer fwg.Done()
		for range restarts {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(100+faultRng.IntN(600)) * time.Millisecond):
			}
			restart()
		}
	}()
	for r := 1; r <= cycles; r++ {
		round(r)
	}
	close(stop)
	fwg.Wait()
	if got := h.metric(t, "rarp_announce_libvirt_reconnects_total"); got < 1 {
		t.Errorf("libvirt reconnects = %v: the restarts did not happen during the rounds", got)
	}
	h.waitReady(t)
	settle()
	time.Sleep(time.Second) // a doubled landing would show by now
	g1, fd1, rss1, heap1 := runtime.NumGoroutine(), openFDs(t), rssKB(t), heapInuse()
	t.Logf("%d landings (%d after the warm-up round) in %v, %v libvirt reconnects; goroutines %d -> %d, fds %d -> %d, RSS %d -> %d kB, live heap %d -> %d kB",
		domains*(cycles+1), domains*cycles, time.Since(start).Round(time.Millisecond), h.metric(t, "rarp_announce_libvirt_reconnects_total"),
		g0, g1, fd0, fd1, rss0, rss1, heap0>>10, heap1>>10)

	for _, d := range doms {
		if got, want := sw.count(d.macs[0]), framesPerBurst*bursts[d.macs[0]]; got != want {
			t.Errorf("%s: %d frames at the switch for %d landings and re-plugs, want %d (one burst each)", d.name, got, bursts[d.macs[0]], want)
		}
	}
	// Every domain left: no learner may still watch a port.
	if ls := h.agent.Learners(); len(ls) != 0 {
		t.Errorf("learners still running after every domain left: %v", ls)
	}
	if g1 > g0+3 {
		t.Errorf("goroutines grew from %d to %d", g0, g1)
	}
	if fd1 > fd0 {
		t.Errorf("file descriptors grew from %d to %d", fd0, fd1)
		// Which: the new descriptors, and every goroutine (one holding
		// the new socket is likely among them).
		for fd, target := range fdTargets() {
			if fds0[fd] != target {
				t.Logf("fd %s -> %s (new since the warm-up)", fd, target)
			}
		}
	}
	if fd1 > fd0 || g1 > g0 {
		// Which goroutines are more than after the warm-up (one
		// holding the new socket is likely among them).
		for frames, n := range goroutineGroups() {
			if n > groups0[frames] {
				t.Logf("%d goroutines (%d after the warm-up):\n%s", n, groups0[frames], frames)
			}
		}
	}
	if raceEnabled {
		// RSS under -race is the detector's; the Go heap is the agent's.
		if float64(heap1) > 1.1*float64(heap0) {
			t.Errorf("live heap grew from %d to %d kB (more than 10%%)", heap0>>10, heap1>>10)
		}
	} else if float64(rss1) > 1.1*float64(rss0) {
		t.Errorf("RSS grew from %d to %d kB (more than 10%%)", rss0, rss1)
	}
}
