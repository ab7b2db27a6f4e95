package ovs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/rarp-announce/rarp-announce/pkg/announce"
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

// Config says how to reach one Open vSwitch. The zero value works against
// a packaged Open vSwitch (default sockets, commands on $PATH).
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
}

// Switch is one Open vSwitch as the ovs strategy uses it: a Lookuper for
// its ports (bridge, ofport, VLAN settings) and an Injector for frames,
// with Opener to hand the injection to announce.Announcer. What to
// announce, when, and what supersedes what is the strategy's
// (internal/strategy), not this package's.
type Switch struct {
	Lookuper
	Injector     Injector
	frameTimeout time.Duration
	topo         *OVSDB // Uplinks; nil: the socket is not unix: or tcp:
	db           string
}

// Open returns the Switch cfg describes; nothing is dialed until the first
// lookup or frame. Close releases its connections.
func Open(cfg Config) (*Switch, error) {
	if cfg.FrameTimeout <= 0 {
		cfg.FrameTimeout = time.Second
	}
	if cfg.RunDir == "" {
		cfg.RunDir = DefaultRunDir()
	}
	if cfg.DB == "" {
		cfg.DB = "unix:" + filepath.Join(cfg.RunDir, "db.sock")
	}
	var db Lookuper
	var topo *OVSDB
	switch cfg.Lookup {
	case "", LookupOVSDB:
		if _, _, err := splitSocket(cfg.DB); err != nil {
			return nil, err
		}
		topo = &OVSDB{Socket: cfg.DB, Timeout: cfg.LookupTimeout}
		db = topo
	case LookupVsctl:
		db = DB{Vsctl: cfg.Vsctl, DB: cfg.DB, Timeout: cfg.LookupTimeout}
		if _, _, err := splitSocket(cfg.DB); err == nil {
			// The uplinks of a bridge are read in the background, but on
			// a connection of their own all the same: no ovs-vsctl.
			topo = &OVSDB{Socket: cfg.DB, Timeout: cfg.LookupTimeout}
		}
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
	return &Switch{Lookuper: db, Injector: inj, frameTimeout: cfg.FrameTimeout, topo: topo, db: cfg.DB}, nil
}

// Opener is the announce.PortOpener of this switch's ports.
func (s *Switch) Opener() announce.PortOpener { return Opener(s.Injector, s.frameTimeout) }

// Close closes the OVSDB and OpenFlow connections.
func (s *Switch) Close() error {
	var err, terr error
	if c, ok := s.Lookuper.(io.Closer); ok {
		err = c.Close()
	}
	if s.topo != nil && Lookuper(s.topo) != s.Lookuper {
		terr = s.topo.Close()
	}
	return errors.Join(err, terr, s.Injector.Close())
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
