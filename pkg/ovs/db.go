package ovs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"
)

// Port is what OVSDB says about a VM's port: where it is and how OVS treats
// VLANs on it.
type Port struct {
	Name   string
	Bridge string
	// OFPort is the OpenFlow port number, the in_port of injected frames.
	OFPort int
	// Tag is the access (or native) VLAN; HasTag says whether one is set
	// (tag 0 is one: OVS makes the port an access port on VLAN 0).
	Tag    uint16
	HasTag bool
	// Trunks lists the VLANs a trunk port carries; empty: all.
	Trunks []uint16
	// VLANMode is as set in OVSDB ("" means access if Tag is set, trunk
	// otherwise); see Mode for the effective one.
	VLANMode string
	// Error is the Interface's error column (why ofport is -1).
	Error string
}

// VLAN modes of an OVS port (vswitch.conf.db(5), Port vlan_mode).
const (
	ModeAccess         = "access"
	ModeTrunk          = "trunk"
	ModeNativeTagged   = "native-tagged"
	ModeNativeUntagged = "native-untagged"
	ModeDot1qTunnel    = "dot1q-tunnel"
)

// DeadVLAN is the tag Neutron's OVS agent gives ports it has not wired yet
// (neutron DEAD_VLAN_TAG); a flow drops their traffic.
const DeadVLAN = 4095

// Mode is the effective VLAN mode: an empty vlan_mode means access when a
// tag is set and trunk otherwise.
func (p Port) Mode() string {
	if p.VLANMode != "" {
		return p.VLANMode
	}
	if p.HasTag {
		return ModeAccess
	}
	return ModeTrunk
}

// carries reports whether a trunk port admits frames tagged id (0:
// untagged, which OVS treats as VLAN 0).
func (p Port) carries(id uint16) bool {
	if len(p.Trunks) == 0 {
		return true
	}
	for _, t := range p.Trunks {
		if t == id {
			return true
		}
	}
	return false
}

// Lookuper finds a port in OVSDB: DB (ovs-vsctl) or OVSDB (JSON-RPC).
type Lookuper interface {
	Lookup(ctx context.Context, port string) (Port, error)
}

// DB looks ports up in OVSDB through ovs-vsctl: one process per lookup
// (about 10 ms here), but exactly what an operator runs to check the same
// facts. One invocation answers three questions (port-to-br, Port,
// Interface). OVSDB is the faster default.
type DB struct {
	// Vsctl is the ovs-vsctl command; default "ovs-vsctl".
	Vsctl string
	// DB is the OVSDB socket as --db takes it; empty: ovs-vsctl's default.
	DB string
	// Timeout bounds one lookup; default 5 s.
	Timeout time.Duration
}

func (d DB) command(ctx context.Context, args ...string) *exec.Cmd {
	vsctl := d.Vsctl
	if vsctl == "" {
		vsctl = "ovs-vsctl"
	}
	argv := []string{}
	if d.DB != "" {
		argv = append(argv, "--db="+d.DB)
	}
	cmd := exec.CommandContext(ctx, vsctl, append(argv, args...)...)
	// The context kills ovs-vsctl; WaitDelay then stops waiting for pipes
	// a killed child might have passed on.
	cmd.WaitDelay = time.Second
	return cmd
}

// Lookup returns port's bridge, OpenFlow port number and VLAN settings.
func (d DB) Lookup(ctx context.Context, port string) (Port, error) {
	return bounded(ctx, "ovs-vsctl", port, d.Timeout, d.lookup)
}

func (d DB) lookup(ctx context.Context, port string, timeout time.Duration) (Port, error) {
	// --timeout makes ovs-vsctl itself give up on a hung ovsdb-server (it
	// takes whole seconds); the context is the hard limit.
	secs := max(int((timeout+time.Second-1)/time.Second), 1)
	cmd := d.command(ctx, fmt.Sprintf("--timeout=%d", secs), "--format=json",
		"--", "port-to-br", port,
		"--", "--columns=name,tag,trunks,vlan_mode", "list", "Port", port,
		"--", "--columns=name,ofport,error", "list", "Interface", port)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return Port{}, ctx.Err() // bounded names it
		}
		return Port{}, vsctlError(port, err, stderr.String())
	}
	p, err := ParseLookup(stdout.Bytes())
	if err != nil {
		return Port{}, fmt.Errorf("ovs-vsctl lookup of %s: %w", port, err)
	}
	if p.Name != port {
		return Port{}, fmt.Errorf("ovs-vsctl lookup of %s returned port %q: %w", port, p.Name, ErrCommand)
	}
	return p, nil
}

