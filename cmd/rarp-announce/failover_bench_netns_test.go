package main

// The cost of the failover re-announces at 1,000 domains (issue 14): the
// real binary (no -race) against a fake libvirtd with 1,000 running
// domains x 2 NICs on 2,000 real taps held open, 500 per bridge on 4
// bridges (stormNetwork), each bridge with an uplink to a switch.
//
//  1. registry fill: from the agent's start to its last live-XML read of
//     the running domains (one DomainGetXMLDesc per domain, at most 8 at
//     once), with the agent's CPU time for it;
//  2. one failover event per uplink: the switch side of all 4 uplinks goes
//     down and up at once; each uplink's carrier-up re-announces its 500
//     NICs. Measured: from the watcher's event (the log's event_at) to each
//     NIC's first frame leaving its uplink (kernel timestamp), the last
//     NIC's above all; the agent's CPU time for the 4 events and their
//     20,000 frames (two bursts of 5 per NIC: a carrier that came back);
//     the libvirt calls they made (one listing per event, no XML read).
//
// Run it (root; about 20 s):
//
//	go test -run '^$' -bench UplinkFailover -benchtime 1x -v ./cmd/rarp-announce

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/rarp-announce/rarp-announce/internal/libvirtfake"
	"github.com/rarp-announce/rarp-announce/internal/netnstest"
	"github.com/rarp-announce/rarp-announce/pkg/libvirtconn"
)

func BenchmarkUplinkFailover(b *testing.B) {
	// The storm's variants' shape; only the name and the environment
	// count here.
	for _, v := range []stormVariant{
		// One P (internal/procs): the frames leave out of the uplinks.
		{name: "default"},
		{name: "gomaxprocs-2", env: []string{"GOMAXPROCS=2"}}, // the default from Stop 27 to Stop 29
		{name: "gomaxprocs-8", env: []string{"GOMAXPROCS=8"}}, // the default before Stop 27
	} {
		b.Run(v.name, func(b *testing.B) {
			for range b.N {
				uplinkFailover(b, defaultStormDomains, v.env)
			}
		})
	}
}

