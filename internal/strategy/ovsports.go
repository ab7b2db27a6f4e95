package strategy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/rarp-announce/rarp-announce/pkg/announce"
	"github.com/rarp-announce/rarp-announce/pkg/ovs"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
	"github.com/rarp-announce/rarp-announce/pkg/throttle"
	"github.com/rarp-announce/rarp-announce/pkg/wait"
)

// OVSPortsConfig configures OVSPorts.
type OVSPortsConfig struct {
	// Switch looks the ports up; Close closes it.
	Switch *ovs.Switch
	// Announcer runs the announces: the agent's one announcer, whose
	// OpenPort injects OVS ports through Switch (Switch.Opener) and whose
	// OnFrame hands OVS ports' frames to Sent. Its pacing is per segment,
	// and an OVS port's segment is its bridge.
	Announcer *announce.Announcer
	// Metrics counts failures by reason.
	Metrics *ovs.Metrics
	Logger  *zap.Logger
}

// OVSPorts announces VMs' MACs into Open vSwitch as if from their ports:
// it looks the port up (ovs.Switch), decides its frames' VLANs
// (ovs.Frames), and runs one announce per VLAN on the agent's announcer,
// whose OVS ports (announce.OVSPort) the switch injects into. It is the
// OVSAnnouncer of the ovs strategy, and safe for concurrent use.
type OVSPorts struct {
	sw  *ovs.Switch
	log *zap.Logger
	m   *ovs.Metrics
	ann *announce.Announcer

	mu     sync.Mutex
	closed bool
	active map[portMAC]started // what the newest announce of a port+MAC started
	ticket uint64              // the last lookup's number: a newer lookup has a higher one
	// warned throttles the log and count of each failure of a port (its
	// error's text) to one per failureQuiet (failed).
	warned throttle.Keyed[portFailure]
}

type portFailure struct{ port, err string }

// failureQuiet is how long the same failure of the same port is logged
// and counted once: the ovs strategy tries a port parked on VLAN 4095, or
// an Open vSwitch restarting, again every RewireEvery, and each try is the
// same failure (100 ports waiting for Neutron made 500 warnings a second).
const failureQuiet = 10 * time.Second

// started is what one Announce started for a port and MAC, and the number
// of the lookup it started from.
type started struct {
	ticket  uint64
	handles []*announce.Handle
}

type portMAC struct {
	port string
	mac  rarp.MAC
}

// NewOVSPorts returns the OVS announcer; Close stops its announces and
// closes c.Switch.
func NewOVSPorts(c OVSPortsConfig) *OVSPorts {
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	return &OVSPorts{sw: c.Switch, log: c.Logger, m: c.Metrics, ann: c.Announcer, active: map[portMAC]started{},
		warned: throttle.Keyed[portFailure]{Every: failureQuiet}}
}

// Announce looks port up in OVSDB and starts announcing mac into its
// bridge as if from the port: one frame per VLAN ovs.Frames decides, on
// schedule s. It returns once the first frame of each VLAN was injected or
// failed (the error then is the first failure), with the handles of the
// announces it started (one per VLAN: wait on their Done for the end of
// the schedule), and keeps sending the rest of the schedule in the
// background until it ends, a newer Announce for the same port and MAC
// supersedes it, Cancel or Close. ctx bounds the lookup and the wait for
// the first frames, not the schedule. since is when the need arose (the
// libvirt event), for the lag histogram.
//
// Of two announces of one port and MAC that race (a landing's and OVN's
// re-install, across a re-plug that changed the ofport), the one whose
// lookup started later wins: if it started first, the older one starts
// nothing and returns no handles and no error.
//
// Every failure is logged with its reason and counted in Metrics.
func (a *OVSPorts) Announce(ctx context.Context, port string, mac rarp.MAC, vlans []rarp.VLAN, s announce.Schedule, since time.Time) ([]*announce.Handle, error) {
	if err := mac.ValidateUnicast(); err != nil {
		return nil, err
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	log := a.log.With(zap.String("port", port), zap.Stringer("mac", mac))
	a.mu.Lock()
	a.ticket++
	ticket := a.ticket
	a.mu.Unlock()
	p, err := a.sw.Lookup(ctx, port)
	if err != nil {
		return nil, a.failed(log, port, "ovs lookup failed", err)
	}
	log = log.With(zap.String("bridge", p.Bridge), zap.Int("ofport", p.OFPort))
	frames, skipped, err := ovs.Frames(p, vlans)
	for _, v := range skipped {
		log.Warn("ovs port does not carry this VLAN; not announcing on it",
			zap.Uint16("vlan", v.ID), zap.String("vlan_mode", p.Mode()), zap.Any("trunks", p.Trunks))
	}
	if err != nil {
		return nil, a.failed(log, port, "ovs announce not possible", err)
	}

	op := announce.OVSPort(port, p.Bridge, p.OFPort)
	pm := portMAC{port, mac}
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil, announce.ErrClosed
	}
	if cur, ok := a.active[pm]; ok && cur.ticket > ticket {
		// Two announces of one port and MAC raced, and the one whose
		// lookup started later has started already: its ofport is the
		// fresher (the port may have been re-plugged in between), and
		// starting this one would move the frames back to the old one.
		a.mu.Unlock()
		log.Debug("ovs announce superseded by a newer lookup of the same port")
		return nil, nil
	}
	keys := make([]announce.Key, 0, len(frames))
	for _, v := range frames {
		keys = append(keys, announce.Key{MAC: mac, Port: op, VLAN: v.ID})
	}
	// A newer announce for the same port and MAC supersedes the old: the
	// inner announcer does that for equal keys; keys the new one no
	// longer uses (the port's ofport or VLANs changed) are cancelled.
	for _, old := range a.active[pm].handles {
		if !slices.Contains(keys, old.Key()) && !done(old) {
			a.ann.Cancel(old.Key())
		}
	}
	a.prune()
	handles := make([]*announce.Handle, 0, len(frames))
	for _, v := range frames {
		h, err := a.ann.Announce(announce.Request{MAC: mac, Port: op, VLAN: v, Schedule: s, Since: since, Reason: "ovs"})
		if err != nil {
			a.mu.Unlock()
			return handles, err
		}
		handles = append(handles, h)
	}
	a.active[pm] = started{ticket, handles}
	a.mu.Unlock()
	log.Debug("ovs announce started", zap.Int("vlans", len(frames)), zap.Uint16("tag", p.Tag), zap.String("vlan_mode", p.Mode()))

	var first error
	for _, h := range handles {
		if err := waitFirst(ctx, h); err != nil && first == nil {
			first = err
		}
	}
	return handles, first
}

