package caps

import (
	"errors"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/rarp-announce/rarp-announce/internal/netnstest"
)

func TestCheck(t *testing.T) {
	all := AgentNeeds(Parts{HostAnnounces: true, Responder: true, FDBRepair: true})
	for _, tc := range []struct {
		name    string
		have    Set
		needs   []Need
		missing []string // capability names in the error, in order
	}{
		{"nothing needed", 0, nil, nil},
		{"all held", Of(NetRaw, NetAdmin), all, nil},
		{"raw only, no fdb repair", Of(NetRaw), AgentNeeds(Parts{HostAnnounces: true}), nil},
		{"raw only, fdb repair on", Of(NetRaw), all, []string{"CAP_NET_ADMIN"}},
		{"admin only", Of(NetAdmin), all, []string{"CAP_NET_RAW", "CAP_NET_RAW"}},
		{"none", 0, all, []string{"CAP_NET_RAW", "CAP_NET_RAW", "CAP_NET_ADMIN"}},
		{"ovs and qemu only need nothing", 0, AgentNeeds(Parts{}), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := check(tc.have, tc.needs)
			if len(tc.missing) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var me *MissingError
			if !errors.As(err, &me) {
				t.Fatalf("got %v, want a MissingError", err)
			}
			var got []string
			for _, n := range me.Missing {
				got = append(got, n.Cap.String())
				if !strings.Contains(err.Error(), "missing "+n.Cap.String()+", needed for "+n.For) {
					t.Errorf("error does not name %s and what needs it: %v", n.Cap, err)
				}
			}
			if strings.Join(got, ",") != strings.Join(tc.missing, ",") {
				t.Fatalf("missing %v, want %v", got, tc.missing)
			}
		})
	}
}

func TestSet(t *testing.T) {
	s := Of(NetRaw)
	if !s.Has(NetRaw) || s.Has(NetAdmin) || s.Has(Cap(70)) {
		t.Fatalf("%b", s)
	}
	if NetAdmin.String() != "CAP_NET_ADMIN" || Cap(21).String() != "capability 21" {
		t.Fatal(NetAdmin.String(), Cap(21).String())
	}
}

// Restrict really lowers the thread's rights: after it, opening a packet
// socket (CAP_NET_RAW) works while the effective set lacks CAP_NET_ADMIN,
// and Check names what is missing.
func TestRestrict(t *testing.T) {
	have, err := Effective()
	if err != nil {
		t.Fatal(err)
	}
	if !have.Has(NetRaw) || !have.Has(NetAdmin) {
		netnstest.Require(t) // skips without root, fails in CI
		t.Fatal("root without CAP_NET_RAW and CAP_NET_ADMIN")
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := Restrict(Of(NetRaw)); err != nil {
			errc <- err
			return
		}
		e, err := Effective()
		if err != nil || e != Of(NetRaw) {
			errc <- errors.Join(err, errors.New("effective set not lowered"))
			return
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
		if err != nil {
			errc <- err
			return
		}
		unix.Close(fd)
		err = Check(AgentNeeds(Parts{HostAnnounces: true, FDBRepair: true})...)
		if err == nil || !strings.Contains(err.Error(), "missing CAP_NET_ADMIN") {
			errc <- errors.Join(err, errors.New("Check did not name CAP_NET_ADMIN"))
			return
		}
		if err := Restrict(0); err != nil {
			errc <- err
			return
		}
		if _, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0); !errors.Is(err, unix.EPERM) {
			errc <- errors.Join(err, errors.New("packet socket without CAP_NET_RAW"))
			return
		}
		errc <- nil
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}
