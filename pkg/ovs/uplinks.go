package ovs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
)

// Uplinks returns the kernel devices through which traffic of bridge
// leaves the host: its physical ports, and those of the bridges its patch
// ports lead to (Neutron's br-int reaches the physical network through a
// patch port to br-ex or br-<physnet>). A physical port is a port of one
// interface of a kernel type ("" or "system": a NIC, a kernel bond, a
// VLAN device) that is not a VM's: libvirt marks a VM's interface with
// external_ids attached-mac (os-vif with iface-id, vm-uuid). Open vSwitch's
// own bonds (ports of several interfaces) are left out: OVS sends its own
// learning packets when they fail over. Tunnel, internal and DPDK ports
// have no kernel device whose carrier tells anything.
//
// One read-only transaction reads the Bridge, Port and Interface tables;
// it is meant for a background refresh, not for a landing's path.
func (d *OVSDB) Uplinks(ctx context.Context, bridge string) ([]string, error) {
	timeout := d.Timeout
	if timeout <= 0 {
		timeout = DefaultLookupTimeout
	}
	lctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var res [][]row
	err := d.with(lctx, func(c *rpcConn) (err error) {
		all := []any{}
		res, err = c.transact(lctx,
			map[string]any{"op": "select", "table": "Bridge", "where": all, "columns": []string{"name", "ports"}},
			map[string]any{"op": "select", "table": "Port", "where": all, "columns": []string{"_uuid", "name", "interfaces"}},
			map[string]any{"op": "select", "table": "Interface", "where": all, "columns": []string{"_uuid", "name", "type", "external_ids", "options"}},
		)
		return err
	})
	switch {
	case err == nil:
	case ctx.Err() != nil:
		return nil, fmt.Errorf("ovsdb uplinks of %s: %w", bridge, ctx.Err())
	case lctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded):
		return nil, fmt.Errorf("ovsdb uplinks of %s: %w after %v", bridge, ErrTimeout, timeout)
	default:
		return nil, fmt.Errorf("ovsdb uplinks of %s: %w", bridge, err)
	}
	return BridgeUplinks(bridge, res[0], res[1], res[2])
}

// maxPatchHops bounds how far Uplinks follows patch ports (br-int ->
// br-ex is one hop).
const maxPatchHops = 4

// BridgeUplinks is Uplinks' reading of the three tables' rows (OVSDB's
// JSON encoding: columns name and ports of Bridge; _uuid, name and
// interfaces of Port; _uuid, name, type, external_ids and options of
// Interface).
func BridgeUplinks(bridge string, bridges, ports, ifaces []row) ([]string, error) {
	type iface struct {
		name, typ, peer string
		vm              bool
	}
	type port struct {
		name   string
		ifaces []string
	}
	brPorts := map[string][]string{} // bridge name -> port uuids
	for _, r := range bridges {
		c := columns{r: r}
		name, ps := get(&c, strCol, "name"), get(&c, uuids, "ports")
		if c.err != nil {
			return nil, c.err
		}
		brPorts[name] = ps
	}
	if _, ok := brPorts[bridge]; !ok {
		return nil, fmt.Errorf("no bridge named %s: %w", bridge, ErrPortNotFound)
	}
	portOf := map[string]port{}         // port uuid -> port
	bridgeOfPort := map[string]string{} // port uuid -> bridge name
	for br, ps := range brPorts {
		for _, u := range ps {
			bridgeOfPort[u] = br
		}
	}
	for _, r := range ports {
		c := columns{r: r}
		id := get(&c, uuid, "_uuid")
		p := port{name: get(&c, strCol, "name"), ifaces: get(&c, uuids, "interfaces")}
		if c.err != nil {
			return nil, c.err
		}
		portOf[id] = p
	}
	ifaceOf := map[string]iface{} // interface uuid -> interface
	ifaceBridge := map[string]string{}
	for _, r := range ifaces {
		c := columns{r: r}
		id := get(&c, uuid, "_uuid")
		i := iface{name: get(&c, strCol, "name"), typ: get(&c, optStrCol, "type")}
		ext, opts := get(&c, strMap, "external_ids"), get(&c, strMap, "options")
		if c.err != nil {
			return nil, c.err
		}
		i.vm = ext["attached-mac"] != "" || ext["iface-id"] != "" || ext["vm-uuid"] != ""
		i.peer = opts["peer"]
		ifaceOf[id] = i
	}
	for pu, p := range portOf {
		for _, iu := range p.ifaces {
			if i, ok := ifaceOf[iu]; ok {
				ifaceBridge[i.name] = bridgeOfPort[pu]
			}
		}
	}

	var out []string
	seen := map[string]bool{}
	var walk func(br string, hops int)
	walk = func(br string, hops int) {
		if seen[br] || hops > maxPatchHops {
			return
		}
		seen[br] = true
		for _, pu := range brPorts[br] {
			p, ok := portOf[pu]
			if !ok || len(p.ifaces) != 1 {
				continue // unknown, or an OVS bond: OVS's own
			}
			i, ok := ifaceOf[p.ifaces[0]]
			if !ok {
				continue
			}
			switch i.typ {
			case "", "system":
				if !i.vm && i.name != br && !slices.Contains(out, i.name) {
					out = append(out, i.name)
				}
			case "patch":
				if next := ifaceBridge[i.peer]; next != "" {
					walk(next, hops+1)
				}
			}
		}
	}
	walk(bridge, 0)
	slices.Sort(out)
	return out, nil
}

