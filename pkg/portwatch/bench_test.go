package portwatch

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/rarp-announce/rarp-announce/internal/netnstest"
)

func ifbName(i int) string { return fmt.Sprintf("p%d", i) }

// ifbs adds n ports to br0, down. They are ifb devices: this kernel has no
// dummy driver, and an ifb, like a tap held by QEMU, has carrier and
// reports operstate "unknown" once up.
func ifbs(t testing.TB, ns *netnstest.NS, n int) {
	t.Helper()
	h := ns.Netlink()
	br, err := h.LinkByName("br0")
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		l := &netlink.Ifb{LinkAttrs: netlink.LinkAttrs{Name: ifbName(i), MasterIndex: br.Attrs().Index}}
		if err := h.LinkAdd(l); err != nil {
			t.Fatalf("add %s: %v", ifbName(i), err)
		}
	}
}

// BenchmarkWaitReady1000Ports measures how long WaitReady takes to return
// after a port becomes ready while 1,000 ports are waited on at once and
// brought up one after the other (so each port's messages queue behind
// others'). Reported: p50, p90, p99 and max from the start of the netlink call that
// sets the port up to WaitReady returning, and p50 of that call itself.
//
//	go test -run '^$' -bench WaitReady1000 -benchtime 3x ./pkg/portwatch/
func BenchmarkWaitReady1000Ports(b *testing.B) {
	const n = 1000
	netnstest.Require(b)
	var lat, call, after []time.Duration
	for b.Loop() {
		b.StopTimer()
		ns := netnstest.New(b, "bench")
		ns.Bridge(b, "br0")
		ifbs(b, ns, n)
		w := watcherIn(b, ns, Options{})
		h := ns.Netlink()
		links := make([]netlink.Link, n)
		for i := range n {
			l, err := h.LinkByName(ifbName(i))
			if err != nil {
				b.Fatal(err)
			}
			links[i] = l
		}
		started := make([]time.Time, n)
		ended := make([]time.Time, n)
		returned := make([]time.Time, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := w.WaitReady(context.Background(), ifbName(i), "br0", time.Minute); err != nil {
					b.Error(err)
				}
				returned[i] = time.Now()
			}()
		}
		time.Sleep(200 * time.Millisecond) // let every wait register
		b.StartTimer()
		for i := range n {
			started[i] = time.Now()
			if err := h.LinkSetUp(links[i]); err != nil {
				b.Fatal(err)
			}
			ended[i] = time.Now()
			call = append(call, ended[i].Sub(started[i]))
		}
		wg.Wait()
		b.StopTimer()
		for i := range n {
			lat = append(lat, returned[i].Sub(started[i]))
			after = append(after, returned[i].Sub(ended[i]))
		}
		w.Close()
		b.StartTimer()
	}
	slices.Sort(lat)
	slices.Sort(call)
	slices.Sort(after)
	b.ReportMetric(float64(after[len(after)/2].Microseconds()), "after-call-p50-µs")
	b.ReportMetric(float64(after[len(after)*99/100].Microseconds()), "after-call-p99-µs")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*90/100].Microseconds()), "p90-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds()), "max-µs")
	b.ReportMetric(float64(call[len(call)/2].Microseconds()), "setup-call-p50-µs")
}
