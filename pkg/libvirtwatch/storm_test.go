package libvirtwatch

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/rarp-announce/rarp-announce/internal/libvirtfake"
	"github.com/rarp-announce/rarp-announce/pkg/domxml"
	"github.com/rarp-announce/rarp-announce/pkg/libvirtconn"
)

// The storm: 1,000 domains x 2 NICs land within 1 s (RESUMED/MIGRATED from
// a fake libvirtd, in batches of 10 every 10 ms). A consumer like the
// agent's planner reads each Landed, fetches the live XML and parses it
// with 4 workers. Figures: how long after its event was written each
// Landed came out of the Watcher, and each domain's NICs were known.

const (
	stormDomains = 1000
	stormNICs    = 2
	stormBatch   = 10
	stormPeriod  = 10 * time.Millisecond
	stormWorkers = 4
)

type stormResult struct {
	eventLag, nicsLag []time.Duration
	wall              time.Duration // first event written -> last domain's NICs known
	cpu               time.Duration // user+system of the whole process (fake server included)
	nics              int
}

func setupStorm(tb testing.TB) (*libvirtfake.Server, *running) {
	s := libvirtfake.Start(tb)
	for i := 1; i <= stormDomains; i++ {
		libvirtfake.AddTestDomain(tb, s, i, libvirtconn.StatePaused, 2 /* incoming migration */, stormNICs)
	}
	cfg := testConfig(tb, s.Path())
	cfg.Logger = zap.NewNop()
	cfg.AnnounceOnResync = false
	r := startWatcher(tb, cfg, 1024)
	r.waitReady(tb, 10*time.Second)
	return s, r
}

func runStorm(tb testing.TB, s *libvirtfake.Server, r *running, batchSize int, period time.Duration) stormResult {
	emitted := make([]time.Time, stormDomains+1)
	var emu sync.Mutex
	type landed struct {
		ev  Event
		idx int
	}
	work := make(chan landed, stormDomains)
	var res stormResult
	var rmu sync.Mutex
	var wg sync.WaitGroup
	var lastDone time.Time
	for w := 0; w < stormWorkers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for l := range work {
				xml, err := r.w.DomainXML(context.Background(), l.ev.Domain)
				if err != nil {
					tb.Errorf("DomainXML(%s): %v", l.ev.Domain, err)
					continue
				}
				d, err := domxml.Parse(xml)
				if err != nil {
					tb.Errorf("Parse: %v", err)
					continue
				}
				now := time.Now()
				emu.Lock()
				at := emitted[l.idx]
				emu.Unlock()
				rmu.Lock()
				res.nicsLag = append(res.nicsLag, now.Sub(at))
				res.nics += len(d.Interfaces)
				if now.After(lastDone) {
					lastDone = now
				}
				rmu.Unlock()
			}
		}()
	}

	var ru0 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	start := time.Now()
	emitErr := make(chan error, 1)
	go func() {
		tick := time.NewTicker(period)
		defer tick.Stop()
		for i := 1; i <= stormDomains; i += batchSize {
			batch := make([]libvirtfake.Lifecycle, 0, batchSize)
			for j := i; j < i+batchSize && j <= stormDomains; j++ {
				batch = append(batch, libvirtfake.Lifecycle{Domain: "vm" + strconv.Itoa(j), Event: EventResumed, Detail: DetailResumedMigrated})
			}
			// The time *before* the batch is written: the lags measured
			// include the write (an upper bound).
			emu.Lock()
			now := time.Now()
			for k := range batch {
				emitted[i+k] = now
			}
			emu.Unlock()
			if _, err := s.EmitBatch(batch); err != nil {
				emitErr <- err
				return
			}
			<-tick.C
		}
		emitErr <- nil
	}()

	seen := make(map[string]bool, stormDomains)
	timeout := time.After(30 * time.Second)
	for len(seen) < stormDomains {
		select {
		case ev := <-r.events:
			if ev.Kind != Landed {
				tb.Fatalf("storm: unexpected %s", ev)
			}
			if seen[ev.Domain.UUID] {
				tb.Fatalf("storm: %s landed twice", ev.Domain)
			}
			seen[ev.Domain.UUID] = true
			idx, _ := strconv.Atoi(strings.TrimPrefix(ev.Domain.Name, "vm"))
			emu.Lock()
			at := emitted[idx]
			emu.Unlock()
			res.eventLag = append(res.eventLag, ev.Received.Sub(at))
			work <- landed{ev, idx}
		case <-timeout:
			tb.Fatalf("storm: %d of %d landings after 30 s", len(seen), stormDomains)
		}
	}
	close(work)
	wg.Wait()
	if err := <-emitErr; err != nil {
		tb.Fatal(err)
	}
	var ru1 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	res.cpu = time.Duration(ru1.Utime.Nano()+ru1.Stime.Nano()-ru0.Utime.Nano()-ru0.Stime.Nano()) * time.Nanosecond
	res.wall = lastDone.Sub(start)
	return res
}

