package rarptable

import (
	"fmt"
	"net/netip"
	"sort"
	"sync/atomic"

	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// Entry is one mapping: a MAC and the IPv4 addresses it maps to.
type Entry struct {
	MAC rarp.MAC
	// IPs are the addresses in the order the file or the resolver gave
	// them. A responder answers with the first one on the receiving
	// interface's subnet, as rarpd does with a host name that has several.
	IPs []netip.Addr
	// Interface restricts the mapping to requests received on that
	// interface; "" means any interface.
	Interface string
	// Source names where the mapping comes from, "file:line", for logs.
	Source string
}

// slot locates one mapping's addresses in Table.addrs and its source line.
// file is 32 bits wide: NewTable gives every entry a source of its own
// ("entry 70000", "api:70000"), and a 16-bit index wrapped past 65,536 of
// them, naming another entry's source in the logs.
type slot struct {
	off  uint32 // first address in Table.addrs
	line uint32 // line in Table.files[file]
	file uint32 // index in Table.files
	n    uint16 // number of addresses
}

// Table is an immutable MAC -> IPv4 mapping. Lookups never allocate and
// are safe from any number of goroutines.
type Table struct {
	any   map[rarp.MAC]slot            // mappings for every interface
	byIf  map[string]map[rarp.MAC]slot // mappings restricted to one interface
	addrs [][4]byte
	files []string
	n     int
}

// View is the part of a table that applies to one interface: its own
// mappings first, then the ones for every interface. A responder takes a
// View once per batch of frames, so each lookup is one or two map reads.
type View struct {
	own, any map[rarp.MAC]slot
	addrs    [][4]byte
}

// Len is the number of mappings.
func (t *Table) Len() int {
	if t == nil {
		return 0
	}
	return t.n
}

// View returns the mappings that apply on interface ifname.
func (t *Table) View(ifname string) View {
	if t == nil {
		return View{}
	}
	return View{own: t.byIf[ifname], any: t.any, addrs: t.addrs}
}

// Lookup returns the IPv4 addresses mac maps to on ifname, or nil.
func (t *Table) Lookup(ifname string, mac rarp.MAC) [][4]byte {
	v := t.View(ifname)
	return v.Lookup(mac)
}

// Lookup returns the IPv4 addresses mac maps to, or nil. The slice is
// shared with the table: do not modify it.
func (v View) Lookup(mac rarp.MAC) [][4]byte {
	s, ok := v.own[mac]
	if !ok {
		if s, ok = v.any[mac]; !ok {
			return nil
		}
	}
	return v.addrs[s.off : s.off+uint32(s.n) : s.off+uint32(s.n)]
}

// Interfaces lists the interfaces that have mappings of their own, sorted.
func (t *Table) Interfaces() []string {
	if t == nil {
		return nil
	}
	out := make([]string, 0, len(t.byIf))
	for k := range t.byIf {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Source returns where the mapping mac has on ifname comes from
// ("file:line"), or "" when there is none. It is meant for logs.
func (t *Table) Source(ifname string, mac rarp.MAC) string {
	if t == nil {
		return ""
	}
	s, ok := t.byIf[ifname][mac]
	if !ok {
		if s, ok = t.any[mac]; !ok {
			return ""
		}
	}
	if s.line == 0 {
		return t.files[s.file]
	}
	return fmt.Sprintf("%s:%d", t.files[s.file], s.line)
}

// builder assembles a Table. Mappings added first win: a later one for the
// same MAC and interface is reported through dup.
type builder struct {
	t       *Table
	fileIdx map[string]uint32
}

func newBuilder(sizeHint int) *builder {
	return &builder{
		t: &Table{
			any:   make(map[rarp.MAC]slot, sizeHint),
			byIf:  map[string]map[rarp.MAC]slot{},
			addrs: make([][4]byte, 0, sizeHint),
		},
		fileIdx: map[string]uint32{},
	}
}

func (b *builder) file(name string) uint32 {
	if i, ok := b.fileIdx[name]; ok {
		return i
	}
	i := uint32(len(b.t.files))
	b.t.files = append(b.t.files, name)
	b.fileIdx[name] = i
	return i
}

// add inserts a mapping unless one exists for the same MAC and interface;
// then it returns the existing one's source and false.
func (b *builder) add(mac rarp.MAC, iface string, ips [][4]byte, file uint32, line int) (prevFile string, prevLine int, ok bool) {
	m := b.t.any
	if iface != "" {
		if m = b.t.byIf[iface]; m == nil {
			m = map[rarp.MAC]slot{}
			b.t.byIf[iface] = m
		}
	}
	if s, dup := m[mac]; dup {
		return b.t.files[s.file], int(s.line), false
	}
	s := slot{off: uint32(len(b.t.addrs)), n: uint16(len(ips)), file: file, line: uint32(line)}
	b.t.addrs = append(b.t.addrs, ips...)
	m[mac] = s
	b.t.n++
	return "", 0, true
}

// maxAddrs bounds the addresses kept per mapping (a name with hundreds of
// A records would otherwise make every off-link check long).
const maxAddrs = 64

// NewTable builds a table from entries. Two entries for the same MAC and
// interface, an entry without an IPv4 address or with a group MAC are
// errors.
func NewTable(entries []Entry) (*Table, error) {
	b := newBuilder(len(entries))
	var p problems
	for i, e := range entries {
		src := e.Source
		if src == "" {
			src = fmt.Sprintf("entry %d", i+1)
		}
		if err := e.MAC.ValidateUnicast(); err != nil {
			p.add(src, 0, "MAC %v", err)
			continue
		}
		var ips [][4]byte
		for _, a := range e.IPs {
			if !a.Is4() && !a.Is4In6() {
				p.add(src, 0, "%s is not an IPv4 address", a)
				continue
			}
			if len(ips) < maxAddrs {
				ips = append(ips, a.Unmap().As4())
			}
		}
		if len(ips) == 0 {
			p.add(src, 0, "MAC %s has no IPv4 address", e.MAC)
			continue
		}
		if e.Interface != "" {
			if err := CheckInterfaceName(e.Interface); err != nil {
				p.add(src, 0, "interface: %v", err)
				continue
			}
		}
		if prev, _, ok := b.add(e.MAC, e.Interface, ips, b.file(src), 0); !ok {
			p.add(src, 0, "second mapping for %s%s (first: %s)", e.MAC, onIface(e.Interface), prev)
		}
	}
	if err := p.err(); err != nil {
		return nil, err
	}
	return b.t, nil
}

func onIface(s string) string {
	if s == "" {
		return ""
	}
	return " on " + s
}

// Holder is the table a responder serves from. Reloads build a new table
// aside and Store it; a request in flight keeps the table it loaded, so
// every request is answered from the old or the new table, never from a
// half-built one.
type Holder struct {
	p atomic.Pointer[Table]
}

// NewHolder returns a Holder serving t (nil: an empty table).
func NewHolder(t *Table) *Holder {
	h := &Holder{}
	h.Store(t)
	return h
}

// Load returns the current table. It is never nil.
func (h *Holder) Load() *Table {
	if t := h.p.Load(); t != nil {
		return t
	}
	return empty
}

// Store makes t the current table (nil: an empty table).
func (h *Holder) Store(t *Table) {
	if t == nil {
		t = empty
	}
	h.p.Store(t)
}

var empty = &Table{any: map[rarp.MAC]slot{}, byIf: map[string]map[rarp.MAC]slot{}}
