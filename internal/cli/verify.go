package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"go.uber.org/zap"

	"github.com/rarp-announce/rarp-announce/internal/app"
	"github.com/rarp-announce/rarp-announce/internal/config"
	"github.com/rarp-announce/rarp-announce/internal/daemon"
	"github.com/rarp-announce/rarp-announce/pkg/domxml"
	"github.com/rarp-announce/rarp-announce/pkg/plan"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
	"github.com/rarp-announce/rarp-announce/pkg/reconverge"
)

const verifyExamples = `  # Does the fabric deliver vm1's traffic to this host now? An ARP request
  # from vm1's MAC and IP for its gateway, out of the bridge's uplink; the
  # reply comes back here only if the switches point vm1's MAC at this host.
  rarp-announce verify --domain vm1 --ip 192.0.2.10 --gateway 192.0.2.1

  # One NIC of several, with a longer wait.
  rarp-announce verify --domain vm1 --mac 52:54:00:12:34:56 --ip 192.0.2.10 --gateway 192.0.2.1 --timeout 3s
`

// runVerify is 'rarp-announce verify': an active check, now, that the
// network follows a domain running here. Exit 0: answered through this
// host; 1: not answered (or the domain does not run here); 2: usage.
func runVerify(ctx context.Context, env *Env, args []string) int {
	a, code, ok := parseVerify(env, args)
	if !ok {
		return code
	}
	cfg, err := daemon.Load(configPath(a.config), daemon.Overrides{LibvirtSocket: a.socket, LogLevel: "warn"})
	if err != nil {
		fmt.Fprintf(env.Stderr, "rarp-announce verify: invalid configuration:\n%v\n", err)
		return ExitUsage
	}
	logs, err := app.NewLog(cfg.Log, false) // the one logger, as announce's (level warn)
	if err != nil {
		return failure(env, "verify", err)
	}
	defer logs.Close()
	name, t, devs, done, err := verifyNIC(ctx, cfg, logs.Logger, a)
	if err != nil {
		return failure(env, "verify", err)
	}
	defer done()
	for _, dev := range devs {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return failure(env, "verify", err)
		}
		p := reconverge.Probe{Interface: ifi, VLAN: t.VLANs[0], MAC: t.NIC.MAC, IP: a.ip, Gateway: a.gateway}
		res, err := p.Run(ctx, a.timeout)
		if err != nil {
			return failure(env, "verify", err)
		}
		if res.Answered {
			fmt.Fprintf(env.Stdout, "%s %s: %s answered by %s through %s in %v\n", name, t.NIC.MAC, a.gateway, res.GatewayMAC, dev, res.RTT.Round(time.Microsecond))
			return ExitOK
		}
		fmt.Fprintf(env.Stdout, "%s %s: no answer from %s through %s within %v\n", name, t.NIC.MAC, a.gateway, dev, a.timeout)
	}
	return ExitFailure
}

// verifyArgs are verify's flags, checked.
type verifyArgs struct {
	config, socket, domain string
	ip, gateway            netip.Addr
	mac                    rarp.MAC // zero: the first NIC that can be probed
	timeout                time.Duration
}

