package agent

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/rarp-announce/rarp-announce/pkg/announce"
	"github.com/rarp-announce/rarp-announce/pkg/domxml"
	"github.com/rarp-announce/rarp-announce/pkg/ipannounce"
	"github.com/rarp-announce/rarp-announce/pkg/ipsource"
	"github.com/rarp-announce/rarp-announce/pkg/plan"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
	"github.com/rarp-announce/rarp-announce/pkg/wait"
)

// ReasonIP is the announce.Request.Reason of the IP-layer frames: the
// follower ignores its own frames when it watches for first RARPs.
const ReasonIP = "ip-follow"

// IPOptions configure an IPFollower.
type IPOptions struct {
	// Resolver finds each NIC's addresses (Nova, static, learned, carried)
	// and grants them through its Claims.
	Resolver *ipsource.Resolver
	// Gateways get a directed ARP request / NS from each address of
	// their family, so routers with arp_accept=0 learn the VM.
	Gateways  []netip.Addr
	GARPReply bool
	Schedule  ipannounce.Schedule
	// Cap spaces the IP-layer frames per segment (the bridge, uplink or
	// OVS bridge the RARPs go to), apart from the RARPs' pacer.
	Cap     *ipannounce.UplinkCap
	Metrics *IPMetrics
	Logger  *zap.Logger
	// Guest, if set, asks QEMU (QMP announce-self restricted to the
	// NIC's alias) once per landing, at the NIC's first RARP: a virtio
	// guest then sends its own GARPs and NAs, covering addresses and
	// VLANs inside the guest no source knows. The host-side frames
	// cover the rest (emulated NICs, guests without GUEST_ANNOUNCE).
	Guest GuestAnnouncer
	// Learn, if set, opens a learner on a landed NIC's port (its tap) that
	// records the addresses the guest shows it owns (ARP, ND, DHCP acks)
	// in the Resolver's Learned store; it runs until the domain leaves.
	// One per port, for every running local domain (Landed and
	// RunningDomain).
	Learn LearnerOpener
	// Carry, with Carry.Write set and a Learn, writes what the learners
	// learn into the domain's live XML (carry.go), so a migration's
	// destination announces it at landing.
	Carry CarryOptions
}

// LearnerOpener opens a learner for mac's frames on dev, the VM's tap
// (ipsource.Listen in the host's network namespace); seen is called for
// every address the learner sees (ipsource.Learner.OnEvent).
type LearnerOpener func(dev string, mac rarp.MAC, seen func(ipsource.Event)) (Learner, error)

// Learner is an ipsource.Learner.
type Learner interface {
	Run(ctx context.Context) error
	Close() error
}

type learnRun struct {
	domain, dev string
	cancel      context.CancelFunc
}

// GuestAnnouncer is QMP announce-self through libvirt (qmp.Announcer).
type GuestAnnouncer interface {
	AnnounceSelf(ctx context.Context, uuid string, aliases []string, s announce.Schedule) error
}

// guestSchedule is one announce-self round: QEMU raises the guest's
// announce interrupt once (and sends one RARP itself).
var guestSchedule = announce.Schedule{Rounds: 1, Bursts: 1, Initial: 50 * time.Millisecond, Step: 100 * time.Millisecond, Max: 550 * time.Millisecond}

// guestTimeout bounds one announce-self call: libvirt holds monitor
// commands while a migration job still runs.
const guestTimeout = 10 * time.Second

// Sender starts one announce on the announcer that owns a kind of port.
type Sender func(announce.Request) (*announce.Handle, error)

