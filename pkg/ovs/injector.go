package ovs

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Injector puts a frame into a bridge's OpenFlow pipeline as if it had
// arrived on OpenFlow port inPort: a packet-out with in_port = inPort and
// the single action output:TABLE (see the package documentation for why
// TABLE).
type Injector interface {
	Inject(ctx context.Context, bridge string, inPort int, frame []byte) error
	Close() error
}

// DefaultRunDir is where ovs-vswitchd puts its sockets: $OVS_RUNDIR, as the
// OVS tools read it, else the packaged /var/run/openvswitch.
func DefaultRunDir() string {
	if d := os.Getenv("OVS_RUNDIR"); d != "" {
		return d
	}
	return "/var/run/openvswitch"
}

// MgmtSocket is the OpenFlow management socket ovs-vswitchd listens on for
// bridge: what "ovs-ofctl <verb> <bridge>" connects to.
func MgmtSocket(runDir, bridge string) string {
	return filepath.Join(runDir, bridge+".mgmt")
}

// OpenFlowInjector speaks OpenFlow itself over each bridge's management
// socket, one long-lived connection per bridge shared by all senders: a
// packet-out and a barrier per frame, no process per frame. The switch's
// echo requests are answered, so an idle connection survives; a broken
// one (ovs-vswitchd restarted) is redialled once, transparently.
type OpenFlowInjector struct {
	RunDir string
	// Idle closes a bridge's connection unused this long; default 5 min.
	Idle time.Duration

	mu     sync.Mutex
	conns  map[string]*pooled
	closed bool
}

type pooled struct {
	oc   *ofConn
	used time.Time
}

// NewOpenFlowInjector returns an injector for the sockets in runDir (empty:
// DefaultRunDir).
func NewOpenFlowInjector(runDir string) *OpenFlowInjector {
	if runDir == "" {
		runDir = DefaultRunDir()
	}
	return &OpenFlowInjector{RunDir: runDir, conns: map[string]*pooled{}}
}

// Inject implements Injector.
func (j *OpenFlowInjector) Inject(ctx context.Context, bridge string, inPort int, frame []byte) error {
	if inPort <= 0 || inPort > maxOFPort {
		return fmt.Errorf("%s: in_port %d: %w", bridge, inPort, ErrNoOFPort)
	}
	for attempt := 0; ; attempt++ {
		oc, fresh, err := j.conn(ctx, bridge)
		if err != nil {
			return fmt.Errorf("%s: %w", bridge, err)
		}
		err = oc.PacketOut(ctx, inPort, frame)
		if err == nil {
			return nil
		}
		if errors.Is(err, ErrOpenFlow) {
			return fmt.Errorf("%s: packet-out in_port %d: %w", bridge, inPort, err)
		}
		// A timeout or a broken connection: drop it, so that stale
		// replies never meet a later request. Redial once if it was an
		// old connection that broke (the switch restarted meanwhile).
		j.drop(bridge, oc)
		if errors.Is(err, ErrTimeout) || fresh || attempt > 0 || ctx.Err() != nil {
			return fmt.Errorf("%s: %w", bridge, err)
		}
	}
}

// conn returns the bridge's connection, dialling if needed; fresh reports
// a new one.
func (j *OpenFlowInjector) conn(ctx context.Context, bridge string) (*ofConn, bool, error) {
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return nil, false, errors.New("injector closed")
	}
	now := time.Now()
	idle := j.Idle
	if idle <= 0 {
		idle = 5 * time.Minute
	}
	for b, p := range j.conns {
		if b != bridge && now.Sub(p.used) > idle {
			p.oc.Close()
			delete(j.conns, b)
		}
	}
	if p := j.conns[bridge]; p != nil && !p.oc.broken() {
		p.used = now
		j.mu.Unlock()
		return p.oc, false, nil
	}
	j.mu.Unlock()

	// Dial outside the lock: a hung switch must not stall other bridges.
	oc, err := dialOpenFlow(ctx, MgmtSocket(j.RunDir, bridge))
	if err != nil {
		return nil, false, err
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		oc.Close()
		return nil, false, errors.New("injector closed")
	}
	if p := j.conns[bridge]; p != nil && !p.oc.broken() {
		// Another sender dialled meanwhile: use one connection.
		oc.Close()
		p.used = now
		return p.oc, false, nil
	}
	j.conns[bridge] = &pooled{oc: oc, used: now}
	return oc, true, nil
}

func (j *OpenFlowInjector) drop(bridge string, oc *ofConn) {
	j.mu.Lock()
	if p := j.conns[bridge]; p != nil && p.oc == oc {
		delete(j.conns, bridge)
	}
	j.mu.Unlock()
	oc.Close()
}

// Close closes every connection.
func (j *OpenFlowInjector) Close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.closed = true
	for b, p := range j.conns {
		p.oc.Close()
		delete(j.conns, b)
	}
	return nil
}

// OfctlInjector runs "ovs-ofctl packet-out" per frame. It is the simple,
// auditable alternative to OpenFlowInjector (an operator can paste the
// same command) at the cost of a process per frame; see the package
// documentation for the measured difference.
type OfctlInjector struct {
	// Ofctl is the ovs-ofctl command; default "ovs-ofctl".
	Ofctl  string
	RunDir string
}

// ofctlVersions lets ovs-ofctl negotiate whatever the bridge allows;
// ovs-ofctl alone offers OpenFlow 1.0 only.
const ofctlVersions = "OpenFlow10,OpenFlow11,OpenFlow12,OpenFlow13,OpenFlow14,OpenFlow15"

// Command is the ovs-ofctl invocation that injects frame.
func (j OfctlInjector) Command(ctx context.Context, bridge string, inPort int, frame []byte) *exec.Cmd {
	ofctl := j.Ofctl
	if ofctl == "" {
		ofctl = "ovs-ofctl"
	}
	runDir := j.RunDir
	if runDir == "" {
		runDir = DefaultRunDir()
	}
	cmd := exec.CommandContext(ctx, ofctl, "-O", ofctlVersions, "packet-out",
		"unix:"+MgmtSocket(runDir, bridge),
		fmt.Sprintf("in_port=%d packet=%s actions=table", inPort, hex.EncodeToString(frame)))
	cmd.WaitDelay = time.Second
	return cmd
}

// Inject implements Injector.
func (j OfctlInjector) Inject(ctx context.Context, bridge string, inPort int, frame []byte) error {
	if inPort <= 0 || inPort > maxOFPort {
		return fmt.Errorf("%s: in_port %d: %w", bridge, inPort, ErrNoOFPort)
	}
	cmd := j.Command(ctx, bridge, inPort, frame)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("%s: ovs-ofctl packet-out: %w", bridge, ErrTimeout)
	}
	msg := strings.TrimSpace(stderr.String())
	var kind error
	switch {
	case errors.Is(err, exec.ErrNotFound):
		kind, msg = ErrCommand, err.Error()
	case strings.Contains(msg, "No such file or directory"), strings.Contains(msg, "Connection refused"):
		kind = ErrNotRunning
	case strings.Contains(msg, "OFPT_ERROR"), strings.Contains(msg, "OFPBRC_"), strings.Contains(msg, "OFPBAC_"):
		kind = ErrOpenFlow
	default:
		kind = ErrCommand
	}
	return fmt.Errorf("%s: ovs-ofctl packet-out: %s: %w", bridge, msg, kind)
}

// Close implements Injector.
func (OfctlInjector) Close() error { return nil }
