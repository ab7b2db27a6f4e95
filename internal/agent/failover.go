package agent

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/rarp-announce/rarp-announce/pkg/announce"
	"github.com/rarp-announce/rarp-announce/pkg/domxml"
	"github.com/rarp-announce/rarp-announce/pkg/libvirtwatch"
	"github.com/rarp-announce/rarp-announce/pkg/plan"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
	"github.com/rarp-announce/rarp-announce/pkg/uplink"
	"github.com/rarp-announce/rarp-announce/pkg/wait"
)

// Re-announces after an uplink event (issue 14): a bond failing over, an
// uplink's carrier coming back, an uplink re-added to a bridge. The switch
// then has the VMs' MACs on the old leg's port, or forgot them; neither the
// kernel bond (its gratuitous ARPs cover the bond's own addresses only) nor
// the bridge tells it. The agent knows every running local domain's NICs
// (the registry below) and announces those behind the uplink, out of it.

// UplinkEvents is pkg/uplink's Watcher as the agent uses it: the agent says what
// to watch as it learns where the running domains' NICs are.
type UplinkEvents interface {
	WatchBridge(name string)
	WatchDevice(name string)
	Events() <-chan uplink.Event
}

// Topology says what a device is (uplink.Resolver): the bridge an uplink
// port belongs to, a macvtap's lower device.
type Topology interface {
	Link(name string) (uplink.Link, bool)
	LinkByIndex(index int) (uplink.Link, bool)
}

// OVSUplinks says through which kernel devices an Open vSwitch bridge's
// traffic leaves the host (ovs.Switch.Uplinks, from OVSDB: its physical
// ports, through patch ports). The agent watches them as it watches a
// Linux bridge's uplinks; nil: OVS NICs are not re-announced after uplink
// events.
type OVSUplinks interface {
	Uplinks(ctx context.Context, bridge string) ([]string, error)
}

// RunningLister lists the domains running here in one call
// (libvirtwatch.Watcher). The agent's Libvirt implements it in production;
// without it nothing is re-announced after an uplink event.
type RunningLister interface {
	RunningDomains(ctx context.Context) ([]libvirtwatch.RunningDomain, error)
}

// Trigger names for Settings.Disabled (the config's triggers: keys): the
// uplink reasons are uplink.Reason's strings.
const (
	TriggerMigration = "migration"
	TriggerRestore   = "restore"
	TriggerSnapshot  = "snapshot"
)

// enabled reports whether the trigger named name announces.
func (s Settings) enabled(name string) bool { return !s.Disabled[name] }

// uplinksOn reports whether any uplink trigger is on: only then does the
// agent keep its registry of running domains and watch their uplinks.
func (s Settings) uplinksOn() bool {
	for _, r := range uplink.Reasons {
		if s.enabled(r.String()) {
			return true
		}
	}
	return false
}

// landingTrigger is the trigger of a Landed event and its config name.
func landingTrigger(ev libvirtwatch.Event) (announce.Trigger, string) {
	switch ev.Cause() {
	case libvirtwatch.CauseRestore:
		return announce.TriggerRestore, TriggerRestore
	case libvirtwatch.CauseSnapshot:
		return announce.TriggerRestore, TriggerSnapshot
	}
	return announce.TriggerLanding, TriggerMigration
}

// registryReaders bounds the live XML reads of one refresh: 1,000 domains
// found at start must not open 1,000 RPCs at once.
const registryReaders = 8

// registry is what the agent knows of the running local domains' NICs
// that can be re-announced from the host: their plan, keyed by where their
// frames leave (the bridge, or a macvtap's lower device). It is filled from
// the live XML of the domains libvirt lists as running, read once per QEMU
// process (domain id) and again after any start or resume; it never holds a
// MAC from the FDB.
type registry struct {
	mu   sync.Mutex
	doms map[string]*known // by UUID
	// departed: the domains gone (observe) since the refresh in
	// progress took its list; it does not register them.
	departed map[string]bool

	refreshMu sync.Mutex // one refresh at a time
	kick      chan struct{}

	// Open vSwitch bridges of the known OVS NICs and their uplinks (the
	// kernel devices OVSDB names), read in the background (ovsLoop).
	ovsWant map[string]bool
	ovsUp   map[string][]string
	ovsKick chan struct{}
}