// IPFollower sends a NIC's IP-layer frames (GARP, unsolicited NA, directed
// ARP/NS to gateways) after its RARPs, on the port and VLAN the RARPs took.
//
// Its trigger is the first RARP frame an announcer sends for a MAC on a
// port (Observe, wired as the announcers' OnFrame): whatever chose the
// port (the host strategy's bridge or uplinks, a macvtap, the OVS
// adapter's packet-out port), the IP frames follow it there, paced by the
// same link but spaced by their own Schedule and Cap. Only NICs of domains
// that landed here (Landed) and have not left (Release) have addresses, so
// nothing is sent for a MAC that is not a running local domain's.
type IPFollower struct {
	o   IPOptions
	log *zap.Logger

	// wg counts the runs (frames and guest asks) in progress: Wait.
	wg sync.WaitGroup
	// learning counts the learners' goroutines: stopLearners.
	learning sync.WaitGroup

	mu      sync.Mutex
	nics    map[rarp.MAC]ipNIC
	runs    map[runKey]*ipRun
	senders map[announce.Kind]Sender
	learns  map[rarp.MAC]*learnRun
	// firstFailed: the ports and VLANs whose announce's first RARP
	// failed; its first later frame of the first burst that goes out
	// starts the IP frames instead (Observe).
	firstFailed map[runKey]bool
	carry       *carrier // nil: learned addresses stay on this host
	// since is when each domain was last handed over (Landed,
	// RunningDomain): ReleaseAbsent frees only what a listing taken
	// after it no longer shows.
	since map[string]time.Time
}

type ipNIC struct {
	domain, name, alias string
	addrs               []ipsource.Candidate
	guest               *sync.Once // asks QEMU once per landing
	// pending, while open, says addrs are still being resolved in the
	// background (libvirt's leases); nil once they are known.
	pending chan struct{}
}

// ipRun is one port's IP frames in progress; compared by pointer.
type ipRun struct{ cancel context.CancelFunc }

type runKey struct {
	mac  rarp.MAC
	port announce.Port
	vlan uint16
}

// NewIPFollower returns a follower; give it senders with SetSender.
func NewIPFollower(o IPOptions) *IPFollower {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Resolver == nil {
		o.Resolver = &ipsource.Resolver{}
	}
	if o.Metrics == nil {
		o.Metrics = NewIPMetrics(nil)
	}
	f := &IPFollower{o: o, log: o.Logger, nics: map[rarp.MAC]ipNIC{}, runs: map[runKey]*ipRun{},
		senders: map[announce.Kind]Sender{}, learns: map[rarp.MAC]*learnRun{}, firstFailed: map[runKey]bool{}, since: map[string]time.Time{}}
	if o.Learn != nil {
		f.carry = newCarrier(o.Carry, o.Resolver.Learned, o.Metrics, o.Logger)
	}
	return f
}

// RunningDomain starts the learners on the NICs of a domain running here that
// did not land (it started here, or ran before the agent started): the
// failover registry hands over every running domain's XML it reads. Its
// addresses are neither resolved nor claimed: nothing is announced until
// it lands somewhere.
func (f *IPFollower) RunningDomain(dom *domxml.Domain, targets []plan.Target, log *zap.Logger) {
	if f == nil || f.o.Learn == nil {
		return
	}
	f.handedOver(dom.UUID)
	for _, t := range targets {
		if t.Strategy != plan.Skip {
			f.learn(dom, t, log.With(zap.String("domain", dom.Name), zap.Stringer("mac", t.NIC.MAC)))
		}
	}
}

// Running is how many NIC ports still have IP frames (or a guest
// announce) due; one-shot commands wait for it to reach 0.
func (f *IPFollower) Running() int {
	if f == nil {
		return 0
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.runs)
}

// SetSender makes frames for ports of kind go through s.
func (f *IPFollower) SetSender(kind announce.Kind, s Sender) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.senders[kind] = s
}

