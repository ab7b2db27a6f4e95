// Package config is the agent's YAML configuration: defaults, strict
// decoding (unknown keys are refused) and validation whose errors name the
// file, the line and the key, so a bad config is refused at start with a
// message an operator can act on.
package config

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/rarp-announce/rarp-announce/pkg/announce"
	"github.com/rarp-announce/rarp-announce/pkg/plan"
	"github.com/rarp-announce/rarp-announce/pkg/rarptable"
)

// DefaultPath is where packages install the config.
const DefaultPath = "/etc/rarp-announce/rarp-announce.yaml"

// DefaultMetricsAddress serves /metrics, /healthz and /readyz on loopback
// only: exposing them is an explicit choice.
const DefaultMetricsAddress = "127.0.0.1:9798"

// Config is the whole file. Every key is documented in
// deploy/rarp-announce.yaml, which doubles as the example config.
type Config struct {
	Libvirt   Libvirt   `yaml:"libvirt"`
	Schedule  Schedule  `yaml:"schedule"`
	Pacing    Pacing    `yaml:"pacing"`
	Readiness Readiness `yaml:"readiness"`
	FDBRepair bool      `yaml:"fdb_repair"`
	Host      Host      `yaml:"host"`
	// Reconvergence and MoveLedger: did the network follow each
	// migration, and does a MAC move too often (reconverge.go).
	Reconvergence Reconvergence `yaml:"reconvergence"`
	MoveLedger    MoveLedger    `yaml:"move_ledger"`
	Strategies    Strategies    `yaml:"strategies"`
	Triggers      Triggers      `yaml:"triggers"`
	Failover      Failover      `yaml:"failover"`
	OVS           OVS           `yaml:"ovs"`
	Responder     Responder     `yaml:"responder"`
	IPAnnounce    IPAnnounce    `yaml:"ip_announce"`
	Metrics       Metrics       `yaml:"metrics"`
	Log           Log           `yaml:"log"`
}

// Libvirt is how the agent reaches libvirtd.
type Libvirt struct {
	// Socket is the unix socket; empty picks the first that exists of the
	// split daemon's and the monolithic daemon's read-only sockets for
	// events and XML and, only when a NIC on the qemu strategy lands, of
	// their read-write sockets for QMP (a connection of its own).
	Socket           string   `yaml:"socket"`
	URI              string   `yaml:"uri"`
	RPCTimeout       Duration `yaml:"rpc_timeout"`
	BackoffMin       Duration `yaml:"backoff_min"`
	BackoffMax       Duration `yaml:"backoff_max"`
	AnnounceOnResync bool     `yaml:"announce_on_resync"`
}

// Schedule mirrors announce.Schedule.
type Schedule struct {
	Initial       Duration `yaml:"initial"`
	Step          Duration `yaml:"step"`
	Rounds        int      `yaml:"rounds"`
	Max           Duration `yaml:"max"`
	Bursts        int      `yaml:"bursts"`
	BurstInterval Duration `yaml:"burst_interval"`
	Refresh       Duration `yaml:"refresh"`
}

// Announce converts to the announcer's schedule.
func (s Schedule) Announce() announce.Schedule {
	return announce.Schedule{
		Initial: s.Initial.D(), Step: s.Step.D(), Rounds: s.Rounds, Max: s.Max.D(),
		Bursts: s.Bursts, BurstInterval: s.BurstInterval.D(), Refresh: s.Refresh.D(),
	}
}

// Pacing mirrors announce.Pacing.
type Pacing struct {
	FramesPerSecond float64 `yaml:"frames_per_second"`
	Burst           int     `yaml:"burst"`
}

// Readiness says how long to wait for a VM's port and how long to keep
// watching it after landing.
type Readiness struct {
	Timeout     Duration `yaml:"timeout"`
	WatchWindow Duration `yaml:"watch_window"`
}

