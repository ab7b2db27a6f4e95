// Package ipsource finds the IP addresses to announce for a VM's NIC, from
// sources tried in order, each switchable: Nova's metadata in the domain
// XML (pkg/domxml), a static per-MAC map, and addresses learned on the host
// from the VM's own traffic (Learner). A Claims registry then refuses an
// address another local running NIC holds and caps the addresses per NIC,
// so one VM can never make the host announce another's IP.
package ipsource

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"

	"github.com/rarp-announce/rarp-announce/pkg/ipannounce"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// Static is a per-MAC map of addresses, read with ParseStatic.
type Static map[rarp.MAC][]netip.Addr

// ParseStatic reads the static map format, one NIC per line:
//
//	# comment; blank lines are ignored
//	52:54:00:66:00:10  10.66.0.10  fd66::10
//	fa:16:3e:00:00:01  192.0.2.7   # trailing comment
//
// A MAC (any form net.ParseMAC accepts, 48-bit, unicast) then one or more
// IPv4/IPv6 addresses that a host may own. A MAC may appear on one line
// only, an address on one MAC only: the map is the operator's statement of
// who owns what, a contradiction in it is a mistake to report, not to
// resolve. Errors name the file and line ("name:3: ...").
func ParseStatic(r io.Reader, name string) (Static, error) {
	m := Static{}
	owner := map[netip.Addr]rarp.MAC{}
	firstLine := map[rarp.MAC]int{}
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		mac, err := rarp.ParseMAC(fields[0])
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, n, err)
		}
		if err := mac.ValidateUnicast(); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, n, err)
		}
		if l, dup := firstLine[mac]; dup {
			return nil, fmt.Errorf("%s:%d: %s already listed on line %d", name, n, mac, l)
		}
		firstLine[mac] = n
		if len(fields) == 1 {
			return nil, fmt.Errorf("%s:%d: %s: no address", name, n, mac)
		}
		for _, f := range fields[1:] {
			ip, err := netip.ParseAddr(f)
			if err != nil {
				return nil, fmt.Errorf("%s:%d: %q is not an IPv4 or IPv6 address", name, n, f)
			}
			if err := ipannounce.ValidateIP(ip); err != nil {
				return nil, fmt.Errorf("%s:%d: %w", name, n, err)
			}
			if o, dup := owner[ip]; dup {
				if o == mac {
					return nil, fmt.Errorf("%s:%d: %s listed twice", name, n, ip)
				}
				return nil, fmt.Errorf("%s:%d: %s already belongs to %s (line %d)", name, n, ip, o, firstLine[o])
			}
			owner[ip] = mac
			m[mac] = append(m[mac], ip)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s:%d: %w", name, n+1, err)
	}
	return m, nil
}

// LoadStatic reads a static map file.
func LoadStatic(path string) (Static, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParseStatic(f, path)
}