// Landed resolves and claims the addresses of the domain's announced NICs.
// It runs before the strategies send, so the first RARP finds them. A
// NIC whose sources include libvirt's DHCP leases (an RPC, up to
// ipsource.LeaseTimeout) is resolved in the background instead: the
// first RARP must not wait for libvirt; its IP frames start once the
// lookup ended (Observe).
func (f *IPFollower) Landed(dom *domxml.Domain, targets []plan.Target, log *zap.Logger) {
	if f == nil {
		return
	}
	f.handedOver(dom.UUID)
	for _, t := range targets {
		if t.Strategy == plan.Skip {
			continue
		}
		nlog := log.With(zap.Stringer("mac", t.NIC.MAC))
		f.learn(dom, t, nlog)
		if !f.o.Resolver.Remote(t.NIC) {
			f.resolve(dom, t, nil, nlog)
			continue
		}
		pending := make(chan struct{})
		f.mu.Lock()
		f.nics[t.NIC.MAC] = ipNIC{domain: dom.UUID, name: dom.Name, alias: t.NIC.Alias, guest: &sync.Once{}, pending: pending}
		f.mu.Unlock()
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			defer close(pending)
			f.resolve(dom, t, pending, nlog)
		}()
	}
}

// resolve resolves and claims t's addresses and records them for its first
// RARP. pending is the background lookup's mark (nil: resolved in Landed):
// if the NIC was released or landed again meanwhile, nothing is claimed
// (the claims are granted under f.mu, so a Release either comes first and
// is seen, or comes after and gives them back), and a late lookup of a
// domain that left cannot refuse a live one its address.
func (f *IPFollower) resolve(dom *domxml.Domain, t plan.Target, pending chan struct{}, nlog *zap.Logger) {
	cands, err := f.o.Resolver.Candidates(dom, t.NIC)
	if err != nil {
		f.o.Metrics.skip("source_error")
		nlog.Warn("some IP source entries are unusable", zap.Error(err))
	}
	mac := t.NIC.MAC
	guest := &sync.Once{}
	f.mu.Lock()
	if pending != nil {
		cur, ok := f.nics[mac]
		if !ok || cur.pending != pending {
			f.mu.Unlock()
			nlog.Debug("IP addresses resolved after the NIC's landing ended; dropped")
			return
		}
		guest = cur.guest // a guest ask at the first RARP is not repeated
	}
	cands, inUse := f.inUseLocked(mac, cands)
	granted, refused := f.o.Resolver.Grant(dom, t.NIC, cands)
	refused = append(inUse, refused...)
	type refusedIP struct {
		c   ipsource.Candidate
		err error
	}
	var valid []ipsource.Candidate
	var invalid []refusedIP // logged after the unlock
	for _, c := range granted {
		if err := ipannounce.ValidateIP(c.IP); err != nil {
			invalid = append(invalid, refusedIP{c, err})
			continue
		}
		valid = append(valid, c)
	}
	if len(valid) == 0 && f.o.Guest == nil {
		delete(f.nics, mac)
	} else {
		f.nics[mac] = ipNIC{domain: dom.UUID, name: dom.Name, alias: t.NIC.Alias, addrs: valid, guest: guest}
	}
	f.mu.Unlock()
	for _, r := range refused {
		f.o.Metrics.skip(string(r.Reason))
		fields := []zap.Field{zap.Stringer("ip", r.IP), zap.String("source", string(r.Source)), zap.String("reason", string(r.Reason))}
		if r.Reason == ipsource.ReasonClaimed {
			fields = append(fields, zap.String("holder_domain", r.Holder.Domain), zap.Stringer("holder_mac", r.Holder.MAC))
		}
		nlog.Warn("IP not announced", fields...)
	}
	for _, r := range invalid {
		f.o.Metrics.skip("invalid")
		nlog.Warn("IP not announced", zap.Stringer("ip", r.c.IP), zap.String("source", string(r.c.Source)), zap.Error(r.err))
	}
	for _, c := range valid {
		f.o.Metrics.address(string(c.Source))
	}
	if len(valid) > 0 {
		ips := make([]string, len(valid))
		for i, c := range valid {
			ips[i] = c.IP.String() + " (" + string(c.Source) + ")"
		}
		nlog.Info("IP addresses follow the MAC", zap.Strings("ips", ips))
	}
}