// DefaultLookupTimeout bounds one lookup when its Timeout is not set.
const DefaultLookupTimeout = 5 * time.Second

// bounded runs one lookup of port under timeout (0: DefaultLookupTimeout)
// and names its failures alike for every Lookuper (by is the method, for
// the message): the caller's cancel as the caller's, the deadline as
// ErrTimeout, a port OVS has not put in a bridge as ErrNoOFPort (usable).
func bounded(ctx context.Context, by, port string, timeout time.Duration, lookup func(context.Context, string, time.Duration) (Port, error)) (Port, error) {
	if port == "" {
		return Port{}, fmt.Errorf("empty port name: %w", ErrPortNotFound)
	}
	if timeout <= 0 {
		timeout = DefaultLookupTimeout
	}
	lctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	p, err := lookup(lctx, port, timeout)
	switch {
	case err == nil:
		return p, p.usable()
	case ctx.Err() != nil:
		return Port{}, fmt.Errorf("%s lookup of %s: %w", by, port, ctx.Err())
	case lctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded):
		return Port{}, fmt.Errorf("%s lookup of %s: %w after %v", by, port, ErrTimeout, timeout)
	}
	return Port{}, err
}

// usable reports ErrNoOFPort, with OVS's own reason, for a port
// ovs-vswitchd has not (or could not) put in the bridge.
func (p Port) usable() error {
	if p.OFPort > 0 {
		return nil
	}
	msg := fmt.Sprintf("%s on %s: ofport %d", p.Name, p.Bridge, p.OFPort)
	if p.Error != "" {
		msg += " (" + p.Error + ")"
	}
	return fmt.Errorf("%s: %w", msg, ErrNoOFPort)
}

// vsctlError classifies an ovs-vsctl failure by its message.
func vsctlError(port string, err error, stderr string) error {
	msg := strings.TrimSpace(stderr)
	if msg == "" {
		msg = err.Error()
	}
	var kind error
	switch {
	case errors.Is(err, exec.ErrNotFound):
		kind = ErrCommand
	case strings.Contains(msg, "database connection failed"):
		kind = ErrNotRunning
	case strings.Contains(msg, "no port named"), strings.Contains(msg, "no row"):
		kind = ErrPortNotFound
	case strings.Contains(msg, "timeout"), strings.Contains(msg, "alarm"):
		kind = ErrTimeout
	default:
		kind = ErrCommand
	}
	return fmt.Errorf("ovs-vsctl lookup of %s: %s: %w", port, msg, kind)
}

// ParseLookup reads the output of the lookup's ovs-vsctl invocation: the
// bridge name on the first line, then the Port and Interface rows as
// ovs-vsctl --format=json tables.
func ParseLookup(out []byte) (Port, error) {
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	if len(lines) != 3 {
		return Port{}, fmt.Errorf("%w: want 3 lines (bridge, Port, Interface), got %d", ErrCommand, len(lines))
	}
	bridge := strings.TrimSpace(lines[0])
	if bridge == "" {
		return Port{}, fmt.Errorf("%w: empty bridge name", ErrCommand)
	}
	port, err := parseRow(lines[1], "Port")
	if err != nil {
		return Port{}, err
	}
	iface, err := parseRow(lines[2], "Interface")
	if err != nil {
		return Port{}, err
	}
	return portFromRows(bridge, port, iface)
}

// portFromRows builds a Port from its OVSDB Port and Interface rows (the
// OVSDB JSON encoding, which ovs-vsctl --format=json also prints).
func portFromRows(bridge string, port, iface row) (Port, error) {
	p := Port{Bridge: bridge}
	var err error
	if p.Name, err = str(port, "name", false); err != nil {
		return Port{}, err
	}
	if ifname, err := str(iface, "name", false); err != nil {
		return Port{}, err
	} else if ifname != p.Name {
		return Port{}, fmt.Errorf("%w: Interface %q does not match Port %q", ErrCommand, ifname, p.Name)
	}
	tag, set, err := optInt(port, "tag", "Port tag", 0, 4095)
	if err != nil {
		return Port{}, err
	}
	p.Tag, p.HasTag = uint16(tag), set // an empty set (no tag) and tag 0 differ
	trunks, err := ints(port, "trunks")
	if err != nil {
		return Port{}, err
	}
	for _, t := range trunks {
		if t < 0 || t > 4095 {
			return Port{}, fmt.Errorf("%w: Port trunk %d out of range", ErrCommand, t)
		}
		p.Trunks = append(p.Trunks, uint16(t))
	}
	if p.VLANMode, err = str(port, "vlan_mode", true); err != nil {
		return Port{}, err
	}
	switch p.VLANMode {
	case "", ModeAccess, ModeTrunk, ModeNativeTagged, ModeNativeUntagged, ModeDot1qTunnel:
	default:
		return Port{}, fmt.Errorf("%w: unknown vlan_mode %q", ErrCommand, p.VLANMode)
	}
	if p.OFPort, err = ofport(iface); err != nil {
		return Port{}, err
	}
	if p.Error, err = str(iface, "error", true); err != nil {
		return Port{}, err
	}
	return p, nil
}

