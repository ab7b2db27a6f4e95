package ovs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"testing"

	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

func TestFrames(t *testing.T) {
	untagged := rarp.VLAN{}
	v := func(id uint16) rarp.VLAN { return rarp.VLAN{ID: id} }
	for _, c := range []struct {
		name    string
		port    Port
		vlans   []rarp.VLAN
		want    []rarp.VLAN
		skipped []rarp.VLAN
		err     error
	}{
		{"access, no XML VLAN", Port{Tag: 100, HasTag: true}, nil, []rarp.VLAN{untagged}, nil, nil},
		{"access, XML tag = port tag: guest sends untagged", Port{Tag: 100, HasTag: true}, []rarp.VLAN{v(100)}, []rarp.VLAN{untagged}, nil, nil},
		{"access, XML tag differs: OVSDB wins", Port{Tag: 100, HasTag: true}, []rarp.VLAN{v(42)}, []rarp.VLAN{untagged}, nil, nil},
		{"explicit access mode", Port{Tag: 7, HasTag: true, VLANMode: ModeAccess}, []rarp.VLAN{v(7), v(8)}, []rarp.VLAN{untagged}, nil, nil},
		{"access with priority: untagged, no PCP", Port{Tag: 100, HasTag: true}, []rarp.VLAN{{ID: 100, Priority: 5}}, []rarp.VLAN{untagged}, nil, nil},
		{"access on VLAN 0 (tag 0): untagged, XML tags ignored", Port{Tag: 0, HasTag: true}, []rarp.VLAN{v(100)}, []rarp.VLAN{untagged}, nil, nil},
		{"dead VLAN", Port{Name: "vnet1", Tag: DeadVLAN, HasTag: true}, nil, nil, nil, ErrPortNotWired},
		{"no VLAN at all: untagged", Port{}, nil, []rarp.VLAN{untagged}, nil, nil},
		{"trunk of all VLANs", Port{}, []rarp.VLAN{v(10), v(20)}, []rarp.VLAN{v(10), v(20)}, nil, nil},
		{"trunk keeps priority", Port{}, []rarp.VLAN{{ID: 10, Priority: 3}}, []rarp.VLAN{{ID: 10, Priority: 3}}, nil, nil},
		{"trunk filters", Port{Trunks: []uint16{200, 300}}, []rarp.VLAN{v(200), v(400), v(300)}, []rarp.VLAN{v(200), v(300)}, []rarp.VLAN{v(400)}, nil},
		{"trunk without 0 drops untagged", Port{Trunks: []uint16{200}}, []rarp.VLAN{untagged, v(200)}, []rarp.VLAN{v(200)}, []rarp.VLAN{untagged}, nil},
		{"trunk with 0 carries untagged", Port{Trunks: []uint16{0, 200}}, nil, []rarp.VLAN{untagged}, nil, nil},
		{"nothing carried", Port{Trunks: []uint16{200}}, []rarp.VLAN{v(10)}, nil, []rarp.VLAN{v(10)}, ErrVLANNotCarried},
		{"duplicates collapse", Port{}, []rarp.VLAN{v(10), v(10), untagged, untagged}, []rarp.VLAN{v(10), untagged}, nil, nil},
		{"native-untagged: native and untagged are one frame", Port{Tag: 5, HasTag: true, VLANMode: ModeNativeUntagged, Trunks: []uint16{100}},
			[]rarp.VLAN{untagged, v(5), v(100), v(200)}, []rarp.VLAN{untagged, v(100)}, []rarp.VLAN{v(200)}, nil},
		{"native-tagged, all trunks", Port{Tag: 5, HasTag: true, VLANMode: ModeNativeTagged}, []rarp.VLAN{v(5), v(9)}, []rarp.VLAN{untagged, v(9)}, nil, nil},
		{"dot1q-tunnel: as the guest sends", Port{Tag: 50, HasTag: true, VLANMode: ModeDot1qTunnel}, []rarp.VLAN{untagged, v(10)}, []rarp.VLAN{untagged, v(10)}, nil, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, skipped, err := Frames(c.port, c.vlans)
			if !errors.Is(err, c.err) || (c.err == nil && err != nil) {
				t.Fatalf("err %v, want %v", err, c.err)
			}
			if !slices.Equal(got, c.want) || !slices.Equal(skipped, c.skipped) {
				t.Fatalf("frames %v skipped %v, want %v and %v", got, skipped, c.want, c.skipped)
			}
		})
	}
}

func TestReason(t *testing.T) {
	// The labels are an interface (dashboards, alert rules): pinned here.
	if want := []string{"timeout", "not_running", "port_not_found", "no_ofport", "port_not_wired", "vlan_not_carried", "openflow_error", "permission", "command"}; !slices.Equal(Reasons, want) {
		t.Fatalf("Reasons = %q, want %q", Reasons, want)
	}
	for _, c := range []struct {
		err  error
		want string
	}{
		{ErrTimeout, "timeout"}, {ErrNotRunning, "not_running"}, {ErrPortNotFound, "port_not_found"},
		{ErrNoOFPort, "no_ofport"}, {ErrPortNotWired, "port_not_wired"}, {ErrVLANNotCarried, "vlan_not_carried"},
		{ErrOpenFlow, "openflow_error"}, {ErrCommand, "command"}, {errors.New("other"), "command"},
		{context.DeadlineExceeded, "timeout"},
		// The earlier in Reasons' order wins, whichever is wrapped first.
		{fmt.Errorf("%w: %w", ErrNotRunning, ErrTimeout), "timeout"},
		{fmt.Errorf("%w: %w", ErrOpenFlow, ErrPortNotFound), "port_not_found"},
		// ovs-vsctl failing on a root-only socket is a permission problem.
		{fmt.Errorf("%w: database connection failed (Permission denied)", ErrCommand), "permission"},
		{fmt.Errorf("%w: %w", ErrNotRunning, os.ErrPermission), "not_running"},
	} {
		if got := Reason(c.err); got != c.want || !slices.Contains(Reasons, got) {
			t.Errorf("Reason(%v) = %q, want %q", c.err, got, c.want)
		}
	}
}