// Reconvergence says how long the network is watched around a migration
// and where the migration records go.
type Reconvergence struct {
	// Window: after a landing, the uplinks are watched this long for the
	// first unicast frame to each VM MAC (0: not watched).
	Window Duration `yaml:"window"`
	// StaleWindow: after a departure, the source's uplinks are watched
	// this long for frames still addressed to the VM (0: not watched).
	StaleWindow Duration `yaml:"stale_window"`
	// PrematureMargin: a frame from the VM's MAC out of this host's uplink earlier
	// than this before RESUMED is a premature move (0: not watched).
	PrematureMargin Duration `yaml:"premature_margin"`
	// Webhook receives each migration record as a JSON POST (empty: none).
	Webhook        string   `yaml:"webhook"`
	WebhookTimeout Duration `yaml:"webhook_timeout"`
}

// MoveLedger warns when a MAC lands here Limit times within Window.
type MoveLedger struct {
	Window Duration `yaml:"window"`
	Limit  int      `yaml:"limit"`
	// MaxMACsPerMinute caps the MACs whose announce starts on one bridge
	// within a minute (a host evacuation; a MAC that lands twice counts
	// twice): the others wait their turn, none is dropped. 0: no cap.
	MaxMACsPerMinute int `yaml:"max_macs_per_minute"`
}

// MaxReconvergenceWindow bounds the watch windows: a watch holds a socket
// per uplink and landing.
const MaxReconvergenceWindow = 10 * time.Minute

// Host configures the host strategy.
type Host struct {
	// SendOn is where a bridge NIC's frames are written: uplinks (each
	// uplink port of the bridge, tagged as that uplink carries the VM
	// port's VLAN) or bridge (the bridge device, which floods them to
	// every port and tags them with the bridge's own PVID).
	SendOn string `yaml:"send_on"`
	// FrameMark is the socket mark (skb->mark, host-local) on every frame
	// the agent sends, so that its own premature-move watches drop them
	// in the kernel; 0: unmarked. Change it if the host's tc or nftables
	// rules give the default a meaning.
	FrameMark uint32 `yaml:"frame_mark"`
}

// DefaultFrameMark is host.frame_mark's default: "RARP" in ASCII.
const DefaultFrameMark = 0x52415250

// Where the host strategy writes a bridge NIC's frames (host.send_on).
const (
	SendOnUplinks = "uplinks"
	SendOnBridge  = "bridge"
)

// Strategy is how a NIC kind is announced: the planner's enum
// (plan.Strategy), which the CLI's --strategy reads too.
type Strategy = plan.Strategy

// Strategies.
const (
	StrategyHost = plan.Host // AF_PACKET frames from the host
	StrategyQEMU = plan.QEMU // QMP announce-self through libvirt
	StrategyOVS  = plan.OVS  // injected into Open vSwitch as if from the VM's port
	StrategySkip = plan.Skip // not announced
)

// Strategies picks a strategy per NIC kind of the domain XML.
type Strategies struct {
	Bridge      Strategy `yaml:"bridge"`      // <interface type='bridge'> on a Linux bridge
	Network     Strategy `yaml:"network"`     // <interface type='network'> on a Linux bridge
	Direct      Strategy `yaml:"direct"`      // macvtap
	OpenVSwitch Strategy `yaml:"openvswitch"` // <virtualport type='openvswitch'>
	VhostUser   Strategy `yaml:"vhostuser"`
	Ethernet    Strategy `yaml:"ethernet"` // a tap nobody attached for libvirt
}

// Triggers says which events announce: a domain landing after a
// migration, restored (virsh restore) or reverted to a snapshot onto this
// host, and, for the running local domains behind an uplink, a bond
// failing over, an uplink's carrier coming back, an uplink re-added to a
// bridge. All on by default.
type Triggers struct {
	Migration    bool `yaml:"migration"`
	Restore      bool `yaml:"restore"`
	Snapshot     bool `yaml:"snapshot"`
	BondFailover bool `yaml:"bond_failover"`
	CarrierUp    bool `yaml:"carrier_up"`
	PortAdded    bool `yaml:"port_added"`
}

