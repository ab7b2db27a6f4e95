package announce

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rarp-announce/rarp-announce/internal/netnstest"
)

// manyInterfaces builds a namespace with bridge br0 (up), bridge br1
// (down) and n taps besides, like a hypervisor's.
func manyInterfaces(tb testing.TB, n int) *netnstest.NS {
	tb.Helper()
	netnstest.Require(tb)
	ns := netnstest.New(tb, "ifs")
	ns.Bridge(tb, "br0")
	ns.Exec(tb, "ip", "link", "add", "br1", "type", "bridge")
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "tuntap add dev vnet%d mode tap\n", i)
	}
	path := filepath.Join(tb.TempDir(), "batch")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		tb.Fatal(err)
	}
	netnstest.Run(tb, "ip", "-n", ns.Name, "-batch", path)
	return ns
}

// CheckInterface finds the interface in the caller's namespace and tells
// missing from down, as net.InterfaceByName did.
func TestCheckInterface(t *testing.T) {
	ns := manyInterfaces(t, 10)
	want := ns.Interface(t, "br0")
	var got *net.Interface
	var errDown, errMissing, errLong error
	if err := ns.Do(func() error {
		var err error
		got, err = CheckInterface("br0")
		_, errDown = CheckInterface("br1")
		_, errMissing = CheckInterface("br9")
		_, errLong = CheckInterface("a-name-longer-than-ifnamsiz")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if got.Index != want.Index || got.Name != "br0" || got.Flags&net.FlagUp == 0 {
		t.Errorf("br0: got %+v, want index %d, up", got, want.Index)
	}
	for name, c := range map[string]struct {
		err, want error
	}{"br1": {errDown, ErrInterfaceDown}, "br9": {errMissing, ErrNoInterface}, "long": {errLong, ErrNoInterface}} {
		if !errors.Is(c.err, c.want) {
			t.Errorf("%s: %v, want %v", name, c.err, c.want)
		}
	}
	// The namespace is the caller's: br0 of this process's namespace
	// is not the test namespace's.
	if ifi, err := CheckInterface("vnet3"); err == nil {
		t.Errorf("found vnet3 (index %d) outside its namespace", ifi.Index)
	}
}

// BenchmarkCheckInterface is what opening an interface's sender costs to
// look the interface up on a host with 2,000 taps, against
// net.InterfaceByName (which dumps every interface):
//
//	go test -run '^$' -bench CheckInterface ./pkg/announce
func BenchmarkCheckInterface(b *testing.B) {
	ns := manyInterfaces(b, 2000)
	for _, c := range []struct {
		name string
		fn   func(string) (*net.Interface, error)
	}{{"CheckInterface", CheckInterface}, {"net.InterfaceByName", net.InterfaceByName}} {
		b.Run(c.name, func(b *testing.B) {
			if err := ns.Do(func() error {
				for b.Loop() {
					if _, err := c.fn("br0"); err != nil {
						return err
					}
				}
				return nil
			}); err != nil {
				b.Fatal(err)
			}
		})
	}
}
