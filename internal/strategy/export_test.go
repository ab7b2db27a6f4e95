package strategy

import "github.com/rarp-announce/rarp-announce/pkg/rarp"

// Test-only API of OVSPorts: the strategy cancels by MAC only and never
// counts what runs.

// Cancel stops the announces of mac on port; it returns how many it
// stopped.
func (a *OVSPorts) Cancel(port string, mac rarp.MAC) int {
	a.mu.Lock()
	hs := a.active[portMAC{port, mac}].handles
	delete(a.active, portMAC{port, mac})
	a.mu.Unlock()
	n := 0
	for _, h := range hs {
		if !done(h) && a.ann.Cancel(h.Key()) {
			n++
		}
	}
	return n
}

// Running is how many announces (port, MAC, VLAN) are in progress.
func (a *OVSPorts) Running() int { return a.ann.Running() }
