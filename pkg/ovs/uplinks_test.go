package ovs

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
)

func rows(t *testing.T, js string) []row {
	t.Helper()
	var out []row
	if err := json.Unmarshal([]byte(js), &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// BridgeUplinks on OVSDB's encoding: a port set of one is a bare uuid, a
// VM's interface is known by its external_ids, an OVS bond (a port of two
// interfaces) is OVS's own; a malformed column is a clear error naming it.
func TestBridgeUplinksRows(t *testing.T) {
	bridges := rows(t, `[{"name":"br0","ports":["set",[["uuid","p1"],["uuid","p2"],["uuid","p3"]]]},{"name":"br1","ports":["uuid","p9"]}]`)
	ports := rows(t, `[{"_uuid":["uuid","p1"],"name":"eth0","interfaces":["uuid","i1"]},
		{"_uuid":["uuid","p2"],"name":"vnet0","interfaces":["uuid","i2"]},
		{"_uuid":["uuid","p3"],"name":"bond","interfaces":["set",[["uuid","i3"],["uuid","i4"]]]},
		{"_uuid":["uuid","p9"],"name":"eth9","interfaces":["uuid","i9"]}]`)
	ifaces := rows(t, `[{"_uuid":["uuid","i1"],"name":"eth0","type":"","external_ids":["map",[]],"options":["map",[]]},
		{"_uuid":["uuid","i2"],"name":"vnet0","type":"","external_ids":["map",[["attached-mac","52:54:00:00:00:01"]]],"options":["map",[]]},
		{"_uuid":["uuid","i3"],"name":"leg1","type":"","external_ids":["map",[]],"options":["map",[]]},
		{"_uuid":["uuid","i4"],"name":"leg2","type":"system","external_ids":["map",[]],"options":["map",[]]},
		{"_uuid":["uuid","i9"],"name":"eth9","type":"system","external_ids":["map",[]],"options":["map",[]]}]`)
	got, err := BridgeUplinks("br0", bridges, ports, ifaces)
	if err != nil || !slices.Equal(got, []string{"eth0"}) {
		t.Errorf("uplinks of br0: %v, %v; want [eth0]", got, err)
	}
	if got, err := BridgeUplinks("br1", bridges, ports, ifaces); err != nil || !slices.Equal(got, []string{"eth9"}) {
		t.Errorf("uplinks of br1: %v, %v; want [eth9]", got, err)
	}
	bad := rows(t, `[{"_uuid":["uuid","i1"],"name":"eth0","type":"","external_ids":"oops","options":["map",[]]}]`)
	_, err = BridgeUplinks("br0", bridges, ports, bad)
	if !errors.Is(err, ErrCommand) || !strings.Contains(err.Error(), "external_ids") {
		t.Errorf("malformed external_ids: %v, want ErrCommand naming the column", err)
	}
	badPorts := rows(t, `[{"_uuid":"p1","name":"eth0","interfaces":["uuid","i1"]}]`)
	if _, err := BridgeUplinks("br0", bridges, badPorts, ifaces); !errors.Is(err, ErrCommand) || !strings.Contains(err.Error(), "_uuid") {
		t.Errorf("malformed _uuid: %v, want ErrCommand naming the column", err)
	}
	// Two malformed columns: the first read is the one named.
	twoBad := rows(t, `[{"_uuid":["uuid","i1"],"name":7,"type":"","external_ids":"oops","options":["map",[]]}]`)
	if _, err := BridgeUplinks("br0", bridges, ports, twoBad); !errors.Is(err, ErrCommand) || !strings.Contains(err.Error(), "column name") {
		t.Errorf("malformed name and external_ids: %v, want ErrCommand naming name", err)
	}
}