// inUseLocked takes out of cands the addresses another NIC running here
// uses now: the learner on its port saw it use them (within the learned
// store's max age). The claims hold only what landings resolved, and a VM
// that started here resolves nothing: without this, a VM landing with a
// stale record of an address (carried from the host it left, a static
// entry) would pull the address away from the local VM using it. A
// link-local address is unique on its link only, as in the claims. f.mu
// held; the store is asked by address (Learned.Users), so a landing costs
// its own addresses, not every learner on the host.
func (f *IPFollower) inUseLocked(mac rarp.MAC, cands []ipsource.Candidate) (free []ipsource.Candidate, refused []ipsource.Refusal) {
	store := f.o.Resolver.Learned
	if store == nil {
		return cands, nil
	}
next:
	for _, c := range cands {
		if !c.IP.IsLinkLocalUnicast() {
			for _, m := range store.Users(c.IP) {
				if l := f.learns[m]; l != nil && m != mac {
					refused = append(refused, ipsource.Refusal{Candidate: c, Reason: ipsource.ReasonClaimed, Holder: ipsource.NIC{Domain: l.domain, MAC: m}})
					continue next
				}
			}
		}
		free = append(free, c)
	}
	return free, refused
}

// learn starts a learner on t's port unless one runs there already.
func (f *IPFollower) learn(dom *domxml.Domain, t plan.Target, log *zap.Logger) {
	if f.o.Learn == nil || t.Port == "" {
		return
	}
	domain, mac := dom.UUID, t.NIC.MAC
	f.carry.track(dom, mac)
	if f.o.Resolver.Learned != nil && len(f.o.Resolver.Learned.Get(mac)) > 0 {
		f.carry.changed(domain) // learned before (it ran here earlier): written if not carried yet
	}
	f.mu.Lock()
	if l := f.learns[mac]; l != nil && l.dev == t.Port {
		l.domain = domain
		f.mu.Unlock()
		return
	}
	if l := f.learns[mac]; l != nil {
		l.cancel()
	}
	ctx, cancel := context.WithCancel(context.Background())
	lr := &learnRun{domain: domain, dev: t.Port, cancel: cancel}
	f.learns[mac] = lr
	f.mu.Unlock()
	seen := func(e ipsource.Event) {
		if e.Result != ipsource.Learnt {
			return
		}
		f.mu.Lock()
		d := lr.domain
		f.mu.Unlock()
		log.Info("learned an address of the guest", zap.Stringer("ip", e.IP), zap.Stringer("proto", e.Proto))
		f.carry.changed(d)
	}
	f.learning.Add(1)
	go func() {
		defer f.learning.Done()
		defer func() {
			f.mu.Lock()
			if f.learns[mac] == lr {
				delete(f.learns, mac)
			}
			f.mu.Unlock()
		}()
		f.runLearner(ctx, t.Port, mac, seen, log.With(zap.String("port", t.Port)))
	}()
}

// Bounds of the wait before a learner whose port failed opens it again.
const (
	relearnMin = 200 * time.Millisecond
	relearnMax = 30 * time.Second
)

// runLearner learns on port until ctx ends (the domain left, or the
// agent stops). A port that goes down, or is deleted and created again
// (os-vif or Neutron re-plugging it), ends the learner's socket with
// ENETDOWN: it opens the port again by name, after relearnMin and then
// twice as long each failure up to relearnMax, so the guest's addresses
// are still learned after a re-plug instead of never again.
func (f *IPFollower) runLearner(ctx context.Context, port string, mac rarp.MAC, seen func(ipsource.Event), log *zap.Logger) {
	retry := wait.Backoff{Min: relearnMin, Max: relearnMax}
	failing := false
	for {
		l, err := f.o.Learn(port, mac, seen)
		if err == nil {
			if failing {
				log.Info("learning the guest's addresses again")
			} else {
				log.Debug("learning the guest's addresses")
			}
			failing = false
			retry.Reset()
			err = l.Run(ctx)
			l.Close()
			if ctx.Err() != nil {
				return
			}
			if err == nil {
				err = errors.New("learner stopped")
			}
		}
		d := retry.Next()
		if !failing {
			log.Warn("cannot learn the guest's addresses on its port; trying again", zap.Error(err))
		} else {
			log.Debug("learner: port still failing", zap.Error(err), zap.Duration("retry_in", d))
		}
		failing = true
		if !wait.Sleep(ctx.Done(), d) {
			return
		}
	}
}

