package config

import (
	"net/netip"
	"time"

	"github.com/rarp-announce/rarp-announce/pkg/ipannounce"
)

// IPAnnounce is the ip_announce section: after a NIC's RARPs, GARPs,
// unsolicited NAs and directed ARP/NS to gateways for its known addresses.
type IPAnnounce struct {
	Enabled bool      `yaml:"enabled"`
	Sources IPSources `yaml:"sources"`
	// StaticMap is a per-MAC address file (ipsource.ParseStatic format).
	StaticMap string `yaml:"static_map"`
	// Gateways receive a directed ARP request (IPv4) or NS (IPv6) from
	// each address of their family: routers with arp_accept=0 learn the
	// VM only from those.
	Gateways  []string `yaml:"gateways"`
	Count     int      `yaml:"count"`
	Interval  Duration `yaml:"interval"`
	GARPReply bool     `yaml:"garp_reply"`
	// GuestAnnounce asks QEMU (QMP announce-self for the NIC's alias) at
	// the NIC's first RARP, so a virtio guest sends its own GARPs/NAs.
	// Needs the read-write libvirt socket.
	GuestAnnounce bool `yaml:"guest_announce"`
	// CarryLearned writes the learned addresses into the domain's live XML
	// (our <metadata>) so they travel with it; needs the read-write
	// libvirt socket (the QMP connection's).
	CarryLearned bool `yaml:"carry_learned"`
	// CarryEvery is the shortest time between two such writes per domain.
	CarryEvery Duration `yaml:"carry_every"`
	MaxPerNIC  int      `yaml:"max_ips_per_nic"`
	// LearnedMaxAge forgets a learned or carried address the guest has
	// not shown for that long (carried addresses keep their last
	// sighting in the element), so an address that moved to another VM
	// is not announced from this one.
	LearnedMaxAge Duration `yaml:"learned_max_age"`
	// FramesPerSecondPerUplink caps the IP-layer frames on one segment
	// (switches police ARP/ND in their control plane).
	FramesPerSecondPerUplink float64 `yaml:"frames_per_second_per_uplink"`
}

// IPSources switches each address source; Resolve tries them in this order.
type IPSources struct {
	Nova    bool `yaml:"nova"`
	Static  bool `yaml:"static"`
	Learned bool `yaml:"learned"`
	Carried bool `yaml:"carried"`
	Leases  bool `yaml:"leases"`
}

func defaultIPAnnounce() IPAnnounce {
	s := ipannounce.DefaultSchedule
	return IPAnnounce{
		Sources:  IPSources{Nova: true, Static: true, Carried: true},
		Count:    s.Count,
		Interval: Duration(s.Interval),
		// A guest's addresses rarely change; a burst of learning (DHCP,
		// then ARP) costs one write, then one more at most 10 s later.
		CarryEvery: Duration(10 * time.Second),
		// A guest in use ARPs for its gateway every few minutes; a
		// keepalived VIP that failed over is forgotten within half an hour.
		LearnedMaxAge: Duration(30 * time.Minute),
		// Eight addresses: a dual-stack NIC with a few secondaries.
		MaxPerNIC:                8,
		FramesPerSecondPerUplink: 100,
	}
}

// GatewayAddrs returns the parsed gateways (validate has checked them).
func (c IPAnnounce) GatewayAddrs() []netip.Addr {
	var out []netip.Addr
	for _, g := range c.Gateways {
		if a, err := netip.ParseAddr(g); err == nil {
			out = append(out, a)
		}
	}
	return out
}

// Schedule is the IP frames' schedule.
func (c IPAnnounce) Schedule() ipannounce.Schedule {
	return ipannounce.Schedule{Count: c.Count, Interval: c.Interval.D()}
}

func (c IPAnnounce) validate(bad func(key, format string, args ...any)) {
	if !c.Enabled {
		return
	}
	for i, g := range c.Gateways {
		a, err := netip.ParseAddr(g)
		if err == nil {
			err = ipannounce.ValidateIP(a)
		}
		if err != nil {
			bad("ip_announce.gateways", "entry %d: %q is not a unicast IPv4 or IPv6 address", i+1, g)
		}
	}
	if c.Count < 1 || c.Count > 20 {
		bad("ip_announce.count", "%d is outside 1 to 20", c.Count)
	}
	if c.Count > 1 && (c.Interval.D() < ipannounce.MinInterval || c.Interval.D() > time.Minute) {
		bad("ip_announce.interval", "%v is outside %v (Linux's neighbour locktime is 1 s) to 1m", c.Interval.D(), ipannounce.MinInterval)
	}
	if c.CarryLearned && (c.CarryEvery.D() < time.Second || c.CarryEvery.D() > time.Hour) {
		bad("ip_announce.carry_every", "%v is outside 1s to 1h", c.CarryEvery.D())
	}
	if c.CarryLearned && !c.Sources.Learned {
		bad("ip_announce.carry_learned", "needs ip_announce.sources.learned: true (nothing is learned to carry)")
	}
	if (c.Sources.Learned || c.Sources.Carried) && (c.LearnedMaxAge.D() < time.Minute || c.LearnedMaxAge.D() > 7*24*time.Hour) {
		bad("ip_announce.learned_max_age", "%v is outside 1m to 168h", c.LearnedMaxAge.D())
	}
	if c.MaxPerNIC < 1 {
		bad("ip_announce.max_ips_per_nic", "must be >= 1")
	}
	if f := c.FramesPerSecondPerUplink; !(f >= MinFramesPerSecond && f <= MaxFramesPerSecond) {
		bad("ip_announce.frames_per_second_per_uplink", "%v is outside %v to %v", f, MinFramesPerSecond, MaxFramesPerSecond)
	}
}