// waitFirst waits until h's first frame was injected or failed.
func waitFirst(ctx context.Context, h *announce.Handle) error {
	select {
	case <-h.First():
	case <-ctx.Done():
		return fmt.Errorf("%s: waiting for the first frame: %w", h.Key(), ctx.Err())
	}
	err := h.FirstErr()
	if errors.Is(err, announce.ErrCancelled) {
		if h.Superseded() {
			return nil // a newer announce of the same port and MAC carries on
		}
		return fmt.Errorf("%s: announce cancelled before its first frame", h.Key())
	}
	return err
}

func done(h *announce.Handle) bool { return wait.Closed(h.Done()) }

// prune forgets port+MACs whose announces all ended; the caller holds a.mu.
func (a *OVSPorts) prune() {
	for pm, st := range a.active {
		if !slices.ContainsFunc(st.handles, func(h *announce.Handle) bool { return !done(h) }) {
			delete(a.active, pm)
		}
	}
}

// failed logs and counts an announce of port that could not start; the
// same failure again within failureQuiet (a retry) only at debug level.
func (a *OVSPorts) failed(log *zap.Logger, port, msg string, err error) error {
	if errors.Is(err, context.Canceled) {
		return err // the caller gave up (shutting down): not an OVS failure
	}
	reason := ovs.Reason(err)
	if _, ok := a.warned.Allow(portFailure{port, err.Error()}, time.Now()); !ok {
		log.Debug(msg+" (again)", zap.String("reason", reason), zap.Error(err))
		return err
	}
	a.m.Failure(err)
	log.Warn(msg, zap.String("reason", reason), zap.Error(err))
	return err
}

// Sent is told of every frame of an OVS port (the announcer's OnFrame,
// on a link worker): it counts and logs the failures by reason.
func (a *OVSPorts) Sent(s announce.Sent) {
	if s.Err != nil && !errors.Is(s.Err, announce.ErrClosed) {
		a.m.Failure(s.Err)
		a.log.Warn("ovs frame not injected", zap.String("port", s.Port.Device), zap.String("link", s.Interface),
			zap.Stringer("mac", s.MAC), zap.Uint16("vlan", s.VLAN.ID), zap.String("reason", ovs.Reason(s.Err)), zap.Error(s.Err))
	}
}

// Uplinks lists the kernel devices bridge's traffic leaves the host
// through (ovs.Switch.Uplinks): the agent watches them for failovers.
func (a *OVSPorts) Uplinks(ctx context.Context, bridge string) ([]string, error) {
	return a.sw.Uplinks(ctx, bridge)
}

// AnnounceFrame starts r (an OVS port's request, such as an IP-layer
// frame after the RARPs) on the announcer the RARPs use, so it shares
// their OpenFlow injection and pacing.
func (a *OVSPorts) AnnounceFrame(r announce.Request) (*announce.Handle, error) {
	return a.ann.Announce(r)
}

// CancelMAC stops every announce of mac (its domain stopped).
func (a *OVSPorts) CancelMAC(mac rarp.MAC) int {
	a.mu.Lock()
	for pm := range a.active {
		if pm.mac == mac {
			delete(a.active, pm)
		}
	}
	a.mu.Unlock()
	return a.ann.CancelMAC(mac)
}

// Close stops the announces it started and closes the switch's
// connections; the announcer stays the caller's.
func (a *OVSPorts) Close() error {
	a.mu.Lock()
	already := a.closed
	a.closed = true
	active := a.active
	a.active = map[portMAC]started{}
	a.mu.Unlock()
	if already {
		return nil
	}
	for _, st := range active {
		for _, h := range st.handles {
			h.Cancel()
		}
	}
	return a.sw.Close()
}