// Unplugged forgets a NIC unplugged from its running domain, as Release
// does a domain's: its learner and IP frames stop and its addresses are
// free for another NIC landing here (its port is gone for good, and the
// domain's Release is not coming).
func (f *IPFollower) Unplugged(mac rarp.MAC) {
	if f == nil {
		return
	}
	f.mu.Lock()
	if l := f.learns[mac]; l != nil {
		l.cancel()
		delete(f.learns, mac)
	}
	n, ok := f.nics[mac]
	if ok {
		f.forgetNICLocked(mac)
	}
	f.mu.Unlock()
	if c := f.o.Resolver.Claims; ok && c != nil {
		c.Release(ipsource.NIC{Domain: n.domain, MAC: mac})
	}
}

// stopLearners stops every learner and waits for them to close their
// sockets: the agent stops (a learner otherwise lives until its domain's
// Release, and its socket keeps its network namespace alive).
func (f *IPFollower) stopLearners() {
	if f == nil {
		return
	}
	f.mu.Lock()
	for mac, l := range f.learns {
		l.cancel()
		delete(f.learns, mac)
	}
	f.mu.Unlock()
	f.learning.Wait()
}

func (f *IPFollower) handedOver(uuid string) {
	f.mu.Lock()
	f.since[uuid] = time.Now()
	f.mu.Unlock()
}

// Release forgets the NICs of a domain that stopped or left this host,
// stops their IP-layer frames and frees their claims.
func (f *IPFollower) Release(domainUUID string) {
	if f == nil {
		return
	}
	f.mu.Lock()
	f.releaseLocked(domainUUID)
}

// ReleaseAbsent releases every domain handed over before listed (when
// libvirt's list of running domains was taken) that the list, live, does
// not hold: it stopped or left while libvirtd was down, and no Cancel
// event will come for it (the resync cancels only landings). Without this
// a domain that ran here without landing kept its learners and its
// carrier entry, whose timers wrote to a domain no longer here. A domain
// handed over after the listing (it landed meanwhile) is kept.
func (f *IPFollower) ReleaseAbsent(live map[string]bool, listed time.Time) {
	if f == nil {
		return
	}
	f.mu.Lock()
	var gone []string
	for u, at := range f.since {
		if !live[u] && at.Before(listed) {
			gone = append(gone, u)
		}
	}
	f.mu.Unlock()
	for _, u := range gone {
		f.mu.Lock()
		if at, ok := f.since[u]; !ok || !at.Before(listed) {
			f.mu.Unlock() // handed over again meanwhile
			continue
		}
		f.releaseLocked(u)
	}
}

// releaseLocked is Release with f.mu held; it unlocks it.
func (f *IPFollower) releaseLocked(domainUUID string) {
	delete(f.since, domainUUID)
	for mac, l := range f.learns {
		if l.domain == domainUUID {
			l.cancel()
			delete(f.learns, mac)
		}
	}
	for mac, n := range f.nics {
		if n.domain == domainUUID {
			f.forgetNICLocked(mac)
		}
	}
	f.mu.Unlock()
	f.carry.drop(domainUUID)
	if c := f.o.Resolver.Claims; c != nil {
		c.ReleaseDomain(domainUUID)
	}
}

// forgetNICLocked forgets the NIC of mac and stops its IP frames; the
// caller holds f.mu.
func (f *IPFollower) forgetNICLocked(mac rarp.MAC) {
	delete(f.nics, mac)
	for k, r := range f.runs {
		if k.mac == mac {
			r.cancel()
			delete(f.runs, k)
		}
	}
	for k := range f.firstFailed {
		if k.mac == mac {
			delete(f.firstFailed, k)
		}
	}
}