type known struct {
	ref     libvirtwatch.DomainRef
	id      int32
	stale   bool          // a start or resume since the XML was read
	targets []plan.Target // host-, ovs- and qemu-strategy NICs with something to watch
	via     []string      // per target: watchKey of where its frames leave
	stay    *stay         // set by put
	at      time.Time     // set by put: when it was registered
}

// stay is one QEMU process's time in the registry, across re-reads of its
// XML. It ends when the domain leaves the registry: an event says it
// stopped, paused or left (observe), or a listing no longer has it
// (refresh: the event may never come, as when libvirtd was down). Its end
// stops the uplink re-announces of the domain's NICs, and only those: a
// re-announce not started yet finds its context ended (sendHost and the
// ovs strategy check it after they start), one running is cancelled by
// its handle. A landing's announces are the landing's (Handle stops them).
type stay struct {
	ctx   context.Context
	leave context.CancelCauseFunc
	mu    sync.Mutex
	hs    []*announce.Handle // the re-announces started, not known finished
}

func newStay() *stay {
	ctx, leave := context.WithCancelCause(context.Background())
	return &stay{ctx: ctx, leave: leave}
}

// within returns a context that ends with the stay (at once, cause
// ErrDomainLeft) or soon after parent (the agent stopping), and its
// release. A send checks it before it starts; keep is what makes sure
// nothing started outlives the stay.
func (s *stay) within(parent context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(s.ctx)
	stop := context.AfterFunc(parent, func() { cancel(context.Cause(parent)) })
	return ctx, func() { stop(); cancel(nil) }
}

// keep takes the handles of re-announces started for the domain; if the
// stay ended meanwhile (before end could see them), they are cancelled now.
func (s *stay) keep(hs []*announce.Handle) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx.Err() != nil {
		for _, h := range hs {
			h.Cancel()
		}
		return
	}
	// A newer announce of the same key supersedes the older (which has
	// then ended): what is kept is bounded by the NICs' keys.
	s.hs = slices.DeleteFunc(s.hs, (*announce.Handle).Superseded)
	s.hs = append(s.hs, hs...)
}

// end ends the stay: first its context, then (under the lock keep takes)
// the re-announces kept.
func (s *stay) end() {
	s.leave(ErrDomainLeft)
	s.mu.Lock()
	hs := s.hs
	s.hs = nil
	s.mu.Unlock()
	for _, h := range hs {
		h.Cancel()
	}
}

func newRegistry() *registry {
	return &registry{doms: map[string]*known{}, kick: make(chan struct{}, 1),
		ovsWant: map[string]bool{}, ovsUp: map[string][]string{}, ovsKick: make(chan struct{}, 1)}
}

// watchKey names where a NIC's frames leave: "bridge/<name>" for a NIC on
// a Linux bridge, "dev/<name>" for a macvtap's lower device, "ovs/<name>"
// for a NIC on an Open vSwitch bridge.
func bridgeKey(name string) string { return "bridge/" + name }
func deviceKey(name string) string { return "dev/" + name }
func ovsKey(name string) string    { return "ovs/" + name }

// observe keeps the registry current with a libvirt event: a domain that
// starts or resumes, or whose devices changed (a NIC hot-plugged or
// unplugged), is read again; one that lands is marked stale until its
// landing hands over the XML it reads anyway (landed), so it is not read
// twice; one that stops, pauses or leaves is dropped and returned (the
// caller stops its re-announces).
func (r *registry) observe(ev libvirtwatch.Event) (gone *known) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case ev.Gone():
		gone = r.drop(ev.Domain.UUID)
		if r.departed != nil {
			r.departed[ev.Domain.UUID] = true
		}
		return gone
	case ev.Kind == libvirtwatch.Landed:
		if k := r.doms[ev.Domain.UUID]; k != nil {
			k.stale = true
		}
		return nil
	case ev.Starts(), ev.Kind == libvirtwatch.DeviceChanged:
		// Started or resumed (a new QEMU process, or a domain not read
		// yet), or a device hot-plugged or unplugged (a NIC more or
		// less): read its live XML again.
		if k := r.doms[ev.Domain.UUID]; k != nil {
			k.stale = true
		}
	default:
		return nil
	}
	r.refreshSoon()
	return nil
}

