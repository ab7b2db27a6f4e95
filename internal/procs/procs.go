// Package procs sets how many Go Ps (GOMAXPROCS) the agent's Go code runs
// on: one of its own, and one more for each part that can hold a P for
// long: the RARP responder's receive loop, and frames written to a bridge
// device. The environment's GOMAXPROCS wins.
//
// A P runs Go code; a goroutine in a system call keeps its P until the
// call returns or the runtime's monitor (sysmon) hands the P to another
// thread, 20 µs to 10 ms later (never, for a raw system call). System
// calls themselves run on their own threads, in parallel, whatever the
// number of Ps.
//
// One P: out of the uplinks, a macvtap or an OVS injection, a send takes
// a few µs, and the agent's Go code for a landing storm of 2,000 NICs a
// second fills a fifth of one CPU. Each further P costs CPU and buys no
// latency: the runtime wakes an idle thread for each goroutine made
// runnable, which finds nothing to do and parks again. In the storm
// benchmark (cmd/rarp-announce BenchmarkStorm, 2 CPUs) one P took
// 380-400 ms of CPU against 450-480 ms with two, the first frames' p99
// the same (1.0-1.9 ms), on 4 bridges of 500 taps and on 40 of 50
// (variants prefetch-gomaxprocs-2, prefetch-40x50-taps-gomaxprocs-2).
//
// One more once a frame is written to a bridge device (host.send_on:
// bridge, or a bridge whose topology cannot be read): the kernel clones
// it to every port of the bridge inside sendto, 0.2 ms on 500 taps, and
// its goroutine holds the P all that time. In the storm's bridge-device
// variant one P left 800-1,568 of 2,000 first frames over 50 ms; two
// left 0-28. The agent keeps it: host.send_on takes a restart to
// change, and a topology unreadable once is likely to be again.
//
// One more for the responder (responder.enabled): under load its receive
// loop sleeps its coalescing window in a raw system call, keeping its P,
// and drains again for as long as requests keep coming; with one P the
// landings would wait for the runtime's 10 ms preemption meanwhile.
package procs

import (
	"os"
	"runtime"
	"sync"

	"go.uber.org/zap"
)

// Policy holds the agent's number of Ps. A nil Policy does nothing.
type Policy struct {
	log   *zap.Logger
	fixed bool // GOMAXPROCS is set in the environment: it wins

	mu        sync.Mutex
	ps        int
	flooding  bool
	responder bool
}

// Start sets the agent to one P, unless the environment sets GOMAXPROCS,
// and logs the number.
func Start(log *zap.Logger) *Policy {
	p := &Policy{log: log, fixed: os.Getenv("GOMAXPROCS") != "", ps: 1}
	if p.fixed {
		p.ps = runtime.GOMAXPROCS(0)
	} else {
		runtime.GOMAXPROCS(p.ps)
	}
	log.Info("Go Ps", zap.Int("gomaxprocs", p.ps), zap.Bool("from_environment", p.fixed))
	return p
}

// Flood says a frame is about to be written to a bridge device; the
// first call adds a P.
func (p *Policy) Flood() {
	if p != nil {
		p.add(&p.flooding, "frames are written to a bridge device, which holds a Go P through each flood")
	}
}

// Responder says the RARP responder runs in the agent; the first call
// adds a P.
func (p *Policy) Responder() {
	if p != nil {
		p.add(&p.responder, "the RARP responder's receive loop keeps its Go P under load")
	}
}

// add adds a P for the reason whose flag is given, once; flag is guarded
// by mu.
func (p *Policy) add(flag *bool, why string) {
	if p.fixed {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if *flag {
		return
	}
	*flag = true
	p.ps++
	runtime.GOMAXPROCS(p.ps)
	p.log.Info(why+": the agent takes one more", zap.Int("gomaxprocs", p.ps))
}