// Observe is an announcer's OnFrame: the first RARP of an announce starts
// the MAC's IP-layer frames on the same port and VLAN; if that one failed
// (ENOBUFS in a landing storm, a carrier flapping), the first of the first
// burst's later frames that goes out does. It does not block.
func (f *IPFollower) Observe(s announce.Sent) {
	if f == nil || s.Refresh || s.Reason == ReasonIP || s.Slot.Burst != 1 {
		return
	}
	k := runKey{mac: s.MAC, port: s.Port, vlan: s.VLAN.ID}
	first := s.Slot.Round == 1
	f.mu.Lock()
	n, ok := f.nics[s.MAC]
	retry := f.firstFailed[k]
	switch {
	case !ok:
	case s.Err != nil && first:
		f.firstFailed[k] = true
	case s.Err == nil && (first || retry):
		delete(f.firstFailed, k)
	}
	f.mu.Unlock()
	if !ok || s.Err != nil || !(first || retry) {
		return
	}
	if f.o.Guest != nil && n.alias != "" {
		n.guest.Do(func() {
			f.wg.Add(1)
			go func() { defer f.wg.Done(); f.askGuest(s.MAC, n) }()
		})
	}
	if n.pending != nil {
		select {
		case <-n.pending:
		default:
			// libvirt's leases are still being asked for: the IP frames
			// start when they are known, on this RARP's port and VLAN.
			f.wg.Add(1)
			go func() { defer f.wg.Done(); <-n.pending; f.startFrames(s) }()
			return
		}
	}
	f.startFrames(s)
}

// startFrames starts the IP frames of s's MAC on s's port and VLAN.
func (f *IPFollower) startFrames(s announce.Sent) {
	f.mu.Lock()
	n, ok := f.nics[s.MAC]
	send := f.senders[s.Port.Kind]
	f.mu.Unlock()
	if !ok || send == nil || len(n.addrs) == 0 {
		return
	}
	ips := make([]netip.Addr, len(n.addrs))
	for i, c := range n.addrs {
		ips[i] = c.IP
	}
	frames, err := ipannounce.Plan(s.MAC, s.VLAN, ips, f.o.Gateways, f.o.GARPReply)
	if err != nil {
		f.log.Warn("IP frames not built", zap.Stringer("mac", s.MAC), zap.Error(err))
	}
	seg := s.Port.Segment()
	slots, err := f.o.Schedule.Slots(time.Now(), frames, f.o.Cap, seg.Kind.String()+":"+seg.Name)
	if err != nil || len(slots) == 0 {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	k := runKey{mac: s.MAC, port: s.Port, vlan: s.VLAN.ID}
	f.mu.Lock()
	if _, still := f.nics[s.MAC]; !still {
		f.mu.Unlock()
		cancel()
		return
	}
	if old := f.runs[k]; old != nil {
		old.cancel() // a newer RARP announce on the same port restarts the IP frames
	}
	r := &ipRun{cancel: cancel}
	f.runs[k] = r
	f.mu.Unlock()
	log := f.log.With(zap.String("domain", n.name), zap.Stringer("mac", s.MAC), zap.Stringer("port", portName(s.Port)), zap.Uint16("vlan", s.VLAN.ID))
	f.wg.Add(1)
	go f.run(ctx, r, k, s, slots, send, log)
}

// Wait returns once no IP frames or guest announce started so far are in
// progress: a one-shot command (announce) lets them finish. They start
// with a NIC's first RARP, so wait after the RARP announces ended.
func (f *IPFollower) Wait() {
	if f != nil {
		f.wg.Wait()
	}
}

// askGuest runs announce-self for one NIC, cancelled if the domain leaves.
func (f *IPFollower) askGuest(mac rarp.MAC, n ipNIC) {
	ctx, cancel := context.WithTimeout(context.Background(), guestTimeout)
	defer cancel()
	k := runKey{mac: mac, port: announce.Port{Device: "qmp"}}
	r := &ipRun{cancel: cancel}
	f.mu.Lock()
	if cur, ok := f.nics[mac]; !ok || cur.guest != n.guest {
		f.mu.Unlock()
		return
	}
	f.runs[k] = r
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		if f.runs[k] == r {
			delete(f.runs, k)
		}
		f.mu.Unlock()
	}()
	log := f.log.With(zap.String("domain", n.name), zap.Stringer("mac", mac), zap.String("alias", n.alias))
	if err := f.o.Guest.AnnounceSelf(ctx, n.domain, []string{n.alias}, guestSchedule); err != nil {
		f.o.Metrics.guest("failed")
		log.Warn("guest announce (QMP announce-self) failed; the host-side frames still go out", zap.Error(err))
		return
	}
	f.o.Metrics.guest("ok")
	log.Info("guest asked to announce its addresses (QMP announce-self)")
}