// put registers k for its domain, under r.mu. The same QEMU process keeps
// its stay; another one (a restart whose events were not seen) ends the
// old process's.
func (r *registry) put(k *known) {
	k.at = time.Now()
	old := r.doms[k.ref.UUID]
	if old != nil && old.id == k.id {
		k.stay = old.stay
	} else {
		if old != nil {
			old.stay.end()
		}
		k.stay = newStay()
	}
	r.doms[k.ref.UUID] = k
}

// drop unregisters a domain, under r.mu, and ends its stay; it returns
// what the registry knew of it (nil: nothing).
func (r *registry) drop(uuid string) *known {
	k := r.doms[uuid]
	if k == nil {
		return nil
	}
	delete(r.doms, uuid)
	k.stay.end()
	return k
}

// dropAbsent drops, under r.mu, every domain registered before listed (when
// libvirt's list of running domains was taken) that the list, live, does
// not hold: it is not running here any more, and its Cancel event may
// never come (libvirtd was down, and a resync cancels only the landings it
// remembers), so its re-announces end here. A domain registered after the
// listing (a landing handed its XML over meanwhile) is kept: the list was
// taken before it ran here.
func (r *registry) dropAbsent(live map[string]bool, listed time.Time) {
	for u, k := range r.doms {
		if !live[u] && k.at.Before(listed) {
			r.drop(u)
		}
	}
}

// refreshSoon asks refreshLoop for a refresh (one pending is enough).
func (r *registry) refreshSoon() {
	wait.Wake(r.kick)
}

// landed takes the live XML a landing read and parsed: the domain's
// registry entry is fresh without another DomainXML call. Without it (the
// XML could not be read, a manual announce with no domain id) the
// registry reads the domain itself at its next refresh.
func (a *Agent) landed(ev libvirtwatch.Event, dom *domxml.Domain, s Settings) {
	if a.d.UplinkEvents == nil || !s.uplinksOn() {
		return
	}
	if dom == nil || ev.DomainID < 0 {
		a.reg.refreshSoon()
		return
	}
	k, _ := a.knownFrom(ev.Domain, ev.DomainID, dom, s) // the landing starts the learners (IP.Landed)
	a.reg.mu.Lock()
	a.reg.put(k)
	a.reg.mu.Unlock()
}

// refreshLoop keeps the registry warm in the background: at start (retrying
// until libvirt answers) and after every event that made it stale, so an
// uplink event finds the XML already read.
func (a *Agent) refreshLoop(ctx context.Context) {
	lister, ok := a.d.Libvirt.(RunningLister)
	if !ok || a.d.UplinkEvents == nil {
		return
	}
	// The first refresh, and a failed one's retry a second later, come
	// through the same kick as an event's.
	retry := time.AfterFunc(0, a.reg.refreshSoon)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.reg.kick:
		}
		if !a.current().uplinksOn() {
			continue // every uplink trigger is off: Update kicks when one comes on
		}
		if _, err := a.refresh(ctx, lister); err != nil {
			if ctx.Err() == nil {
				a.log.Debug("registry of running domains not filled yet", zap.Error(err))
				retry.Reset(time.Second)
			}
		} else if a.d.Uplinks != nil {
			a.warmUplinks() // new NICs' uplinks open now, not at the next tick
		}
	}
}

// warmEvery is how often the uplinks behind the registry's bridge NICs
// are warmed: below the announcer's LinkIdle (a minute), so their sockets
// stay open and a failover's first frames do not wait for one to open
// (seen in the rig under TCG: 10-20 ms, most of the agent's share).
const warmEvery = 20 * time.Second

