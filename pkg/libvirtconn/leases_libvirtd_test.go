package libvirtconn

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/rarp-announce/rarp-announce/internal/libvirtdtest"
	"github.com/rarp-announce/rarp-announce/internal/netnstest"
)

// A real libvirt network (libvirtd's network driver, its dnsmasq and
// leaseshelper) leases an address to a DHCP client (busybox udhcpc in a
// namespace of its own, behind a veth on the network's bridge), and
// DHCPLeases on the read-only socket returns it for that MAC and nothing
// for another.
const leaseNetworkXML = `<network>
  <name>rarpleases</name>
  <bridge name='virbr-rl' stp='off'/>
  <ip address='10.77.0.1' netmask='255.255.255.0'>
    <dhcp><range start='10.77.0.50' end='10.77.0.60'/></dhcp>
  </ip>
</network>
`

func TestLibvirtdNetworkDHCPLeases(t *testing.T) {
	libvirtdtest.Require(t)
	netnstest.Require(t, "dnsmasq", "busybox", "iptables")
	host := netnstest.New(t, "lvwlease")
	client := netnstest.New(t, "lvwleasec")
	d := libvirtdtest.Start(t, libvirtdtest.Options{NetNS: host.Name})

	def := libvirtdtest.XMLFile(t, "net.xml", leaseNetworkXML)
	d.Virsh(t, d.URI("qemu"), "net-define "+def, "net-start rarpleases")

	netnstest.Veth(t, host, "vnet-rl", client, "eth0")
	host.Attach(t, "vnet-rl", "virbr-rl")
	const mac = "52:54:00:77:00:05"
	client.Exec(t, "ip", "link", "set", "eth0", "address", mac)
	client.Exec(t, "ip", "link", "set", "eth0", "up")
	// -n -q: one lease, then exit; -s /bin/true: configure nothing.
	out := client.Exec(t, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "10", "-T", "1", "-s", "/bin/true")
	t.Logf("udhcpc: %s", strings.TrimSpace(out))

	c, err := Dial(context.Background(), Config{
		Socket: d.ROSocket, URI: "qemu:///system",
		Logger: zaptest.NewLogger(t), Metrics: NewMetrics(nil),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	// dnsmasq's leaseshelper writes the status file libvirt reads right
	// after the ACK; allow it a moment.
	var got []netip.Addr
	netnstest.Eventually(t, 5*time.Second, func() error {
		got, err = c.DHCPLeases(context.Background(), "rarpleases", mac)
		if err != nil {
			t.Fatalf("DHCPLeases on the read-only socket: %v", err)
		}
		if len(got) == 0 {
			return fmt.Errorf("DHCPLeases(%s) = %v, want one address of 10.77.0.50-60", mac, got)
		}
		return nil
	})
	if len(got) != 1 || !netip.MustParsePrefix("10.77.0.48/28").Contains(got[0]) {
		t.Fatalf("DHCPLeases(%s) = %v, want one address of 10.77.0.50-60", mac, got)
	}
	t.Logf("lease of %s: %v", mac, got)

	other, err := c.DHCPLeases(context.Background(), "rarpleases", "52:54:00:77:00:06")
	if err != nil || len(other) != 0 {
		t.Errorf("DHCPLeases of a MAC without a lease = %v, %v; want none", other, err)
	}
	if _, err := c.DHCPLeases(context.Background(), "nosuchnetwork", mac); err == nil {
		t.Error("DHCPLeases of a network libvirt does not know: no error")
	}
}