// Disabled names the triggers set to false, as the agent's
// Settings.Disabled takes them.
func (t Triggers) Disabled() map[string]bool {
	off := map[string]bool{}
	for name, on := range map[string]bool{
		"migration": t.Migration, "restore": t.Restore, "snapshot": t.Snapshot,
		"bond_failover": t.BondFailover, "carrier_up": t.CarrierUp, "port_added": t.PortAdded,
	} {
		if !on {
			off[name] = true
		}
	}
	return off
}

// Uplinks reports whether any uplink trigger is on (the uplink watcher
// is needed).
func (t Triggers) Uplinks() bool { return t.BondFailover || t.CarrierUp || t.PortAdded }

// Failover tunes the re-announces after uplink events.
type Failover struct {
	// HoldDown is the shortest time between two re-announces for one
	// uplink: a flapping link re-announces at once, then at most once
	// per hold_down, the last event winning.
	HoldDown Duration `yaml:"hold_down"`
}

// Bounds of failover.hold_down: below 100 ms a flapping link would send a
// storm; above 10 minutes switches age the MACs out first.
const (
	MinHoldDown = 100 * time.Millisecond
	MaxHoldDown = 10 * time.Minute
)

// OVS reaches Open vSwitch for the ovs strategy.
type OVS struct {
	// DB is the OVSDB socket, as ovs-vsctl --db takes it; empty:
	// unix:<rundir>/db.sock.
	DB string `yaml:"db"`
	// RunDir holds the bridges' OpenFlow sockets (<rundir>/<bridge>.mgmt);
	// empty: $OVS_RUNDIR or /var/run/openvswitch.
	RunDir string `yaml:"rundir"`
	// Lookup is how a port's bridge, OpenFlow port and VLAN are found:
	// ovsdb (JSON-RPC to ovsdb-server) or vsctl (ovs-vsctl, slower).
	Lookup string `yaml:"lookup"`
	// Injection is how frames enter OVS: openflow (packet-out over the
	// bridge's management socket) or ofctl (ovs-ofctl packet-out).
	Injection     string   `yaml:"injection"`
	LookupTimeout Duration `yaml:"lookup_timeout"`
	FrameTimeout  Duration `yaml:"frame_timeout"`
	// Vsctl and Ofctl are the command paths for lookup vsctl and
	// injection ofctl.
	Vsctl string `yaml:"vsctl"`
	Ofctl string `yaml:"ofctl"`
}

// Responder is the embedded RARP server (rarp-announce serve).
type Responder struct {
	Enabled    bool     `yaml:"enabled"`
	Interfaces []string `yaml:"interfaces"`
	// Ethers and Map are the table files; with neither given, the table
	// is DefaultEthers (Files).
	Ethers    string `yaml:"ethers"`
	Map       string `yaml:"map"`
	OffLink   bool   `yaml:"off_link"`
	BootDir   string `yaml:"boot_dir"`
	ARPAdvise bool   `yaml:"arp_advise"`
}

// DefaultEthers is the responder's table when the configuration names
// none, as rarpd's.
const DefaultEthers = "/etc/ethers"

// Files returns the table files to load: Ethers and Map as given, or
// DefaultEthers when neither is. A map given alone is the whole table: a
// default ethers beside it, absent on most hosts, would keep the map from
// being served.
func (r Responder) Files() rarptable.Files {
	if r.Ethers == "" && r.Map == "" {
		return rarptable.Files{Ethers: DefaultEthers}
	}
	return rarptable.Files{Ethers: r.Ethers, Map: r.Map}
}

// Metrics is the HTTP endpoint.
type Metrics struct {
	Address string `yaml:"address"`
}

// Log configures zap.
type Log struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"` // json or console
}

