package rarptable

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sort"
	"time"

	"golang.org/x/sync/errgroup"
)

// Files names the table's sources. Either may be empty, not both.
type Files struct {
	// Ethers is an ethers(5) file, such as /etc/ethers.
	Ethers string
	// Map is a YAML mapping file (see the package documentation of the
	// format in yamlmap.go); its mappings win over the ethers file's.
	Map string
}

// Paths lists the files that are set.
func (f Files) Paths() []string {
	var out []string
	if f.Map != "" {
		out = append(out, f.Map)
	}
	if f.Ethers != "" {
		out = append(out, f.Ethers)
	}
	return out
}

// Loader builds tables from files.
type Loader struct {
	Files Files
	// Resolver resolves host names (nil: net.DefaultResolver, which reads
	// /etc/nsswitch.conf and /etc/hosts and asks DNS).
	Resolver *net.Resolver
	// ResolveTimeout bounds the resolution of all names of one load
	// (0: 10 s). A name that does not resolve in time is a problem like
	// any other: the load fails and the old table stays.
	ResolveTimeout time.Duration
	// Parallel is how many names are resolved at once (0: 16).
	Parallel int
}

// Result is a loaded table and what was noticed while loading it.
type Result struct {
	Table *Table
	// Warnings are lines that were not used but did not fail the load:
	// a second ethers line for the same MAC (the first wins, as with
	// glibc's ether_ntohost), an ethers line that the map overrides.
	Warnings []Problem
	// Names is how many distinct host names were resolved.
	Names    int
	Duration time.Duration
}

// Load reads, parses and resolves the files and builds a table. On any
// problem it returns a *LoadError listing them all ("file:line: reason")
// and no table.
func (l *Loader) Load(ctx context.Context) (*Result, error) {
	start := time.Now()
	if l.Files.Ethers == "" && l.Files.Map == "" {
		return nil, errors.New("no table file: give an ethers file, a map file or both")
	}
	var p problems
	var mapRecs, ethRecs []record
	if f := l.Files.Map; f != "" {
		if data, err := os.ReadFile(f); err != nil {
			p.addTransient(f, 0, "%v", unwrapPathError(err))
		} else {
			mapRecs = parseMap(f, data, &p)
		}
	}
	if f := l.Files.Ethers; f != "" {
		if data, err := os.ReadFile(f); err != nil {
			p.addTransient(f, 0, "%v", unwrapPathError(err))
		} else {
			ethRecs = parseEthers(f, data, &p)
		}
	}
	if err := p.err(); err != nil {
		return nil, err
	}
	names := l.resolve(ctx, mapRecs, ethRecs, &p)
	if err := p.err(); err != nil {
		return nil, err
	}

	b := newBuilder(len(mapRecs) + len(ethRecs))
	var warn problems
	if f := l.Files.Map; f != "" {
		fi := b.file(f)
		for i := range mapRecs {
			r := &mapRecs[i]
			b.add(r.mac, r.iface, addrsOf(r, names), fi, r.line) // parseMap refused second mappings
		}
	}
	if f := l.Files.Ethers; f != "" {
		fi := b.file(f)
		for i := range ethRecs {
			r := &ethRecs[i]
			if file, line, ok := b.add(r.mac, "", addrsOf(r, names), fi, r.line); !ok {
				if file == f {
					warn.add(f, r.line, "%s is also on line %d, which wins (as in glibc)", r.mac, line)
				} else {
					warn.add(f, r.line, "%s is overridden by %s:%d", r.mac, file, line)
				}
			}
		}
	}
	res := &Result{Table: b.t, Warnings: warn.list, Names: len(names), Duration: time.Since(start)}
	if warn.dropped > 0 {
		res.Warnings = append(res.Warnings, Problem{File: l.Files.Ethers, Reason: fmt.Sprintf("%d further warnings not listed", warn.dropped)})
	}
	return res, nil
}

func addrsOf(r *record, names map[string][][4]byte) [][4]byte {
	if r.host != "" {
		return names[r.host]
	}
	return [][4]byte{r.ip}
}

// resolve looks every distinct host name up once, a few at a time, and
// reports each record whose name has no IPv4 address.
func (l *Loader) resolve(ctx context.Context, mapRecs, ethRecs []record, p *problems) map[string][][4]byte {
	var hosts []string
	seen := map[string]bool{}
	for _, recs := range [][]record{mapRecs, ethRecs} {
		for i := range recs {
			if h := recs[i].host; h != "" && !seen[h] {
				seen[h] = true
				hosts = append(hosts, h)
			}
		}
	}
	if len(hosts) == 0 {
		return nil
	}
	resolver := l.Resolver
	if resolver == nil {
		resolver = net.DefaultResolver
	}
	timeout := l.ResolveTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	parallel := l.Parallel
	if parallel <= 0 {
		parallel = 16
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	type answer struct {
		ips [][4]byte
		err error
	}
	answers := make([]answer, len(hosts))
	var g errgroup.Group
	g.SetLimit(parallel)
	for i, h := range hosts {
		g.Go(func() error {
			addrs, err := resolver.LookupNetIP(ctx, "ip4", h)
			var ips [][4]byte
			for _, a := range addrs {
				if a = a.Unmap(); a.Is4() && len(ips) < maxAddrs && !contains(ips, a) {
					ips = append(ips, a.As4())
				}
			}
			if err == nil && len(ips) == 0 {
				err = errors.New("no IPv4 address")
			}
			answers[i] = answer{ips, err}
			return nil // failures are per host, in answers
		})
	}
	_ = g.Wait()

	names := make(map[string][][4]byte, len(hosts))
	failed := map[string]error{}
	for i, h := range hosts {
		if answers[i].err != nil {
			failed[h] = answers[i].err
			continue
		}
		names[h] = answers[i].ips
	}
	if len(failed) > 0 {
		type bad struct {
			file string
			line int
			host string
		}
		var list []bad
		for f, recs := range map[string][]record{l.Files.Map: mapRecs, l.Files.Ethers: ethRecs} {
			for i := range recs {
				if _, ok := failed[recs[i].host]; ok && recs[i].host != "" {
					list = append(list, bad{f, recs[i].line, recs[i].host})
				}
			}
		}
		sort.Slice(list, func(i, j int) bool {
			if list[i].file != list[j].file {
				return list[i].file < list[j].file
			}
			return list[i].line < list[j].line
		})
		for _, b := range list {
			p.addTransient(b.file, b.line, "host %q does not resolve to an IPv4 address: %v", b.host, resolveReason(failed[b.host]))
		}
	}
	return names
}

func contains(ips [][4]byte, a netip.Addr) bool {
	for _, x := range ips {
		if x == a.As4() {
			return true
		}
	}
	return false
}

// resolveReason turns a resolver error into its short reason (the
// *net.DNSError text repeats the name).
func resolveReason(err error) string {
	var de *net.DNSError
	if errors.As(err, &de) {
		if de.IsNotFound {
			return "no such host"
		}
		if de.IsTimeout {
			return "lookup timed out"
		}
		return de.Err
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "lookup timed out"
	}
	return err.Error()
}

// unwrapPathError drops the path from an *os.PathError: the Problem
// already names the file.
func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("cannot %s: %w", pe.Op, pe.Err)
	}
	return err
}
