package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/mdlayher/packet"

	"github.com/rarp-announce/rarp-announce/pkg/announce"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

const queryExamples = `  # Which address do the RARP servers on eth0 give this host?
  rarp-announce query --interface eth0

  # Ask about another MAC, three times, waiting 500 ms for answers each time.
  rarp-announce query -i br0 --mac 52:54:00:12:34:56 --count 3 --timeout 500ms

The request is sent from the interface's own MAC (Ethernet source = sender
hardware address, as rarpd requires) and asks about --mac, so a query never
teaches a switch a MAC that is not this host's. Every answer is printed; the
exit code is 1 when nothing answered.
`

func runQuery(ctx context.Context, env *Env, args []string) int {
	q, code, ok := parseQuery(env, args)
	if !ok {
		return code
	}
	ifname, target, timeout, count := q.ifname, q.target, q.timeout, q.count
	ifi, own, err := ownMAC(ifname)
	if err != nil {
		return failure(env, "query", err)
	}
	if target.IsZero() { // no --mac (a zero --mac is refused)
		target = own
	}

	c, err := packet.Listen(ifi, packet.Raw, rarp.EtherTypeRARP, nil)
	if err != nil {
		return failure(env, "query", fmt.Errorf("%s: open packet socket: %w", ifname, err))
	}
	defer c.Close()
	go func() {
		<-ctx.Done()
		_ = c.SetReadDeadline(time.Unix(1, 0))
	}()
	req := rarp.Announce(target, rarp.VLAN{}) // op 3, spa = tpa = 0.0.0.0
	req.Source, req.SenderHardware = own, own
	frame, err := req.MarshalBinary()
	if err != nil {
		return failure(env, "query", err)
	}
	answers, err := ask(ctx, env, c, frame, target, count, timeout)
	if err != nil {
		return failure(env, "query", fmt.Errorf("%s: %w", ifname, err))
	}
	if ctx.Err() != nil {
		fmt.Fprintln(env.Stderr, "rarp-announce query: interrupted")
		return ExitFailure
	}
	if answers == 0 {
		fmt.Fprintf(env.Stderr, "rarp-announce query: no RARP server answered for %s on %s within %s\n", target, ifname, timeout)
		return ExitFailure
	}
	return ExitOK
}

// queryArgs are query's flags, checked.
type queryArgs struct {
	ifname  string
	target  rarp.MAC // zero: the interface's own
	timeout time.Duration
	count   int
}

// parseQuery parses query's flags; !ok: exit with code (usage, help).
func parseQuery(env *Env, args []string) (q queryArgs, code int, ok bool) {
	fs := flagSet(env, "query", "--interface IF [--mac MAC] [--timeout D] [--count N]", queryExamples)
	var macStr string
	fs.StringVar(&q.ifname, "interface", "", "interface to ask on (required)")
	fs.StringVar(&q.ifname, "i", "", "short for --interface")
	fs.StringVar(&macStr, "mac", "", "MAC to ask about (default: the interface's own)")
	fs.DurationVar(&q.timeout, "timeout", time.Second, "how long to collect answers after each request")
	fs.IntVar(&q.count, "count", 1, "requests to send, one after the other")
	if code, ok := parse(env, fs, args); !ok {
		return q, code, false
	}
	switch {
	case q.ifname == "":
		return q, usageErr(env, "query", "--interface is required"), false
	case q.timeout <= 0:
		return q, usageErr(env, "query", "--timeout must be positive"), false
	case q.count < 1:
		return q, usageErr(env, "query", "--count must be at least 1"), false
	}
	if macStr != "" {
		var err error
		if q.target, err = rarp.ParseMAC(macStr); err != nil {
			return q, usageErr(env, "query", "--mac: "+err.Error()), false
		}
		if err := q.target.ValidateUnicast(); err != nil {
			return q, usageErr(env, "query", "--mac: "+err.Error()), false
		}
	}
	return q, 0, true
}

// ownMAC returns the interface, which must exist and be up, and its MAC.
func ownMAC(ifname string) (*net.Interface, rarp.MAC, error) {
	if _, err := announce.CheckInterface(ifname); err != nil {
		return nil, rarp.MAC{}, fmt.Errorf("interface %w", err)
	}
	// CheckInterface says exists and up; the full lookup gives the MAC.
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, rarp.MAC{}, fmt.Errorf("interface %s: %w", ifname, err)
	}
	own, ok := rarp.MACFrom(ifi.HardwareAddr)
	if !ok {
		return nil, rarp.MAC{}, fmt.Errorf("interface %s has no Ethernet address", ifname)
	}
	return ifi, own, nil
}

// ask sends the request count times and prints each answer about target
// that comes within timeout of its request; it returns how many came.
func ask(ctx context.Context, env *Env, c *packet.Conn, frame []byte, target rarp.MAC, count int, timeout time.Duration) (int, error) {
	bcast := &packet.Addr{HardwareAddr: net.HardwareAddr(rarp.Broadcast[:])}
	answers := 0
	buf := make([]byte, 1514)
	for i := 0; i < count && ctx.Err() == nil; i++ {
		sent := time.Now()
		if _, err := c.WriteTo(frame, bcast); err != nil {
			return answers, fmt.Errorf("send: %w", err)
		}
		if err := c.SetReadDeadline(sent.Add(timeout)); err != nil {
			return answers, err
		}
		for {
			n, _, err := c.ReadFrom(buf)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			if err != nil {
				return answers, fmt.Errorf("receive: %w", err)
			}
			took := time.Since(sent)
			var f rarp.Frame
			if f.UnmarshalBinary(buf[:n]) != nil || f.Operation != rarp.OpReverseReply || f.TargetHardware != target {
				continue
			}
			answers++
			fmt.Fprintf(env.Stdout, "%s is %s: server %s %s, %s\n", target, ipOrZero(f.TargetIP),
				f.SenderHardware, ipOrZero(f.SenderIP), took.Round(time.Microsecond))
		}
	}
	return answers, nil
}

func ipOrZero(a netip.Addr) string {
	if !a.IsValid() {
		return "0.0.0.0"
	}
	return a.String()
}