func uplinkFailover(b *testing.B, domains int, env []string) {
	netnstest.Require(b)
	bin := buildPlain(b)
	b.StopTimer()
	nics := domains * stormNICs
	host, sw, closeTaps := stormNetwork(b, nics, stormBridges, 0)
	defer closeTaps()

	fake := libvirtfake.Start(b)
	for i := range domains {
		name, uuid := fmt.Sprintf("vm%d", i), fmt.Sprintf("6661696c-0000-4000-8000-%012x", i)
		var ns []libvirtfake.NIC
		for j := range stormNICs {
			n := i*stormNICs + j
			ns = append(ns, libvirtfake.NIC{MAC: stormMAC(n), Bridge: fmt.Sprintf("br%d", n%stormBridges), Target: fmt.Sprintf("vnet%d", n)})
		}
		if err := fake.AddDomain(libvirtfake.Domain{Name: name, UUID: uuid, State: libvirtconn.StateRunning, Reason: 1,
			XML: libvirtfake.LiveXML(name, uuid, int32(i+1), ns...)}); err != nil {
			b.Fatal(err)
		}
	}
	caps := startCaptures(b, host, stormBridges)

	// 1. The registry fill.
	cfg := configFile(b, "libvirt:\n  uri: test:///default\n")
	xmlCalls := func() int { return fake.Calls(libvirtfake.ProgramRemote, libvirtfake.ProcDomainGetXMLDesc) }
	listCalls := func() int { return fake.Calls(libvirtfake.ProgramRemote, libvirtfake.ProcConnectListAllDomains) }
	started := time.Now()
	d := startBinaryEnv(b, host, bin, env, "--config", cfg, "--libvirt-socket", fake.Path(), "--metrics-address", freePort(b, host))
	pid := d.Cmd.Process.Pid
	deadline := time.Now().Add(60 * time.Second)
	for xmlCalls() < domains {
		if time.Now().After(deadline) {
			b.Fatalf("registry: %d XML reads after 60 s, want %d", xmlCalls(), domains)
		}
		time.Sleep(2 * time.Millisecond)
	}
	filled := time.Since(started)
	time.Sleep(300 * time.Millisecond) // the last reads parsed and watched
	fillCPU := procCPU(b, pid)
	xml0, list0 := xmlCalls(), listCalls()
	if f := firstSeen(caps); f != 0 {
		b.Fatalf("%d MACs announced before any event", f)
	}

	// 2. All four uplinks flap at once.
	user0, sys0 := procCPUSplit(b, pid)
	b.StartTimer()
	for k := range stormBridges {
		sw.Exec(b, "ip", "link", "set", "dev", fmt.Sprintf("swp%d", k), "down")
	}
	time.Sleep(20 * time.Millisecond)
	up := time.Now()
	for k := range stormBridges {
		sw.Exec(b, "ip", "link", "set", "dev", fmt.Sprintf("swp%d", k), "up")
	}
	deadline = time.Now().Add(60 * time.Second)
	for firstSeen(caps) < nics && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	for framesSeen(caps) < nics*10 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	b.StopTimer()
	user1, sys1 := procCPUSplit(b, pid)
	hwm, _, _ := procMem(b, pid)
	xmlEvent, listEvent := xmlCalls()-xml0, listCalls()-list0
	reNICs := d.metric(`rarp_announce_uplink_reannounce_nics_total{reason="carrier_up"}`)
	if code, _ := d.stop(); code != 0 {
		b.Errorf("agent exit %d after SIGTERM", code)
	}
	total := 0
	for _, c := range caps {
		c.stop()
		total += c.total
	}

	// Each uplink's event time, from the agent's log line for it.
	eventAt := map[string]time.Time{}
	for _, e := range d.logs("uplink event: re-announced the running domains behind it") {
		ts, err := time.Parse(time.RFC3339Nano, fmt.Sprint(e["event_at"]))
		if err != nil {
			b.Fatalf("event_at %v: %v", e["event_at"], err)
		}
		b.Logf("event %v on %v: %v NICs, listed in %v, loop done %v after the event", e["reason"], e["uplink"], e["nics"], e["listed"], e["lag"])
		eventAt[fmt.Sprint(e["uplink"])] = ts
	}
	var lags []time.Duration
	var last, firstEvent time.Time
	missing := 0
	for n := range nics {
		k := n % stormBridges
		at, ok := caps[k].first[stormMACKey(n)]
		ev, evOK := eventAt[fmt.Sprintf("up%d", k)]
		if !ok || !evOK {
			missing++
			continue
		}
		lags = append(lags, at.Sub(ev))
		if at.After(last) {
			last = at
		}
		if firstEvent.IsZero() || ev.Before(firstEvent) {
			firstEvent = ev
		}
	}
	slices.Sort(lags)
	pct := func(p float64) time.Duration {
		if len(lags) == 0 {
			return 0
		}
		return lags[min(len(lags)-1, int(p*float64(len(lags))))]
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	cpu := (user1 - user0) + (sys1 - sys0)
	b.ReportMetric(ms(filled), "fill-ms")
	b.ReportMetric(ms(fillCPU), "fill-cpu-ms")
	b.ReportMetric(ms(pct(0.5)), "p50-ms")
	b.ReportMetric(ms(pct(1)), "last-ms")
	b.ReportMetric(ms(cpu), "event-cpu-ms")
	b.Logf("registry fill: %d domains x %d NICs, %d XML reads in %v from the agent's start; agent CPU %v from its start to the fill's end",
		domains, stormNICs, xml0, filled.Round(time.Millisecond), fillCPU)
	b.Logf("events: %d uplinks' carrier back; the first event %v after the switch ports came up (the kernel's link watcher)",
		len(eventAt), firstEvent.Sub(up).Round(time.Millisecond))
	b.Logf("event -> each NIC's first frame on its uplink: p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, last NIC %.2f ms (%d NICs, %d without a frame); last NIC's first frame %.2f ms after the first event",
		ms(pct(0.5)), ms(pct(0.9)), ms(pct(0.99)), ms(pct(1)), len(lags), missing, ms(last.Sub(firstEvent)))
	b.Logf("agent: CPU %v for the events (user %v, system %v), %d frames on the uplinks (want %d), NICs re-announced (metric) %v; libvirt during the events: %d listings, %d XML reads; peak RSS %.1f MiB",
		cpu, user1-user0, sys1-sys0, total, nics*10, reNICs, listEvent, xmlEvent, float64(hwm)/(1<<20))
	if missing > 0 {
		b.Errorf("%d NICs got no re-announce", missing)
	}
	if xmlEvent != 0 {
		b.Errorf("%d XML reads during the events: the registry should have them", xmlEvent)
	}
}
