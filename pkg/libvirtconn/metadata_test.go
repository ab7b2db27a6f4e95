package libvirtconn

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/rarp-announce/rarp-announce/internal/libvirtfake"
	"github.com/rarp-announce/rarp-announce/pkg/domxml"
)

// TestSetMetadataWritesOurElementLive: the element reaches libvirt with our
// key and namespace, through the Redialer (the read-write connection); on
// a read-only connection libvirt's refusal is ErrDenied.
func TestSetMetadataWritesOurElementLive(t *testing.T) {
	s := libvirtfake.Start(t)
	d := libvirtfake.AddTestDomain(t, s, 1, StateRunning, 1, 1)
	r := NewRedialer(Config{Socket: s.Path(), RPCTimeout: 2 * time.Second})
	defer r.Close()
	ctx := context.Background()
	elem := `<addresses><nic mac="52:54:00:00:00:01"><ip address="10.66.0.10"/></nic></addresses>`
	if err := r.SetMetadata(ctx, DomainRef{UUID: d.UUID}, elem, domxml.AddressesKey, domxml.AddressesNamespace); err != nil {
		t.Fatal(err)
	}
	got, _ := s.Domain(d.Name)
	if got.Metadata[domxml.AddressesNamespace] != elem {
		t.Fatalf("metadata = %q, want %q", got.Metadata, elem)
	}
	s.SetReadOnly(true)
	err := r.SetMetadata(ctx, DomainRef{UUID: d.UUID}, elem, domxml.AddressesKey, domxml.AddressesNamespace)
	if !errors.Is(err, ErrDenied) {
		t.Fatalf("read-only: err = %v, want ErrDenied", err)
	}
	if err := r.SetMetadata(ctx, DomainRef{UUID: libvirtfake.TestUUID(99)}, elem, domxml.AddressesKey, domxml.AddressesNamespace); err == nil || errors.Is(err, ErrDenied) {
		t.Fatalf("unknown domain: err = %v, want a lookup error", err)
	}
}

// TestDHCPLeasesOfOneMAC: the leases of the named network for that MAC
// only (IPv4 and IPv6), on a read-only connection; an unknown network is
// an error.
func TestDHCPLeasesOfOneMAC(t *testing.T) {
	s := libvirtfake.Start(t)
	s.SetReadOnly(true)
	s.SetNetwork("default", []libvirtfake.Lease{
		{MAC: "52:54:00:00:00:01", IP: "192.168.122.10"},
		{MAC: "52:54:00:00:00:02", IP: "192.168.122.11"},
		{MAC: "52:54:00:00:00:01", IP: "fd00::10", IPv6: true},
	})
	c, err := Dial(context.Background(), Config{Socket: s.Path(), RPCTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, err := c.DHCPLeases(context.Background(), "default", "52:54:00:00:00:01")
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Addr{netip.MustParseAddr("192.168.122.10"), netip.MustParseAddr("fd00::10")}
	if !slices.Equal(got, want) {
		t.Fatalf("leases = %v, want %v", got, want)
	}
	if got, err := c.DHCPLeases(context.Background(), "default", "52:54:00:00:00:03"); err != nil || len(got) != 0 {
		t.Fatalf("a MAC without lease: %v, %v", got, err)
	}
	if _, err := c.DHCPLeases(context.Background(), "nosuch", "52:54:00:00:00:01"); err == nil {
		t.Fatal("unknown network: no error")
	}
}
