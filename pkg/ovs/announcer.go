package ovs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/rarp-announce/rarp-announce/pkg/announce"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// Injection methods for Config.Injection.
const (
	InjectOpenFlow = "openflow" // OpenFlowInjector (default)
	InjectOfctl    = "ofctl"    // OfctlInjector
)

// Lookup methods for Config.Lookup.
const (
	LookupOVSDB = "ovsdb" // OVSDB, JSON-RPC (default)
	LookupVsctl = "vsctl" // DB, ovs-vsctl
)

// Config configures an Announcer. The zero value works against a packaged
// Open vSwitch (default sockets, commands on $PATH).
type Config struct {
	// Vsctl and Ofctl are the command paths; default "ovs-vsctl", "ovs-ofctl".
	Vsctl, Ofctl string
	// DB is the OVSDB socket as ovs-vsctl --db takes it ("unix:/path");
	// empty: unix:<RunDir>/db.sock, which is ovs-vsctl's default.
	DB string
	// RunDir holds the bridges' OpenFlow sockets (<RunDir>/<bridge>.mgmt);
	// empty: DefaultRunDir ($OVS_RUNDIR or /var/run/openvswitch).
	RunDir string
	// Injection is InjectOpenFlow (default) or InjectOfctl.
	Injection string
	// Injector, if set, replaces the one Injection names.
	Injector Injector
	// Lookup is LookupOVSDB (default) or LookupVsctl.
	Lookup string
	// LookupTimeout bounds one OVSDB lookup; default 5 s.
	LookupTimeout time.Duration
	// FrameTimeout bounds one injected frame (packet-out and its barrier
	// reply, or one ovs-ofctl run); default 1 s.
	FrameTimeout time.Duration
	// Pacing limits frames per OVS bridge (all its ports together), as the
	// host strategy limits them per Linux bridge; zero: DefaultPacing.
	Pacing announce.Pacing
	// Metrics counts failures by reason; AnnounceMetrics counts frames,
	// lag, supersedes (pass the host announcer's, registered once).
	Metrics         *Metrics
	AnnounceMetrics *announce.Metrics
	Logger          *zap.Logger
	// OnFrame, if set, sees every frame (sent or failed); it must not block.
	OnFrame func(announce.Sent)
}

// Announcer announces VMs' MACs into Open vSwitch as if from their ports.
// It is safe for concurrent use.
type Announcer struct {
	cfg Config
	db  Lookuper
	inj Injector
	log *zap.Logger
	m   *Metrics
	ann *announce.Announcer

	mu     sync.Mutex
	closed bool
	active map[portMAC][]*announce.Handle // what the last announce of a port+MAC started
}

type portMAC struct {
	port string
	mac  rarp.MAC
}

// New returns an Announcer; Close stops it.
func New(cfg Config) (*Announcer, error) {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.FrameTimeout <= 0 {
		cfg.FrameTimeout = time.Second
	}
	if cfg.Pacing == (announce.Pacing{}) {
		cfg.Pacing = announce.DefaultPacing()
	}
	if cfg.RunDir == "" {
		cfg.RunDir = DefaultRunDir()
	}
	if cfg.DB == "" {
		cfg.DB = "unix:" + filepath.Join(cfg.RunDir, "db.sock")
	}
	var db Lookuper
	switch cfg.Lookup {
	case "", LookupOVSDB:
		if _, _, err := splitSocket(cfg.DB); err != nil {
			return nil, err
		}
		db = &OVSDB{Socket: cfg.DB, Timeout: cfg.LookupTimeout}
	case LookupVsctl:
		db = DB{Vsctl: cfg.Vsctl, DB: cfg.DB, Timeout: cfg.LookupTimeout}
	default:
		return nil, fmt.Errorf("ovs lookup %q: want %q or %q", cfg.Lookup, LookupOVSDB, LookupVsctl)
	}
	inj := cfg.Injector
	if inj == nil {
		switch cfg.Injection {
		case "", InjectOpenFlow:
			inj = NewOpenFlowInjector(cfg.RunDir)
		case InjectOfctl:
			inj = OfctlInjector{Ofctl: cfg.Ofctl, RunDir: cfg.RunDir}
		default:
			return nil, fmt.Errorf("ovs injection %q: want %q or %q", cfg.Injection, InjectOpenFlow, InjectOfctl)
		}
	}
	a := &Announcer{
		cfg:    cfg,
		db:     db,
		inj:    inj,
		log:    cfg.Logger,
		m:      cfg.Metrics,
		active: map[portMAC][]*announce.Handle{},
	}
	a.ann = announce.New(announce.Options{
		OpenPort: Opener(inj, cfg.FrameTimeout),
		// One pacer per segment: every port of a bridge shares it.
		Pacing:   cfg.Pacing,
		Metrics:  cfg.AnnounceMetrics,
		Logger:   cfg.Logger,
		OnFrame:  a.onFrame,
		LinkIdle: 10 * time.Second,
	})
	return a, nil
}

// Lookup returns what OVSDB says about port (bridge, ofport, VLAN
// settings), for readiness checks: ErrNoOFPort until the port is usable,
// and Frames tells ErrPortNotWired. Nothing is logged or counted.
func (a *Announcer) Lookup(ctx context.Context, port string) (Port, error) {
	return a.db.Lookup(ctx, port)
}