// Default is the configuration without a file.
func Default() *Config {
	s := announce.DefaultSchedule()
	p := announce.DefaultPacing()
	return &Config{
		Libvirt: Libvirt{
			URI: "qemu:///system", RPCTimeout: Duration(5 * time.Second),
			BackoffMin: Duration(200 * time.Millisecond), BackoffMax: Duration(10 * time.Second),
			AnnounceOnResync: true,
		},
		Schedule: Schedule{
			Initial: Duration(s.Initial), Step: Duration(s.Step), Rounds: s.Rounds, Max: Duration(s.Max),
			Bursts: s.Bursts, BurstInterval: Duration(s.BurstInterval), Refresh: Duration(s.Refresh),
		},
		Pacing:    Pacing{FramesPerSecond: p.PerSecond, Burst: p.Burst},
		Readiness: Readiness{Timeout: Duration(30 * time.Second), WatchWindow: Duration(2 * time.Minute)},
		FDBRepair: true,
		Reconvergence: Reconvergence{Window: Duration(30 * time.Second), StaleWindow: Duration(10 * time.Second),
			PrematureMargin: Duration(2 * time.Second), WebhookTimeout: Duration(5 * time.Second)},
		MoveLedger: MoveLedger{Window: Duration(180 * time.Second), Limit: 5},

		Host: Host{SendOn: SendOnUplinks, FrameMark: DefaultFrameMark},
		Strategies: Strategies{
			Bridge: StrategyHost, Network: StrategyHost, Direct: StrategyHost,
			OpenVSwitch: StrategyOVS, VhostUser: StrategyQEMU, Ethernet: StrategySkip,
		},
		Triggers: Triggers{Migration: true, Restore: true, Snapshot: true, BondFailover: true, CarrierUp: true, PortAdded: true},
		Failover: Failover{HoldDown: Duration(time.Second)},
		OVS: OVS{Lookup: "ovsdb", Injection: "openflow", LookupTimeout: Duration(5 * time.Second),
			FrameTimeout: Duration(time.Second), Vsctl: "ovs-vsctl", Ofctl: "ovs-ofctl"},
		IPAnnounce: defaultIPAnnounce(),
		Metrics:    Metrics{Address: DefaultMetricsAddress},
		Log:        Log{Level: "info", Format: "json"},
	}
}

// UsesOVS reports whether a NIC kind uses the ovs strategy.
func (c *Config) UsesOVS() bool { return c.Strategies.OpenVSwitch == StrategyOVS }

// UsesQEMU reports whether any NIC kind uses QMP, which needs the
// read-write libvirt socket.
func (c *Config) UsesQEMU() bool {
	s := c.Strategies
	for _, v := range []Strategy{s.Bridge, s.Network, s.Direct, s.OpenVSwitch, s.VhostUser, s.Ethernet} {
		if v == StrategyQEMU {
			return true
		}
	}
	return false
}

// Duration is a time.Duration written as "50ms", "2s", "1m30s".
type Duration time.Duration

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// MarshalYAML writes the Go syntax back.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// Load reads, decodes and validates a config file on top of the defaults.
// The error, an Errors, lists every problem found, one per line, each with
// file:line.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, Errors{{File: path, Class: ClassFile, Msg: unwrapPath(err)}}
	}
	return Parse(path, data)
}

// Parse decodes and validates data; name is the file name for errors. The
// error, an Errors, lists every problem of the file at once: syntax,
// second documents, unknown and duplicate keys, wrong types and values
// out of range, each as "file:line: key: reason".
func Parse(name string, data []byte) (*Config, error) {
	c := Default()
	d := &decoder{file: name}
	root := d.document(data)
	if d.errs.Has(ClassSyntax) {
		return nil, d.errs.err()
	}
	if root != nil && len(root.Content) > 0 {
		d.mapping(root.Content[0], reflect.ValueOf(c).Elem(), "")
	}
	if len(c.Responder.Interfaces) == 0 {
		c.Responder.Interfaces = nil
	}
	if len(c.IPAnnounce.Gateways) == 0 {
		c.IPAnnounce.Gateways = nil
	}
	// Semantic checks on what decoded; a key that already failed to
	// decode kept its default, so a second message about it would mislead.
	failed := map[string]bool{}
	for _, e := range d.errs {
		failed[e.Key] = true
	}
	for _, e := range c.validate() {
		if failed[e.Key] {
			continue
		}
		e.File = name
		if root != nil {
			e.Line = lineOf(root, e.Key)
		}
		d.errs = append(d.errs, e)
	}
	if err := d.errs.err(); err != nil {
		return nil, err
	}
	return c, nil
}