// warmLoop (and refreshLoop after each refresh) keeps open a socket on every uplink a bridge NIC of a running
// local domain would be re-announced on: one per uplink port, sending
// nothing (a drop-all filter), as long as the registry has NICs behind
// it.
func (a *Agent) warmLoop(ctx context.Context) {
	if a.d.UplinkEvents == nil || a.d.Uplinks == nil {
		return
	}
	wait.Every(ctx, warmEvery, func(context.Context) {
		if a.current().uplinksOn() {
			a.warmUplinks()
		}
	})
}

// warmUplinks warms the uplinks of each bridge the registry's bridge NICs
// are on (one NIC per bridge and VLAN set asks the topology).
func (a *Agent) warmUplinks() {
	type ask struct {
		bridge, port string
		vlans        []rarp.VLAN
	}
	var asks []ask
	seen := map[string]bool{}
	a.reg.mu.Lock()
	for _, k := range a.reg.doms {
		for _, t := range k.targets {
			vlans := xmlVLANs(t)
			key := fmt.Sprint(t.Master, vlans)
			if vlans == nil {
				key += "/" + t.Port // the port's own VLANs on the bridge decide
			}
			if t.Strategy != plan.Host || t.Master == "" || seen[key] {
				continue
			}
			seen[key] = true
			asks = append(asks, ask{t.Master, t.Port, vlans})
		}
	}
	a.reg.mu.Unlock()
	warmed := map[string]bool{}
	for _, q := range asks {
		ts, err := a.d.Uplinks.Targets(q.bridge, q.port, q.vlans)
		if err != nil {
			continue // no uplink (or unreadable): nothing to warm
		}
		for _, t := range ts {
			if !warmed[t.Uplink.Name] {
				warmed[t.Uplink.Name] = true
				a.d.Announcer.Warm(announce.HostPort(t.Uplink.Name))
			}
		}
	}
}

// refresh lists the running domains and reads the live XML of those not
// known yet (or stale), at most registryReaders at once. It returns the
// running domains' entries: the list is taken now, so a domain stopped
// since is not among them.
func (a *Agent) refresh(ctx context.Context, lister RunningLister) ([]*known, error) {
	r := a.reg
	r.refreshMu.Lock()
	defer r.refreshMu.Unlock()
	// A domain that goes from now on, while its XML is read, is not
	// registered: observe dropped it already and the caller released
	// its learners, which registering would undo.
	r.mu.Lock()
	r.departed = map[string]bool{}
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.departed = nil
		r.mu.Unlock()
	}()
	listed := time.Now()
	running, err := lister.RunningDomains(ctx)
	if err != nil {
		return nil, err
	}
	s := a.current()
	r.mu.Lock()
	var read []libvirtwatch.RunningDomain
	live := make(map[string]bool, len(running))
	for _, d := range running {
		live[d.Domain.UUID] = true
		if k := r.doms[d.Domain.UUID]; k == nil || k.stale || k.id != d.ID {
			read = append(read, d)
		}
	}
	r.dropAbsent(live, listed)
	r.mu.Unlock()
	// The same for the IP layer: its claims and learners of a domain
	// gone meanwhile (not only of those the registry knew).
	a.d.IP.ReleaseAbsent(live, listed)

	sem := make(chan struct{}, registryReaders)
	var wg sync.WaitGroup
	for _, d := range read {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			k, learn := a.readKnown(ctx, d, s)
			if k == nil {
				return
			}
			r.mu.Lock()
			defer r.mu.Unlock()
			if !r.departed[d.Domain.UUID] {
				r.put(k)
				learn() // under r.mu: ordered before a departure's release
			}
		}()
	}
	wg.Wait()

	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*known, 0, len(running))
	nics := 0
	for _, d := range running {
		if k := r.doms[d.Domain.UUID]; k != nil && k.id == d.ID {
			out = append(out, k)
			nics += len(k.targets)
		}
	}
	a.log.Debug("registry of running domains refreshed", zap.Int("running", len(running)), zap.Int("read", len(read)),
		zap.Int("known", len(out)), zap.Int("nics", nics))
	return out, nil
}

