package agent

import "github.com/rarp-announce/rarp-announce/pkg/libvirtwatch"

// Where the XML-read hook runs.
const (
	XMLReadLanding  = xmlReadLanding
	XMLReadRegistry = xmlReadRegistry
)

// SetXMLReadHook makes every landing and registry refresh call fn once a
// domain's XML is read (nil: none); it returns the hook it replaced.
func SetXMLReadHook(fn func(where string, d libvirtwatch.DomainRef)) (old func(string, libvirtwatch.DomainRef)) {
	old, testHookXMLRead = testHookXMLRead, fn
	return old
}

// SetUplinkListedHook makes every uplink event call fn once it listed the
// running domains (nil: none); it returns the hook it replaced.
func SetUplinkListedHook(fn func()) (old func()) {
	old, testHookUplinkListed = testHookUplinkListed, fn
	return old
}

// Registered reports whether the failover registry knows the domain.
func (a *Agent) Registered(uuid string) bool {
	a.reg.mu.Lock()
	defer a.reg.mu.Unlock()
	return a.reg.doms[uuid] != nil
}

// Learners lists the IP follower's running learners as "mac dev domain".
func (a *Agent) Learners() []string {
	f := a.d.IP
	if f == nil {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for mac, l := range f.learns {
		out = append(out, mac.String()+" "+l.dev+" "+l.domain)
	}
	return out
}

// PrematureWatches is how many domains' premature-move watches are open.
func (a *Agent) PrematureWatches() int {
	r := a.d.Reconv
	if r == nil {
		return 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.premature)
}