type portName announce.Port

func (p portName) String() string { return announce.Port(p).String() }

// run sends the slots in time order, each as a one-frame announce on the
// port (so the link's socket and the segment's pacer are shared with the
// RARPs, and CancelMAC stops it too).
func (f *IPFollower) run(ctx context.Context, r *ipRun, k runKey, s announce.Sent, slots []ipannounce.Slot, send Sender, log *zap.Logger) {
	defer f.wg.Done()
	defer func() {
		r.cancel()
		f.mu.Lock()
		// Only drop our own entry: a newer run may have replaced it.
		if f.runs[k] == r {
			delete(f.runs, k)
		}
		f.mu.Unlock()
	}()
	sent := 0
	// Each repeat waits a full interval after its previous frame actually
	// went out (not after its planned slot), so a delayed frame never
	// brings the next one within the receivers' locktime.
	last := map[announce.FrameKind]time.Time{}
	for _, sl := range slots {
		kind := frameKind(sl.Frame)
		at := sl.At
		if l, ok := last[kind]; ok && at.Before(l.Add(f.o.Schedule.Interval)) {
			at = l.Add(f.o.Schedule.Interval)
		}
		if !wait.Sleep(ctx.Done(), time.Until(at)) {
			return
		}
		b, err := sl.Frame.Build()
		if err != nil {
			log.Warn("IP frame not built", zap.Stringer("kind", sl.Frame.Kind), zap.Stringer("ip", sl.Frame.IP), zap.Error(err))
			f.o.Metrics.frame(sl.Frame.Kind, "failed")
			continue
		}
		h, err := send(announce.Request{
			MAC: s.MAC, Port: s.Port, VLAN: s.VLAN, Schedule: announce.Schedule{Rounds: 1, Bursts: 1},
			Reason: ReasonIP, Kind: kind, Frame: b,
		})
		if err != nil {
			log.Warn("IP frame refused", zap.Stringer("kind", sl.Frame.Kind), zap.Error(err))
			f.o.Metrics.frame(sl.Frame.Kind, "failed")
			continue
		}
		select {
		case <-ctx.Done():
			h.Cancel()
			return
		case <-h.First():
		}
		if err := h.FirstErr(); err != nil {
			if errors.Is(err, context.Canceled) {
				return
			}
			log.Warn("IP frame not sent", zap.Stringer("kind", sl.Frame.Kind), zap.Stringer("ip", sl.Frame.IP), zap.Error(err))
			f.o.Metrics.frame(sl.Frame.Kind, "failed")
			continue
		}
		last[kind] = time.Now()
		f.o.Metrics.frame(sl.Frame.Kind, "sent")
		sent++
	}
	log.Info("IP frames sent", zap.Int("frames", sent), zap.Int("planned", len(slots)))
}

// frameKind keys one IP frame's announce apart from the RARPs and from
// the MAC's other addresses' frames.
func frameKind(fr ipannounce.Frame) announce.FrameKind {
	k := fr.Kind.String() + ":" + fr.IP.String()
	if fr.Gateway.IsValid() {
		k += ">" + fr.Gateway.String()
	}
	return announce.FrameKind(k)
}
