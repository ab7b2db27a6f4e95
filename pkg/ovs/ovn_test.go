package ovs

import (
	"encoding/json"
	"errors"
	"testing"
)

func TestOVNPortFromRow(t *testing.T) {
	for _, c := range []struct {
		name, row string
		want      OVNPort
		err       bool
	}{
		{"installed", `{"name":"vnet0","ofport":7,"external_ids":["map",[["attached-mac","52:54:00:aa:bb:cc"],["iface-id","3f1c"],["ovn-installed","true"]]]}`,
			OVNPort{Interface: "vnet0", IfaceID: "3f1c", OFPort: 7, Installed: true}, false},
		{"bound elsewhere, not installed", `{"name":"vnet0","ofport":7,"external_ids":["map",[["iface-id","3f1c"]]]}`,
			OVNPort{Interface: "vnet0", IfaceID: "3f1c", OFPort: 7}, false},
		{"ovn-installed not true", `{"name":"vnet0","ofport":7,"external_ids":["map",[["iface-id","3f1c"],["ovn-installed","false"]]]}`,
			OVNPort{Interface: "vnet0", IfaceID: "3f1c", OFPort: 7}, false},
		{"not OVN", `{"name":"vm0","ofport":3,"external_ids":["map",[]]}`, OVNPort{Interface: "vm0", OFPort: 3}, false},
		{"no ofport yet", `{"name":"vnet0","ofport":["set",[]],"external_ids":["map",[["iface-id","x"]]]}`, OVNPort{Interface: "vnet0", IfaceID: "x"}, false},
		{"ofport -1", `{"name":"vnet0","ofport":-1,"external_ids":["map",[]]}`, OVNPort{Interface: "vnet0", OFPort: -1}, false},
		{"ofport out of range", `{"name":"vnet0","ofport":70000,"external_ids":["map",[]]}`, OVNPort{}, true},
		{"external_ids not a map", `{"name":"vnet0","ofport":1,"external_ids":["set",[]]}`, OVNPort{}, true},
		{"external_ids value not a string", `{"name":"vnet0","ofport":1,"external_ids":["map",[["iface-id",5]]]}`, OVNPort{}, true},
		{"external_ids missing", `{"name":"vnet0","ofport":1}`, OVNPort{}, true},
		{"name missing", `{"ofport":1,"external_ids":["map",[]]}`, OVNPort{}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			var r row
			if err := json.Unmarshal([]byte(c.row), &r); err != nil {
				t.Fatal(err)
			}
			got, err := ovnPortFromRow(r)
			if c.err {
				if err == nil || !errors.Is(err, ErrCommand) {
					t.Fatalf("got %+v, %v; want an ErrCommand", got, err)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, c.want)
			}
		})
	}
}

func FuzzOVNPortFromRow(f *testing.F) {
	f.Add(`{"name":"vnet0","ofport":7,"external_ids":["map",[["iface-id","3f1c"],["ovn-installed","true"]]]}`)
	f.Add(`{"name":"vnet0","ofport":["set",[]],"external_ids":["map",[]]}`)
	f.Add(`{"name":"v","ofport":1,"external_ids":["map",[["a"]]]}`)
	f.Fuzz(func(t *testing.T, s string) {
		var r row
		if json.Unmarshal([]byte(s), &r) != nil {
			return
		}
		p, err := ovnPortFromRow(r)
		if err != nil {
			if !errors.Is(err, ErrCommand) {
				t.Fatalf("error %v is not an ErrCommand", err)
			}
			return
		}
		if p.Ready() && p.OFPort <= 0 {
			t.Fatalf("ready without an ofport: %+v", p)
		}
		if p.OFPort < -1 || p.OFPort > 0xfeff {
			t.Fatalf("ofport %d out of range", p.OFPort)
		}
	})
}

func TestOVNPortReady(t *testing.T) {
	for _, c := range []struct {
		p     OVNPort
		ready bool
		err   error
	}{
		{OVNPort{Interface: "v", IfaceID: "x", OFPort: 3, Installed: true}, true, nil},
		{OVNPort{Interface: "v", IfaceID: "x", OFPort: 3}, false, ErrOVNNotInstalled},
		{OVNPort{Interface: "v", IfaceID: "x", Installed: true}, false, ErrNoOFPort},
		{OVNPort{Interface: "v", IfaceID: "x", OFPort: -1, Installed: true}, false, ErrNoOFPort},
		{OVNPort{Interface: "v", OFPort: 3}, true, nil}, // not OVN's: its ofport is enough
	} {
		if c.p.Ready() != c.ready {
			t.Errorf("%+v: Ready %v", c.p, !c.ready)
		}
		if err := c.p.notReady(); !errors.Is(err, c.err) || (c.err == nil) != (err == nil) {
			t.Errorf("%+v: notReady %v, want %v", c.p, err, c.err)
		}
	}
}

func TestRebound(t *testing.T) {
	ready := OVNPort{Interface: "v", IfaceID: "x", OFPort: 3, Installed: true}
	moved := ready
	moved.OFPort = 4
	unbound := ready
	unbound.Installed = false
	gone := OVNPort{Interface: "v"}
	for _, c := range []struct {
		name      string
		prev, cur OVNPort
		want      bool
	}{
		{"still installed", ready, ready, false},
		{"installed again", unbound, ready, true},
		{"re-plugged (new ofport)", ready, moved, true},
		{"came back", gone, ready, true},
		{"unbound", ready, unbound, false},
		{"gone", ready, gone, false},
	} {
		if got := rebound(c.prev, c.cur); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}