// readKnown reads and plans one running domain's NICs and starts watching
// where they leave; nil if its XML cannot be read (it stopped meanwhile,
// or libvirt failed: logged, tried again at the next refresh).
func (a *Agent) readKnown(ctx context.Context, d libvirtwatch.RunningDomain, s Settings) (*known, func()) {
	xml, err := a.d.Libvirt.DomainXML(ctx, d.Domain)
	if testHookXMLRead != nil {
		testHookXMLRead(xmlReadRegistry, d.Domain)
	}
	if err != nil {
		a.log.Debug("registry: cannot read live XML", zap.String("domain", d.Domain.Name), zap.Error(err))
		return nil, nil
	}
	dom, _ := domxml.Parse(xml) // invalid NICs are left out, as at landing
	if dom == nil {
		return nil, nil
	}
	return a.knownFrom(d.Domain, d.ID, dom, s)
}

// knownFrom plans a running domain's NICs (the QEMU process id) and starts
// watching where its NICs' frames leave. learn starts the learners on its
// ports (ip_announce.sources.learned), for the caller to run when it
// registers the domain.
func (a *Agent) knownFrom(ref libvirtwatch.DomainRef, id int32, dom *domxml.Domain, s Settings) (k *known, learn func()) {
	k = &known{ref: ref, id: id}
	targets := plan.Plan(dom, s.Plan)
	learn = func() { a.d.IP.RunningDomain(dom, targets, a.log) }
	for _, t := range targets {
		var key string
		switch t.Strategy {
		case plan.Host:
			key = a.whereLeaves(t)
		case plan.OVS:
			key = a.ovsLeaves(t)
		case plan.QEMU:
			key = a.qemuLeaves(t)
		default:
			continue
		}
		if key == "" {
			continue
		}
		k.targets = append(k.targets, t)
		k.via = append(k.via, key)
	}
	return k, learn
}

// whereLeaves returns t's watch key and starts watching it.
func (a *Agent) whereLeaves(t plan.Target) string {
	if t.Master != "" {
		a.d.UplinkEvents.WatchBridge(t.Master)
		return bridgeKey(t.Master)
	}
	if a.d.Topology == nil {
		return ""
	}
	mv, ok := a.d.Topology.Link(t.Device)
	if !ok || mv.Parent == 0 {
		return ""
	}
	lower, ok := a.d.Topology.LinkByIndex(mv.Parent)
	if !ok {
		return ""
	}
	a.d.UplinkEvents.WatchDevice(lower.Name)
	return deviceKey(lower.Name)
}

// qemuLeaves returns the watch key of a NIC announced through QEMU
// (announce-self): QEMU's frames leave where the NIC's own traffic does,
// so the key is the one the NIC would have under the host or ovs strategy:
// its Linux bridge, its macvtap's lower device, its OVS bridge. A
// vhost-user NIC has none of these (ovsLeaves says why): nothing to watch.
func (a *Agent) qemuLeaves(t plan.Target) string {
	switch t.Kind {
	case plan.KindOpenVSwitch:
		return a.ovsLeaves(t)
	case plan.KindBridge, plan.KindNetwork:
		if t.NIC.SourceBridge == "" {
			return ""
		}
		t.Master = t.NIC.SourceBridge
		return a.whereLeaves(t)
	case plan.KindDirect:
		if t.NIC.Target == "" {
			return ""
		}
		t.Master, t.Device = "", t.NIC.Target
		return a.whereLeaves(t)
	}
	return ""
}