// parseVerify parses verify's flags; !ok: exit with code (usage, help).
func parseVerify(env *Env, args []string) (a verifyArgs, code int, ok bool) {
	fs := flagSet(env, "verify", "--domain NAME|UUID --ip IPv4 --gateway IPv4 [--mac MAC] [flags]", verifyExamples)
	var ipS, gwS, macS string
	fs.StringVar(&a.domain, "domain", "", "domain name or UUID, running on this host (required)")
	fs.StringVar(&ipS, "ip", "", "the VM's IPv4 address the request is sent from (required)")
	fs.StringVar(&gwS, "gateway", "", "an IPv4 address on the VM's subnet that answers ARP, such as its router (required)")
	fs.StringVar(&macS, "mac", "", "the NIC to check (default: the first NIC on a bridge or macvtap)")
	fs.DurationVar(&a.timeout, "timeout", time.Second, "how long to wait for the reply")
	fs.StringVar(&a.config, "config", "", "agent config to take the libvirt socket and strategies from")
	fs.StringVar(&a.socket, "libvirt-socket", "", "libvirt unix socket (overrides libvirt.socket)")
	if code, ok := parse(env, fs, args); !ok {
		return a, code, false
	}
	if a.domain == "" || ipS == "" || gwS == "" {
		return a, usageErr(env, "verify", "--domain, --ip and --gateway are required"), false
	}
	var err1, err2 error
	a.ip, err1 = netip.ParseAddr(ipS)
	a.gateway, err2 = netip.ParseAddr(gwS)
	if err1 != nil || err2 != nil || !a.ip.Is4() || !a.gateway.Is4() {
		return a, usageErr(env, "verify", "--ip and --gateway must be IPv4 addresses"), false
	}
	if macS != "" {
		m, err := rarp.ParseMAC(macS)
		if err != nil {
			return a, usageErr(env, "verify", "--mac: "+err.Error()), false
		}
		a.mac = m
	}
	if a.timeout <= 0 {
		return a, usageErr(env, "verify", "--timeout must be > 0"), false
	}
	return a, 0, true
}

// verifyNIC finds the NIC to probe: the domain must run here (a probe
// moves its MAC to this host, like any frame from it), its live XML names
// the NIC, the topology the devices its frames leave on. done releases
// the libvirt connection and the topology.
func verifyNIC(ctx context.Context, cfg *config.Config, log *zap.Logger, a verifyArgs) (name string, t plan.Target, devs []string, done func(), err error) {
	conn, ref, err := openDomain(ctx, cfg, log, a.domain)
	if err != nil {
		return "", t, nil, nil, err
	}
	defer func() {
		if err != nil {
			conn.Close()
		}
	}()
	running, err := conn.DomainRunning(ctx, ref)
	if err != nil {
		return "", t, nil, nil, err
	}
	if !running {
		return "", t, nil, nil, fmt.Errorf("domain %s is not running here: not probed (a probe would move its MAC to this host)", ref.Name)
	}
	xml, err := conn.DomainXML(ctx, ref)
	if err != nil {
		return "", t, nil, nil, err
	}
	dom, err := domxml.Parse(xml)
	if dom == nil {
		return "", t, nil, nil, fmt.Errorf("domain %s: live XML: %w", ref.Name, err)
	}
	uplinks, closeUplinks, err := app.Uplinks()
	if err != nil {
		return "", t, nil, nil, err
	}
	t, devs, err = verifyTarget(plan.Plan(dom, daemon.Settings(cfg).Plan), a.mac, uplinks)
	if err != nil {
		closeUplinks()
		return "", t, nil, nil, fmt.Errorf("domain %s: %w", ref.Name, err)
	}
	return ref.Name, t, devs, func() { closeUplinks(); conn.Close() }, nil
}

// verifyTarget picks the NIC to probe (want, or the first with an uplink)
// and the uplinks to probe it on.
func verifyTarget(targets []plan.Target, want rarp.MAC, uplinks func(plan.Target) []string) (plan.Target, []string, error) {
	for _, t := range targets {
		if want != (rarp.MAC{}) && t.NIC.MAC != want {
			continue
		}
		devs := uplinks(t)
		if len(devs) == 0 {
			if want != (rarp.MAC{}) {
				return t, nil, fmt.Errorf("NIC %s: no uplink found (only NICs on a Linux bridge or a macvtap can be probed)", want)
			}
			continue
		}
		if len(t.VLANs) == 0 {
			t.VLANs = []rarp.VLAN{{}}
		}
		return t, devs, nil
	}
	if want != (rarp.MAC{}) {
		return plan.Target{}, nil, fmt.Errorf("no NIC with MAC %s", want)
	}
	return plan.Target{}, nil, errors.New("no NIC on a Linux bridge with an uplink, or on a macvtap")
}
