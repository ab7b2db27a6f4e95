package fdb

import (
	"github.com/vishvananda/netns"

	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// Pool runs repairs concurrently on several Repairers. A Repairer is safe
// for concurrent use but serializes its calls on its netlink sockets, and a
// repair is a handful of round trips to the kernel: when a thousand VMs
// land within a second on a busy host, the repairs queued behind one
// another for hundreds of milliseconds (BenchmarkStorm), each delaying its
// VM's first announce.
type Pool struct {
	free chan *Repairer
	all  []*Repairer
}

// DefaultPoolSize is enough for the repairs of a landing storm to overlap
// their round trips; each Repairer holds two netlink sockets.
const DefaultPoolSize = 8

// NewPool returns a Pool of n Repairers (n < 1: DefaultPoolSize) for the
// network namespace ns (nil: the caller's), counting into m.
func NewPool(ns *netns.NsHandle, m *Metrics, n int) (*Pool, error) {
	if n < 1 {
		n = DefaultPoolSize
	}
	p := &Pool{free: make(chan *Repairer, n)}
	for range n {
		r, err := New(ns, m)
		if err != nil {
			p.Close()
			return nil, err
		}
		p.all = append(p.all, r)
		p.free <- r
	}
	return p, nil
}

// SetLinks makes every Repairer look links up in l first
// (Repairer.SetLinks). Call it before the first Repair.
func (p *Pool) SetLinks(l Links) {
	for _, r := range p.all {
		r.SetLinks(l)
	}
}

// Repair is Repairer.Repair on a free Repairer, waiting for one if all are
// busy.
func (p *Pool) Repair(bridge string, mac rarp.MAC, ownPort string) ([]Entry, error) {
	r := <-p.free
	defer func() { p.free <- r }()
	return r.Repair(bridge, mac, ownPort)
}

// Close releases every Repairer's sockets. Repairs must have returned.
func (p *Pool) Close() {
	for _, r := range p.all {
		r.Close()
	}
	p.all = nil
}
