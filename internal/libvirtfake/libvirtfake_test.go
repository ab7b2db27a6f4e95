package libvirtfake

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	libvirt "github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket/dialers"
)

// The fake against go-libvirt itself: handshake, lookups, state, XML,
// errors, events.
func TestGoLibvirtClient(t *testing.T) {
	dir, err := os.MkdirTemp("", "lvf")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	s, err := Listen(filepath.Join(dir, "sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const uuid = "6c61622d-766d-4000-8000-000000000001"
	xml := LiveXML("vm1", uuid, 1, NIC{MAC: "52:54:00:00:00:01", Target: "vnet0"})
	if err := s.AddDomain(Domain{Name: "vm1", UUID: uuid, State: 5, XML: xml}); err != nil {
		t.Fatal(err)
	}

	l := libvirt.NewWithDialer(dialers.NewLocal(dialers.WithSocket(s.Path()), dialers.WithLocalTimeout(time.Second)))
	if err := l.ConnectToURI("test:///default"); err != nil {
		t.Fatal(err)
	}
	defer l.Disconnect()
	if got := s.URIs(); len(got) != 1 || got[0] != "test:///default" {
		t.Errorf("URIs = %q", got)
	}
	d, err := l.DomainLookupByName("vm1")
	if err != nil || d.ID != -1 {
		t.Fatalf("lookup of a shut-off domain: %+v, %v", d, err)
	}
	if _, err := l.DomainLookupByName("nope"); !libvirt.IsNotFound(err) {
		t.Errorf("lookup of an unknown domain: %v, want VIR_ERR_NO_DOMAIN", err)
	}
	got, err := l.DomainGetXMLDesc(d, 0)
	if err != nil || got != xml {
		t.Errorf("XML = %q, %v", got, err)
	}
	if _, err := l.ConnectGetCapabilities(); err == nil {
		t.Error("an unimplemented procedure did not fail")
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events, err := l.LifecycleEvents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.WaitSubscribers(1, time.Second); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		event, detail int32
		state, reason int32
		active        bool
	}{
		{2, 1, 3, 2, true},  // STARTED/MIGRATED: paused, incoming migration
		{4, 3, 1, 10, true}, // RESUMED/POSTCOPY: running, post-copy
		{4, 1, 1, 2, true},  // RESUMED/MIGRATED: running, migrated
		{3, 8, 3, 13, true}, // SUSPENDED/POSTCOPY_FAILED
		{5, 3, 5, 5, false}, // STOPPED/MIGRATED: shut off
	}
	var id int32
	for i, st := range steps {
		if _, err := s.Emit("vm1", st.event, st.detail); err != nil {
			t.Fatal(err)
		}
		select {
		case ev := <-events:
			if ev.Event != st.event || ev.Detail != st.detail || ev.Dom.Name != "vm1" {
				t.Fatalf("step %d: event %+v", i, ev)
			}
			if i == 0 {
				id = ev.Dom.ID
				if id < 1 {
					t.Errorf("STARTED gave id %d", id)
				}
			}
		case <-time.After(2 * time.Second):
			t.Fatalf("step %d: no event", i)
		}
		state, reason, err := l.DomainGetState(d, 0)
		if err != nil || state != st.state || reason != st.reason {
			t.Errorf("step %d: state %d/%d, %v; want %d/%d", i, state, reason, err, st.state, st.reason)
		}
		doms, _, err := l.ConnectListAllDomains(1, libvirt.ConnectListDomainsActive)
		if err != nil || (len(doms) == 1) != st.active {
			t.Errorf("step %d: active list %+v, %v", i, doms, err)
		}
		// The agent's registry asks for running domains only: an
		// incoming migration's paused domain is not one of them.
		doms, _, err = l.ConnectListAllDomains(1, libvirt.ConnectListDomainsActive|libvirt.ConnectListDomainsRunning)
		if err != nil || (len(doms) == 1) != (st.state == 1) {
			t.Errorf("step %d: running list %+v, %v", i, doms, err)
		}
	}
	cancel()
	for range events {
	}
}