// resetStorm sends every domain away (SUSPENDED/MIGRATED: Cancel) so that
// the next storm lands them again.
func resetStorm(tb testing.TB, s *libvirtfake.Server, r *running) {
	batch := make([]libvirtfake.Lifecycle, 0, stormDomains)
	for i := 1; i <= stormDomains; i++ {
		batch = append(batch, libvirtfake.Lifecycle{Domain: "vm" + strconv.Itoa(i), Event: EventSuspended, Detail: DetailSuspendedMigrated})
	}
	if _, err := s.EmitBatch(batch); err != nil {
		tb.Fatal(err)
	}
	for i := 0; i < stormDomains; i++ {
		if ev := r.next(tb, 10*time.Second); ev.Kind != Cancel {
			tb.Fatalf("reset: %s", ev)
		}
	}
}

func percentile(ds []time.Duration, p float64) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s) == 0 {
		return 0
	}
	i := int(p * float64(len(s)-1))
	return s[i]
}

func (r stormResult) String() string {
	ms := func(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond)) }
	return fmt.Sprintf("%d domains x %d NICs in %s (%.0f landings/s); event->Landed p50 %s p99 %s max %s; event->NICs known p50 %s p99 %s max %s; CPU %s; RSS %s",
		stormDomains, stormNICs, r.wall.Round(time.Millisecond), float64(stormDomains)/r.wall.Seconds(),
		ms(percentile(r.eventLag, .5)), ms(percentile(r.eventLag, .99)), ms(percentile(r.eventLag, 1)),
		ms(percentile(r.nicsLag, .5)), ms(percentile(r.nicsLag, .99)), ms(percentile(r.nicsLag, 1)),
		r.cpu.Round(time.Millisecond), rss())
}

// rss is this process's resident set size (fake server included).
func rss() string {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "?"
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			return strings.Join(strings.Fields(line)[1:], " ")
		}
	}
	return "?"
}

// TestStorm checks that every domain of a storm lands exactly once with its
// two NICs, and logs the figures (not asserted: the race detector and a
// shared machine make timing meaningless here; see BenchmarkStorm).
func TestStorm(t *testing.T) {
	s, r := setupStorm(t)
	res := runStorm(t, s, r, stormBatch, stormPeriod)
	if res.nics != stormDomains*stormNICs {
		t.Errorf("NICs parsed: %d, want %d", res.nics, stormDomains*stormNICs)
	}
	if got := s.Calls(libvirtfake.ProgramRemote, libvirtfake.ProcDomainGetXMLDesc); got != stormDomains {
		t.Errorf("XML fetched %d times, want %d", got, stormDomains)
	}
	t.Logf("storm: %s", res)
	resetStorm(t, s, r)
	r.expectNone(t, 20*time.Millisecond)
}

// BenchmarkStorm runs the storm (1,000 landings spread over 1 s) b.N times
// and reports the figures:
//
//	go test -run '^$' -bench Storm -benchtime 5x ./pkg/libvirtwatch
func BenchmarkStorm(b *testing.B) { benchStorm(b, stormBatch, stormPeriod) }

// BenchmarkStormBurst: all 1,000 landings written at once.
func BenchmarkStormBurst(b *testing.B) { benchStorm(b, stormDomains, time.Millisecond) }

func benchStorm(b *testing.B, batchSize int, period time.Duration) {
	s, r := setupStorm(b)
	var all stormResult
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		res := runStorm(b, s, r, batchSize, period)
		b.StopTimer()
		all.eventLag = append(all.eventLag, res.eventLag...)
		all.nicsLag = append(all.nicsLag, res.nicsLag...)
		all.wall += res.wall
		all.cpu += res.cpu
		resetStorm(b, s, r)
		b.StartTimer()
	}
	b.ReportMetric(float64(percentile(all.eventLag, .99))/1e6, "p99-event-ms")
	b.ReportMetric(float64(percentile(all.eventLag, 1))/1e6, "max-event-ms")
	b.ReportMetric(float64(percentile(all.nicsLag, .99))/1e6, "p99-nics-ms")
	b.ReportMetric(float64(percentile(all.nicsLag, 1))/1e6, "max-nics-ms")
	b.ReportMetric(all.cpu.Seconds()*1000/float64(b.N), "cpu-ms/storm")
	all.wall /= time.Duration(b.N)
	all.cpu /= time.Duration(b.N)
	b.Logf("storm (mean of %d): %s", b.N, all)
}