// ovsLeaves returns the watch key of an OVS NIC: its Open vSwitch bridge,
// from the live XML's <source bridge>, whose uplinks ovsLoop reads from
// OVSDB and watches. A landing calls this: it asks for the bridge's
// uplinks in the background, never reads OVSDB itself.
//
// vhost-user NICs (the qemu strategy) sit on an OVS bridge too, but on a
// DPDK datapath: their uplinks are DPDK ports, not kernel devices, and no
// netlink event tells their carrier; their XML names no bridge either.
func (a *Agent) ovsLeaves(t plan.Target) string {
	br := t.NIC.SourceBridge
	if a.d.OVSUplinks == nil || br == "" {
		return ""
	}
	r := a.reg
	r.mu.Lock()
	_, known := r.ovsUp[br]
	r.ovsWant[br] = true
	r.mu.Unlock()
	if !known {
		wait.Wake(r.ovsKick)
	}
	return ovsKey(br)
}

// ovsRecheck is how often the known OVS bridges' uplinks are read again
// (one OVSDB transaction per bridge): a physical port added to a bridge
// is watched within it.
const ovsRecheck = 30 * time.Second

// ovsLoop reads the uplinks of the OVS bridges the registry's NICs are on
// and watches them: at once for a bridge not read yet, every ovsRecheck
// for all.
func (a *Agent) ovsLoop(ctx context.Context) {
	if a.d.OVSUplinks == nil || a.d.UplinkEvents == nil {
		return
	}
	r := a.reg
	tick := time.NewTicker(ovsRecheck)
	defer tick.Stop()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	for {
		all := false
		select {
		case <-ctx.Done():
			return
		case <-r.ovsKick:
		case <-retry.C:
		case <-tick.C:
			all = true
		}
		r.mu.Lock()
		var bridges []string
		for br := range r.ovsWant {
			if _, ok := r.ovsUp[br]; all || !ok {
				bridges = append(bridges, br)
			}
		}
		r.mu.Unlock()
		failed := false
		for _, br := range bridges {
			ups, err := a.d.OVSUplinks.Uplinks(ctx, br)
			if err != nil {
				if ctx.Err() == nil {
					a.log.Warn("cannot read an Open vSwitch bridge's uplinks; its NICs are not re-announced on uplink events yet", zap.String("bridge", br), zap.Error(err))
				}
				failed = true
				continue
			}
			for _, u := range ups {
				a.d.UplinkEvents.WatchDevice(u)
			}
			r.mu.Lock()
			r.ovsUp[br] = ups
			r.mu.Unlock()
			a.log.Debug("Open vSwitch bridge's uplinks watched", zap.String("bridge", br), zap.Strings("uplinks", ups))
		}
		if failed {
			retry.Reset(time.Second)
		}
	}
}

// eventKeys are the watch keys an uplink event concerns: the uplink as a
// device, the bridge it is a port of, the OVS bridges it is an uplink of.
func (a *Agent) eventKeys(e uplink.Event) map[string]bool {
	keys := map[string]bool{deviceKey(e.Uplink.Name): true}
	a.reg.mu.Lock()
	for br, ups := range a.reg.ovsUp {
		if slices.Contains(ups, e.Uplink.Name) {
			keys[ovsKey(br)] = true
		}
	}
	a.reg.mu.Unlock()
	if a.d.Topology != nil {
		if l, ok := a.d.Topology.LinkByIndex(e.Uplink.Index); ok && l.Master != 0 {
			if br, ok := a.d.Topology.LinkByIndex(l.Master); ok && br.Kind == "bridge" {
				keys[bridgeKey(br.Name)] = true
			}
		}
	}
	return keys
}