// Announce looks port up in OVSDB and starts announcing mac into its
// bridge as if from the port: one frame per VLAN Frames decides, on
// schedule s. It returns once the first frame of each VLAN was injected or
// failed (the error then is the first failure), and keeps sending the rest
// of the schedule in the background until it ends, a newer Announce for
// the same port and MAC supersedes it, Cancel or Close. ctx bounds the
// lookup and the wait for the first frames, not the schedule. since is
// when the need arose (the libvirt event), for the lag histogram.
//
// Every failure is logged with its reason and counted in Metrics.
func (a *Announcer) Announce(ctx context.Context, port string, mac rarp.MAC, vlans []rarp.VLAN, s announce.Schedule, since time.Time) error {
	if err := mac.ValidateUnicast(); err != nil {
		return err
	}
	if err := s.Validate(); err != nil {
		return err
	}
	log := a.log.With(zap.String("port", port), zap.Stringer("mac", mac))
	p, err := a.db.Lookup(ctx, port)
	if err != nil {
		return a.failed(log, "ovs lookup failed", err)
	}
	log = log.With(zap.String("bridge", p.Bridge), zap.Int("ofport", p.OFPort))
	frames, skipped, err := Frames(p, vlans)
	for _, v := range skipped {
		log.Warn("ovs port does not carry this VLAN; not announcing on it",
			zap.Uint16("vlan", v.ID), zap.String("vlan_mode", p.Mode()), zap.Any("trunks", p.Trunks))
	}
	if err != nil {
		return a.failed(log, "ovs announce not possible", err)
	}

	op := announce.OVSPort(port, p.Bridge, p.OFPort)
	pm := portMAC{port, mac}
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return announce.ErrClosed
	}
	keys := make([]announce.Key, 0, len(frames))
	for _, v := range frames {
		keys = append(keys, announce.Key{MAC: mac, Port: op, VLAN: v.ID})
	}
	// A newer announce for the same port and MAC supersedes the old: the
	// inner announcer does that for equal keys; keys the new one no
	// longer uses (the port's ofport or VLANs changed) are cancelled.
	for _, old := range a.active[pm] {
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
			return err
		}
		handles = append(handles, h)
	}
	a.active[pm] = handles
	a.mu.Unlock()
	log.Debug("ovs announce started", zap.Int("vlans", len(frames)), zap.Uint16("tag", p.Tag), zap.String("vlan_mode", p.Mode()))

	var first error
	for _, h := range handles {
		if err := waitFirst(ctx, h); err != nil && first == nil {
			first = err
		}
	}
	return first
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

func done(h *announce.Handle) bool {
	select {
	case <-h.Done():
		return true
	default:
		return false
	}
}

// prune forgets port+MACs whose announces all ended; the caller holds a.mu.
func (a *Announcer) prune() {
	for pm, hs := range a.active {
		if !slices.ContainsFunc(hs, func(h *announce.Handle) bool { return !done(h) }) {
			delete(a.active, pm)
		}
	}
}

// failed logs and counts an announce that could not start.
func (a *Announcer) failed(log *zap.Logger, msg string, err error) error {
	if errors.Is(err, context.Canceled) {
		return err // the caller gave up (shutting down): not an OVS failure
	}
	a.m.failure(err)
	log.Warn(msg, zap.String("reason", Reason(err)), zap.Error(err))
	return err
}

// onFrame runs on a link worker after every frame.
func (a *Announcer) onFrame(s announce.Sent) {
	if s.Err != nil && !errors.Is(s.Err, announce.ErrClosed) {
		a.m.failure(s.Err)
		a.log.Warn("ovs frame not injected", zap.String("port", s.Port.Device), zap.String("link", s.Interface),
			zap.Stringer("mac", s.MAC), zap.Uint16("vlan", s.VLAN.ID), zap.String("reason", Reason(s.Err)), zap.Error(s.Err))
	}
	if a.cfg.OnFrame != nil {
		a.cfg.OnFrame(s)
	}
}

// Cancel stops the announces of mac on port; it returns how many it
// stopped.
func (a *Announcer) Cancel(port string, mac rarp.MAC) int {
	a.mu.Lock()
	hs := a.active[portMAC{port, mac}]
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

// CancelMAC stops every announce of mac (its domain stopped).
func (a *Announcer) CancelMAC(mac rarp.MAC) int {
	a.mu.Lock()
	for pm := range a.active {
		if pm.mac == mac {
			delete(a.active, pm)
		}
	}
	a.mu.Unlock()
	return a.ann.CancelMAC(mac)
}

// AnnounceFrame starts r (an OVS port's request, such as an IP-layer
// frame after the RARPs) on the announcer the RARPs use.
func (a *Announcer) AnnounceFrame(r announce.Request) (*announce.Handle, error) {
	return a.ann.Announce(r)
}

// Running is how many announces (port, MAC, VLAN) are in progress.
func (a *Announcer) Running() int { return a.ann.Running() }

// Close stops every announce and closes the OpenFlow connections.
func (a *Announcer) Close() error {
	a.mu.Lock()
	already := a.closed
	a.closed = true
	a.mu.Unlock()
	if already {
		return nil
	}
	err := a.ann.Close()
	if c, ok := a.db.(io.Closer); ok {
		err = errors.Join(err, c.Close())
	}
	return errors.Join(err, a.inj.Close())
}

// Opener returns the announce.PortOpener of OVS ports: each frame is
// injected into the port's bridge as if from its OpenFlow port, bounded by
// timeout. Pacing is the announcer's (one pacer per bridge).
func Opener(inj Injector, timeout time.Duration) announce.PortOpener {
	return func(p announce.Port) (announce.Sender, error) {
		if p.Kind != announce.KindOVS {
			return nil, fmt.Errorf("port %s: %w", p, announce.ErrNoOpener)
		}
		return sender{inj: inj, bridge: p.Bridge, ofport: p.OFPort, timeout: timeout}, nil
	}
}

type sender struct {
	inj     Injector
	bridge  string
	ofport  int
	timeout time.Duration
}

func (s sender) Send(frame []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	return s.inj.Inject(ctx, s.bridge, s.ofport, frame)
}

func (sender) Close() error { return nil }