// columns reads the columns of one row: the first decoding error sticks
// (err), and the reads after it decode nothing.
type columns struct {
	r   row
	err error
}

// get decodes col of c's row with decode, unless an earlier read failed.
// Reads in one expression run left to right, so err is the first
// column's error, as a return at each read would give.
func get[T any](c *columns, decode func(row, string) (T, error), col string) (v T) {
	if c.err == nil {
		v, c.err = decode(c.r, col)
	}
	return v
}

// strCol and optStrCol are str for get: a string column that must hold
// one string, and one that may be empty.
func strCol(r row, col string) (string, error)    { return str(r, col, false) }
func optStrCol(r row, col string) (string, error) { return str(r, col, true) }

// uuid decodes a ["uuid","..."] column.
func uuid(r row, col string) (string, error) {
	raw, ok := r[col]
	if !ok {
		return "", fmt.Errorf("%w: column %s missing", ErrCommand, col)
	}
	return uuidAtom(raw, col)
}

func uuidAtom(raw json.RawMessage, col string) (string, error) {
	var pair []string
	if err := json.Unmarshal(raw, &pair); err != nil || len(pair) != 2 || pair[0] != "uuid" {
		return "", fmt.Errorf("%w: column %s: want a uuid, got %s", ErrCommand, col, raw)
	}
	return pair[1], nil
}

// uuids decodes a set of uuids: ["set",[["uuid",...],...]] or one bare
// ["uuid","..."].
func uuids(r row, col string) ([]string, error) {
	raw, ok := r[col]
	if !ok {
		return nil, fmt.Errorf("%w: column %s missing", ErrCommand, col)
	}
	if u, err := uuidAtom(raw, col); err == nil {
		return []string{u}, nil
	}
	as, err := atoms(r, col)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(as))
	for _, a := range as {
		u, err := uuidAtom(a, col)
		if err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	return out, nil
}

// Uplinker lists the kernel devices an Open vSwitch bridge's traffic
// leaves the host through (OVSDB.Uplinks).
type Uplinker interface {
	Uplinks(ctx context.Context, bridge string) ([]string, error)
}

// Uplinks implements Uplinker over this switch's OVSDB: the lookup's own
// connection, or one of its own when ports are looked up with ovs-vsctl.
func (s *Switch) Uplinks(ctx context.Context, bridge string) ([]string, error) {
	if s.topo == nil {
		return nil, fmt.Errorf("ovs uplinks of %s: the OVSDB socket %q is not one this package speaks to (unix: or tcp:): %w", bridge, s.db, ErrCommand)
	}
	return s.topo.Uplinks(ctx, bridge)
}
