package libvirtconn

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	libvirt "github.com/digitalocean/go-libvirt"
)

// ErrDenied: libvirt refused the call on this connection
// (VIR_ERR_OPERATION_DENIED), typically because it is on a read-only
// socket.
var ErrDenied = errors.New("libvirt denied the operation (read-only connection?)")

// denied wraps err with ErrDenied when libvirt answered
// VIR_ERR_OPERATION_DENIED.
func denied(err error) error {
	var le libvirt.Error
	if errors.As(err, &le) && le.Code == uint32(libvirt.ErrOperationDenied) {
		return fmt.Errorf("%w: %w", ErrDenied, err)
	}
	return err
}

// SetMetadata replaces the domain's <metadata> element of namespace uri in
// its live XML (virDomainSetMetadata, type ELEMENT, AFFECT_LIVE): elem is
// the element without namespace, key the prefix libvirt writes it with. It
// needs the read-write socket: on a read-only one the error wraps
// ErrDenied. The live XML travels with the domain on migration.
func (c *Conn) SetMetadata(ctx context.Context, d DomainRef, elem, key, uri string) error {
	dom, err := c.ref(ctx, d)
	if err != nil {
		return err
	}
	err = c.call(ctx, procSetMetadata, func() error {
		return c.l.DomainSetMetadata(dom, int32(libvirt.DomainMetadataElement),
			libvirt.OptString{elem}, libvirt.OptString{key}, libvirt.OptString{uri}, libvirt.DomainAffectLive)
	})
	return denied(err)
}

// SetMetadata is Conn.SetMetadata on the current connection.
func (r *Redialer) SetMetadata(ctx context.Context, d DomainRef, elem, key, uri string) error {
	c, err := r.Conn(ctx)
	if err != nil {
		return err
	}
	return c.SetMetadata(ctx, d, elem, key, uri)
}

// DHCPLeases returns the addresses libvirt's DHCP server (dnsmasq) of the
// libvirt network named network leased to mac (virNetworkGetDHCPLeases,
// filtered by MAC on libvirt's side), IPv4 and IPv6. The read-only socket
// suffices. A network libvirt does not know is an error.
func (c *Conn) DHCPLeases(ctx context.Context, network, mac string) ([]netip.Addr, error) {
	nw, err := rpc(c, ctx, procNetworkLookupByName, func() (libvirt.Network, error) { return c.l.NetworkLookupByName(network) })
	if err != nil {
		return nil, err
	}
	leases, err := rpc(c, ctx, procNetworkGetDHCPLeases, func() ([]libvirt.NetworkDhcpLease, error) {
		ls, _, err := c.l.NetworkGetDhcpLeases(nw, libvirt.OptString{strings.ToLower(mac)}, 1, 0)
		return ls, err
	})
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, l := range leases {
		if len(l.Mac) == 1 && !strings.EqualFold(l.Mac[0], mac) {
			continue // libvirt filtered already; a lease of another MAC is never ours
		}
		a, err := netip.ParseAddr(l.Ipaddr)
		if err != nil {
			continue
		}
		out = append(out, a)
	}
	return out, nil
}