// ofport reads an Interface's ofport: 0 while none is assigned, -1 when
// ovs-vswitchd could not open the device.
func ofport(iface row) (int, error) {
	n, _, err := optInt(iface, "ofport", "Interface ofport", -1, 0xfeff)
	return n, err
}

// optInt reads an optional integer column within [lo, hi]; set is false
// for the empty set (then 0). what names the column in errors.
func optInt(r row, col, what string, lo, hi int) (n int, set bool, err error) {
	ns, err := ints(r, col)
	if err != nil {
		return 0, false, err
	}
	switch len(ns) {
	case 0:
		return 0, false, nil
	case 1:
		if ns[0] < lo || ns[0] > hi {
			return 0, false, fmt.Errorf("%w: %s %d out of range", ErrCommand, what, ns[0])
		}
		return ns[0], true, nil
	}
	return 0, false, fmt.Errorf("%w: %s has %d values", ErrCommand, what, len(ns))
}

// row is one table row: column name -> raw OVSDB JSON value.
type row map[string]json.RawMessage

func parseRow(line, table string) (row, error) {
	var t struct {
		Headings []string            `json:"headings"`
		Data     [][]json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal([]byte(line), &t); err != nil {
		return nil, fmt.Errorf("%w: %s table: %v", ErrCommand, table, err)
	}
	if len(t.Data) != 1 {
		return nil, fmt.Errorf("%w: %s table has %d rows, want 1", ErrCommand, table, len(t.Data))
	}
	if len(t.Data[0]) != len(t.Headings) {
		return nil, fmt.Errorf("%w: %s row has %d values for %d headings", ErrCommand, table, len(t.Data[0]), len(t.Headings))
	}
	r := row{}
	for i, h := range t.Headings {
		r[h] = t.Data[0][i]
	}
	return r, nil
}

// atoms decodes an OVSDB value into its atoms: a bare atom is a set of
// one, ["set",[...]] a set; maps and uuids are not expected here.
func atoms(r row, col string) ([]json.RawMessage, error) {
	raw, ok := r[col]
	if !ok {
		return nil, fmt.Errorf("%w: column %s missing", ErrCommand, col)
	}
	var arr []json.RawMessage
	if err := json.Unmarshal(raw, &arr); err != nil {
		return []json.RawMessage{raw}, nil // a bare atom
	}
	var tag string
	if len(arr) != 2 || json.Unmarshal(arr[0], &tag) != nil || tag != "set" {
		return nil, fmt.Errorf("%w: column %s: unexpected value %s", ErrCommand, col, raw)
	}
	var set []json.RawMessage
	if err := json.Unmarshal(arr[1], &set); err != nil {
		return nil, fmt.Errorf("%w: column %s: unexpected set %s", ErrCommand, col, raw)
	}
	return set, nil
}

func ints(r row, col string) ([]int, error) {
	as, err := atoms(r, col)
	if err != nil {
		return nil, err
	}
	out := make([]int, 0, len(as))
	for _, a := range as {
		var n int
		if err := json.Unmarshal(a, &n); err != nil {
			return nil, fmt.Errorf("%w: column %s: %s is not an integer", ErrCommand, col, a)
		}
		out = append(out, n)
	}
	return out, nil
}

// str reads a string column; optional allows the empty set (then "").
func str(r row, col string, optional bool) (string, error) {
	as, err := atoms(r, col)
	if err != nil {
		return "", err
	}
	if len(as) == 0 && optional {
		return "", nil
	}
	var s string
	if len(as) != 1 || json.Unmarshal(as[0], &s) != nil {
		return "", fmt.Errorf("%w: column %s: want one string, got %s", ErrCommand, col, r[col])
	}
	return s, nil
}
