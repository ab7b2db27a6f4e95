package rarptable

import (
	"bytes"
	"fmt"
	"net/netip"
	"strings"

	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// record is one mapping as a file states it, before host names resolve.
type record struct {
	mac   rarp.MAC
	ip    [4]byte
	host  string // non-empty: a name to resolve at load instead of ip
	iface string // non-empty: the mapping applies on this interface only
	line  int
}

// parseEthers reads ethers(5) text: one "MAC address-or-host-name" per
// line, '#' starts a comment, blank lines are skipped. MACs are written as
// glibc's ether_line reads them (six colon-separated groups of one or two
// hex digits) or in any 48-bit form net.ParseMAC accepts. The second field
// is an IPv4 literal (dotted quad) or a host name, resolved later. Every
// bad line is added to p with its file and line.
func parseEthers(file string, data []byte, p *problems) []record {
	// One record per line is a good guess for ethers files: it saves the
	// append doublings on a million-line table.
	recs := make([]record, 0, bytes.Count(data, []byte{'\n'})+1)
	line := 0
	for len(data) > 0 {
		line++
		var l []byte
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			l, data = data[:i], data[i+1:]
		} else {
			l, data = data, nil
		}
		if i := bytes.IndexByte(l, '#'); i >= 0 {
			l = l[:i]
		}
		f1, rest := nextField(l)
		if len(f1) == 0 {
			continue // blank or comment-only line
		}
		f2, rest := nextField(rest)
		if extra, _ := nextField(rest); len(extra) > 0 {
			p.add(file, line, "unexpected %q after the address (ethers lines are \"MAC address-or-host\")", extra)
			continue
		}
		mac, err := parseMAC(f1)
		if err != nil {
			p.add(file, line, "%v", err)
			continue
		}
		if len(f2) == 0 {
			p.add(file, line, "MAC %s has no IPv4 address or host name", mac)
			continue
		}
		r := record{mac: mac, line: line}
		if ip, ok := parseIPv4(f2); ok {
			r.ip = ip
		} else if host, err := checkHost(f2); err != nil {
			p.add(file, line, "%v", err)
			continue
		} else {
			r.host = host
		}
		recs = append(recs, r)
	}
	return recs
}

// nextField splits off the first run of non-blank bytes.
func nextField(b []byte) (field, rest []byte) {
	i := 0
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	j := i
	for j < len(b) && !isSpace(b[j]) {
		j++
	}
	return b[i:j], b[j:]
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f' }

// parseMAC reads the colon form with one or two hex digits per group (as
// glibc's ether_line does, so "0:1:2:a:b:c" works) without allocating, and
// falls back to rarp.ParseMAC for the hyphen and dot forms.
func parseMAC(b []byte) (rarp.MAC, error) {
	var m rarp.MAC
	ok := true
	i := 0
	for g := 0; g < 6 && ok; g++ {
		v, n := 0, 0
		for i < len(b) && n < 3 {
			d := unhex(b[i])
			if d < 0 {
				break
			}
			v = v<<4 | d
			i++
			n++
		}
		switch {
		case n == 0 || n > 2:
			ok = false
		case g < 5:
			if i >= len(b) || b[i] != ':' {
				ok = false
			}
			i++
		case i != len(b):
			ok = false
		}
		m[g] = byte(v)
	}
	if !ok {
		var err error
		if m, err = rarp.ParseMAC(string(b)); err != nil {
			return m, fmt.Errorf("%q is not a MAC address", b)
		}
	}
	if err := m.ValidateUnicast(); err != nil {
		return m, fmt.Errorf("MAC %v: no RARP request can ask for it", err)
	}
	return m, nil
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// parseIPv4 reads a strict dotted quad (no leading zeros: inet_aton would
// read them as octal) without allocating.
func parseIPv4(b []byte) (ip [4]byte, ok bool) {
	i := 0
	for k := 0; k < 4; k++ {
		if k > 0 {
			if i >= len(b) || b[i] != '.' {
				return ip, false
			}
			i++
		}
		v, n := 0, 0
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			if n > 0 && v == 0 {
				return ip, false // leading zero
			}
			v = v*10 + int(b[i]-'0')
			i++
			n++
			if v > 255 {
				return ip, false
			}
		}
		if n == 0 {
			return ip, false
		}
		ip[k] = byte(v)
	}
	return ip, i == len(b)
}

// checkHost accepts a host name to resolve at load time and explains why
// anything else (an IPv6 or malformed numeric address, odd characters) is
// not one.
func checkHost(b []byte) (string, error) {
	s := string(b)
	if a, err := netip.ParseAddr(s); err == nil {
		if a.Is6() && !a.Is4In6() {
			return "", fmt.Errorf("%s is an IPv6 address: RARP answers with IPv4 addresses only", s)
		}
		return "", fmt.Errorf("%q is not a plain IPv4 address", s)
	}
	numeric := true
	for _, c := range b {
		if !('0' <= c && c <= '9' || c == '.' || c == 'x' || c == 'X') {
			numeric = false
			break
		}
	}
	if numeric || strings.Contains(s, ":") {
		return "", fmt.Errorf("%q is not an IPv4 address (write a dotted quad such as 192.0.2.10, without leading zeros)", s)
	}
	if len(s) > 253 {
		return "", fmt.Errorf("host name of %d characters is too long (max 253)", len(s))
	}
	for _, c := range b {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_') {
			return "", fmt.Errorf("%q is neither an IPv4 address nor a host name", s)
		}
	}
	return s, nil
}