// uplinkEvent re-announces every NIC of the domains running here whose
// frames leave through e.Uplink, out of that uplink, with the landing
// schedule. It returns the number of NICs announced.
func (a *Agent) uplinkEvent(ctx context.Context, e uplink.Event, seq uint64) int {
	s := a.current()
	reason := e.Reason.String()
	log := a.log.With(zap.String("uplink", e.Uplink.Name), zap.String("device", e.Device.Name),
		zap.String("reason", reason), zap.Int("coalesced", e.Coalesced))
	if !s.enabled(reason) {
		log.Info("uplink event: trigger disabled; not re-announced")
		return 0
	}
	lister, ok := a.d.Libvirt.(RunningLister)
	if !ok {
		return 0
	}
	log.Debug("uplink event: checking which domains run here")
	keys := a.eventKeys(e)
	if a.hostBehind(keys) {
		// The uplink's socket opens while libvirt is asked, not at the
		// first frame (seen in the rig under TCG: ~20 ms of the 30 from
		// the failover's notification to the first frame).
		a.d.Announcer.Warm(announce.HostPort(e.Uplink.Name))
	}
	if e.Reason == uplink.PortAdded {
		// A port just added to a bridge gets its VLANs right after
		// (`bridge vlan add`, systemd-networkd's BridgeVLAN): on a
		// VLAN-filtering bridge it carries only the default PVID until
		// then, and a VLAN added later is no event. Let them land.
		if !wait.Sleep(ctx.Done(), portSettle) {
			return 0
		}
	}
	// The listing is the check that each domain runs here now: a domain
	// stopped, paused or gone is not in it, and never announced.
	listStart := time.Now()
	doms, err := a.refresh(ctx, lister)
	if err != nil && ctx.Err() == nil {
		// libvirtd restarting, often in the same maintenance as the
		// uplink: ask again every second within the readiness timeout,
		// unless a newer event of this uplink takes over.
		log.Warn("uplink event: cannot list the running domains; asking libvirt again", zap.Error(err))
		for deadline := time.Now().Add(s.ReadyTimeout); err != nil && time.Now().Before(deadline) && a.newestUplinkEvent(e, seq); {
			if !wait.Sleep(ctx.Done(), uplinkRelist) {
				break
			}
			doms, err = a.refresh(ctx, lister)
		}
	}
	listed := time.Since(listStart)
	if testHookUplinkListed != nil {
		testHookUplinkListed()
	}
	if err != nil && !a.newestUplinkEvent(e, seq) {
		log.Info("uplink event: a newer event of the uplink takes over")
		return 0
	}
	if err != nil {
		a.m.uplinkReannounce(reason, 0, err)
		log.Error("uplink event: cannot list the running domains; not re-announced", zap.Error(err))
		return 0
	}
	if e.Reason != uplink.BondFailover {
		s.Schedule = afterCarrier(s.Schedule)
	}
	nics, domains := 0, 0
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, k := range doms {
		// The listing said k runs here; from now on its stay says so: a
		// Cancel handled while its NICs are announced ends it (observe),
		// which stops what was started and what has not started yet.
		dctx, release := k.stay.within(ctx)
		n := 0
		var viaOVS, viaQEMU []plan.Target
		for i, t := range k.targets {
			if !keys[k.via[i]] {
				continue
			}
			switch t.Strategy {
			case plan.OVS:
				viaOVS = append(viaOVS, t)
				continue
			case plan.QEMU:
				viaQEMU = append(viaQEMU, t)
				continue
			}
			t.Uplinks = []string{e.Uplink.Name}
			t.RepairFDB = false // the VM did not move: the local bridge is right
			tlog := log.With(zap.String("domain", k.ref.Name), zap.Stringer("mac", t.NIC.MAC))
			if hs, _, err := a.sendHost(dctx, t, s, e.At, announce.TriggerUplinkFailover, tlog); err == nil {
				k.stay.keep(hs)
				n++
			}
		}
		if n > 0 {
			mu.Lock()
			domains++
			nics += n
			mu.Unlock()
		}
		if len(viaOVS)+len(viaQEMU) > 0 {
			// The ovs and qemu strategies' own paths, as a landing takes
			// them: a packet-out from each VM's port, which OVS floods
			// out of its uplinks with the port's VLAN; QEMU's
			// announce-self on each NIC's alias, which leaves where the
			// NIC's traffic does. Each domain on its own goroutine: a
			// strategy waits for each NIC's first frame.
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer release()
				got := a.strategyReannounce(dctx, plan.OVS, k, viaOVS, s, e, log)
				if len(viaQEMU) > 0 {
					// QEMU's later bursts (afterCarrier's second) go
					// from the qmp announcer's goroutine, which waits
					// on the context it was given: that one lasts the
					// schedule (or the domain's stay), not this call.
					qctx, qrelease := k.stay.within(ctx)
					time.AfterFunc(s.Schedule.Duration()+time.Second, qrelease)
					got += a.strategyReannounce(qctx, plan.QEMU, k, viaQEMU, s, e, log)
				}
				mu.Lock()
				defer mu.Unlock()
				if n == 0 && got > 0 {
					domains++
				}
				nics += got
			}()
		} else {
			release()
		}
	}
	wg.Wait()
	a.m.uplinkReannounce(reason, nics, nil)
	log.Info("uplink event: re-announced the running domains behind it",
		zap.Int("domains", domains), zap.Int("nics", nics), zap.Time("event_at", e.At),
		zap.Duration("listed", listed), zap.Duration("lag", time.Since(e.At)))
	return nics
}