// lineOf finds the line of a dotted key ("schedule.rounds") in the
// document; 0 if the key is not in the file (a default failed).
func lineOf(root *yaml.Node, key string) int {
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	line := 0
	for _, part := range strings.Split(key, ".") {
		if n.Kind != yaml.MappingNode {
			return line
		}
		found := false
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == part {
				line = n.Content[i].Line
				n = n.Content[i+1]
				found = true
				break
			}
		}
		if !found {
			return line
		}
	}
	return line
}

// Validate checks a config built in code (defaults plus command-line
// overrides); source names where the values came from in the errors.
func (c *Config) Validate(source string) error {
	errs := Errors(c.validate())
	for _, e := range errs {
		e.File = source
	}
	return errs.err()
}

// validate returns every semantic problem, keyed by dotted path.
func (c *Config) validate() []*Error {
	var errs []*Error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &Error{Key: key, Class: ClassValue, Msg: fmt.Sprintf(format, args...)})
	}
	if c.Libvirt.RPCTimeout <= 0 {
		bad("libvirt.rpc_timeout", "must be > 0")
	}
	if c.Libvirt.BackoffMin <= 0 {
		bad("libvirt.backoff_min", "must be > 0")
	}
	if c.Libvirt.BackoffMax < c.Libvirt.BackoffMin {
		bad("libvirt.backoff_max", "must be >= backoff_min (%v)", c.Libvirt.BackoffMin.D())
	}
	if c.Libvirt.URI == "" {
		bad("libvirt.uri", "must not be empty")
	}
	if err := c.Schedule.Announce().Validate(); err != nil {
		for _, fe := range announce.FieldErrors(err) {
			bad("schedule."+strings.ReplaceAll(fe.Field, "-", "_"), "%s", fe.Err)
		}
	}
	// NaN fails every comparison and a rate near zero makes the pacer's
	// wait overflow to a negative duration: both used to turn pacing off.
	if f := c.Pacing.FramesPerSecond; !(f >= MinFramesPerSecond && f <= MaxFramesPerSecond) {
		bad("pacing.frames_per_second", "%v is outside %v to %v", f, MinFramesPerSecond, MaxFramesPerSecond)
	}
	if c.Pacing.Burst < 1 {
		bad("pacing.burst", "must be >= 1")
	}
	if c.Readiness.Timeout <= 0 {
		bad("readiness.timeout", "must be > 0")
	}
	if c.Readiness.WatchWindow < 0 {
		bad("readiness.watch_window", "must be >= 0")
	}
	rc := c.Reconvergence
	for key, d := range map[string]Duration{"window": rc.Window, "stale_window": rc.StaleWindow, "premature_margin": rc.PrematureMargin} {
		if d < 0 || d.D() > MaxReconvergenceWindow {
			bad("reconvergence."+key, "%v is outside 0 to %v", d.D(), MaxReconvergenceWindow)
		}
	}
	if rc.Webhook != "" {
		if u, err := url.Parse(rc.Webhook); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("reconvergence.webhook", "%q is not an http:// or https:// URL", rc.Webhook)
		}
	}
	if rc.WebhookTimeout <= 0 {
		bad("reconvergence.webhook_timeout", "must be > 0")
	}
	if c.MoveLedger.Window <= 0 {
		bad("move_ledger.window", "must be > 0")
	}
	if c.MoveLedger.MaxMACsPerMinute < 0 {
		bad("move_ledger.max_macs_per_minute", "must be >= 0 (0: no cap)")
	}
	if c.MoveLedger.Limit < 2 {
		bad("move_ledger.limit", "must be >= 2 (every landing is one move)")
	}
	st := c.Strategies
	for key, v := range map[string]Strategy{"bridge": st.Bridge, "network": st.Network, "direct": st.Direct, "ethernet": st.Ethernet} {
		if v == StrategyOVS {
			bad("strategies."+key, "ovs applies only to openvswitch ports")
		}
	}
	if st.VhostUser == StrategyHost || st.VhostUser == StrategyOVS {
		bad("strategies.vhostuser", "vhost-user ports have no kernel device: use qemu or skip")
	}
	if st.Ethernet == StrategyHost {
		bad("strategies.ethernet", "a type='ethernet' tap has no bridge to send on: use qemu or skip")
	}
	if c.Host.SendOn != SendOnUplinks && c.Host.SendOn != SendOnBridge {
		bad("host.send_on", "%q is not uplinks or bridge", c.Host.SendOn)
	}
	if h := c.Failover.HoldDown.D(); h < MinHoldDown || h > MaxHoldDown {
		bad("failover.hold_down", "%v is outside %v to %v", h, MinHoldDown, MaxHoldDown)
	}
	if c.OVS.Lookup != "ovsdb" && c.OVS.Lookup != "vsctl" {
		bad("ovs.lookup", "%q is not ovsdb or vsctl", c.OVS.Lookup)
	}
	if c.OVS.Injection != "openflow" && c.OVS.Injection != "ofctl" {
		bad("ovs.injection", "%q is not openflow or ofctl", c.OVS.Injection)
	}
	if c.OVS.LookupTimeout <= 0 {
		bad("ovs.lookup_timeout", "must be > 0")
	}
	if c.OVS.FrameTimeout <= 0 {
		bad("ovs.frame_timeout", "must be > 0")
	}
	if r := c.Responder; r.Enabled {
		if len(r.Interfaces) == 0 {
			bad("responder.interfaces", "at least one interface is needed when the responder is enabled")
		}
		for _, name := range r.Interfaces {
			if err := rarptable.CheckInterfaceName(name); err != nil {
				bad("responder.interfaces", "%v", err)
			}
		}
	}
	c.IPAnnounce.validate(bad)
	if err := CheckListenAddress(c.Metrics.Address); err != nil {
		bad("metrics.address", "%v", err)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "%q is not debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "json", "console":
	default:
		bad("log.format", "%q is not json or console", c.Log.Format)
	}
	sort.SliceStable(errs, func(i, j int) bool { return errs[i].Key < errs[j].Key })
	return errs
}

// Bounds of pacing.frames_per_second (and send --rate): below one frame a
// second an announce of a few frames takes longer than any switch keeps a
// MAC; above a million the pacer no longer limits anything a NIC can send.
const (
	MinFramesPerSecond = 1
	MaxFramesPerSecond = 1_000_000 // an integer constant: messages print 1000000, not 1e+06
)

// Rate is a frames-per-second flag value, checked when the flag is parsed
// ("send --rate NaN" is a usage error, not pacing turned off).
type Rate float64

// String implements flag.Value.
func (r *Rate) String() string { return strconv.FormatFloat(float64(*r), 'g', -1, 64) }

// Set implements flag.Value.
func (r *Rate) Set(s string) error {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return fmt.Errorf("%q is not a number", s)
	}
	if !(f >= MinFramesPerSecond && f <= MaxFramesPerSecond) {
		return fmt.Errorf("%v is outside %v to %v frames per second", f, MinFramesPerSecond, MaxFramesPerSecond)
	}
	*r = Rate(f)
	return nil
}

// unwrapPath drops the path from an *os.PathError: the Error names the
// file already.
func unwrapPath(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return "cannot " + pe.Op + ": " + pe.Err.Error()
	}
	return err.Error()
}