// hostBehind reports whether the registry knows a bridge NIC whose frames
// leave through one of keys (its frames go out of the uplink itself).
func (a *Agent) hostBehind(keys map[string]bool) bool {
	a.reg.mu.Lock()
	defer a.reg.mu.Unlock()
	for _, k := range a.reg.doms {
		for i, t := range k.targets {
			if t.Strategy == plan.Host && t.Master != "" && keys[k.via[i]] {
				return true
			}
		}
	}
	return false
}

// strategyReannounce announces a domain's NICs behind an uplink through
// the strategy named (ovs, qemu) and returns how many started.
func (a *Agent) strategyReannounce(ctx context.Context, name plan.Strategy, k *known, targets []plan.Target, s Settings, e uplink.Event, log *zap.Logger) int {
	st := a.strategies[name]
	if st == nil || len(targets) == 0 {
		return 0
	}
	s.WatchWindow = 0 // no landing: nothing re-plugged to watch for
	l := Landing{Domain: k.ref, Event: "uplink " + e.Reason.String(), Since: e.At, Trigger: announce.TriggerUplinkFailover,
		Settings: s, Log: log.With(zap.String("domain", k.ref.Name))}
	n := 0
	for _, r := range st.Announce(ctx, l, targets) {
		if r.Result == ResultStarted {
			k.stay.keep(r.Handles)
			n++
		}
	}
	return n
}

// carrierSettle is how long after a link's carrier comes back its far end
// may still drop frames: a Linux bridge enables a port only when the
// kernel's link watcher handles the carrier, up to a second later (seen in
// the netns rig: the whole 0.8 s landing burst lost); a switch port with
// portfast is in the same range.
const carrierSettle = time.Second

// afterCarrier repeats a one-burst schedule once, carrierSettle later, for
// a link that just came back; a bond failover moves to a leg that was up
// already and keeps the landing schedule.
func afterCarrier(s announce.Schedule) announce.Schedule {
	if s.Bursts < 2 {
		s.Bursts, s.BurstInterval = 2, carrierSettle
	}
	return s
}

// portSettle is how long after a port joins a bridge the agent looks at
// which VLANs it carries (uplinkEvent).
const portSettle = 500 * time.Millisecond

// uplinkRelist is how often an uplink event whose listing of the running
// domains failed asks libvirt again.
const uplinkRelist = time.Second

// newestUplinkEvent reports whether seq is still the newest event of e's
// uplink.
func (a *Agent) newestUplinkEvent(e uplink.Event, seq uint64) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.uplinkSeq[e.Uplink.Index] == seq
}

// runUplinks handles uplink events until ctx ends or the channel closes;
// each event in its own goroutine, so a slow libvirt delays no other
// uplink.
func (a *Agent) runUplinks(ctx context.Context) {
	if a.d.UplinkEvents == nil {
		return
	}
	evs := a.d.UplinkEvents.Events()
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-evs:
			if !ok {
				return
			}
			a.mu.Lock()
			a.uplinkSeq[e.Uplink.Index]++
			seq := a.uplinkSeq[e.Uplink.Index]
			a.wg.Add(1)
			a.mu.Unlock()
			go func() {
				defer a.wg.Done()
				a.uplinkEvent(ctx, e, seq)
			}()
		}
	}
}
