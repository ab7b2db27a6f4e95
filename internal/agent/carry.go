package agent

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/rarp-announce/rarp-announce/pkg/domxml"
	"github.com/rarp-announce/rarp-announce/pkg/ipsource"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// MetadataWriter writes elem, our <metadata> element
// (domxml.MarshalAddresses), into a running domain's live XML
// (virDomainSetMetadata, AFFECT_LIVE, namespace domxml.AddressesNamespace),
// which travels with the domain when it migrates. It needs libvirt's
// read-write socket; on a read-only one its error wraps ErrMetadataDenied.
type MetadataWriter func(ctx context.Context, domainUUID string, elem []byte) error

// ErrMetadataDenied is what a MetadataWriter's error wraps when libvirt
// refuses to write at all (a read-only connection): carrying is then off
// for good, the learned addresses stay on this host.
var ErrMetadataDenied = errors.New("metadata write denied")

// carryTimeout bounds one metadata write.
const carryTimeout = 5 * time.Second

// CarryOptions configure carrying learned addresses with the domain.
type CarryOptions struct {
	Write MetadataWriter
	// Every is the shortest time between two writes for one domain: a
	// change within it is written when it ends (the latest state, once).
	Every time.Duration
	// PerNIC bounds the addresses written per NIC (max_ips_per_nic).
	PerNIC int
	// MaxAge drops an address from the element once it was last seen
	// that long ago (ip_announce.learned_max_age; 0: never), whether
	// learned here or carried in: each address carries its last sighting
	// (domxml.Address.Seen), so a destination is not handed an address
	// the guest stopped showing (a VIP that moved to another VM), however
	// often the domain moves or pauses.
	MaxAge time.Duration
}

// carrier writes what the learners learned on a domain's NICs into the
// domain's live XML, only on change and at most once per Every per domain,
// so the destination of a migration knows the addresses at landing (the
// carried source). What the domain carried in when it landed here is kept
// in the element unless the NIC's own learned addresses fill it.
type carrier struct {
	o       CarryOptions
	learned *ipsource.Learned
	m       *IPMetrics
	log     *zap.Logger

	mu   sync.Mutex
	off  bool // denied: local only from now on (logged once)
	doms map[string]*carryDom
}

type carryDom struct {
	name string
	macs []rarp.MAC
	in   map[rarp.MAC][]domxml.Address // carried in at landing
	last []byte                        // what the XML holds, as far as we know
	at   time.Time                     // last write
	t    *time.Timer                   // a write due
	// renew rewrites the element when an address in it ages out.
	renew *time.Timer
	// fails counts failed writes in a row: retried Every later, up to
	// carryRetries, then at the next change.
	fails int
}

// carryRetries bounds the retries of a failed write.
const carryRetries = 3

func newCarrier(o CarryOptions, learned *ipsource.Learned, m *IPMetrics, log *zap.Logger) *carrier {
	if o.Write == nil || learned == nil {
		return nil
	}
	return &carrier{o: o, learned: learned, m: m, log: log, doms: map[string]*carryDom{}}
}

// track notes mac as one of the domain's learning NICs; dom's XML says
// what it carries already.
func (c *carrier) track(dom *domxml.Domain, mac rarp.MAC) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	d := c.doms[dom.UUID]
	if d == nil {
		in, _ := dom.CarriedAddresses() // bad entries were reported by Resolve
		d = &carryDom{name: dom.Name, in: in}
		if in != nil {
			d.last = domxml.MarshalAddresses(in)
			// An element without seen times (an older agent's), or
			// with one in the future (a host whose clock ran ahead, a
			// hand edit, which would never age out and be carried on
			// by every later host): they age from now, and the next
			// write says so.
			now := time.Now()
			for _, as := range in {
				for i := range as {
					if as[i].Seen.IsZero() || as[i].Seen.After(now) {
						as[i].Seen = now
					}
				}
			}
			// Dropped from the element when they age out, even if
			// the guest never shows an address here.
			_, until := c.state(d)
			c.renewAt(dom.UUID, d, until)
		}
		c.doms[dom.UUID] = d
	}
	if !slices.Contains(d.macs, mac) {
		d.macs = append(d.macs, mac)
	}
}

// changed schedules a write of the domain's addresses: now if none was
// written within Every, else when Every has passed since the last.
func (c *carrier) changed(uuid string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	d := c.doms[uuid]
	if d == nil || d.t != nil || c.off {
		return
	}
	wait := time.Until(d.at.Add(c.o.Every))
	d.t = time.AfterFunc(max(wait, 0), func() { c.flush(uuid, d) })
}

// drop forgets a domain that left or stopped; a write due is not made.
func (c *carrier) drop(uuid string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if d := c.doms[uuid]; d != nil {
		if d.t != nil {
			d.t.Stop()
		}
		if d.renew != nil {
			d.renew.Stop()
		}
	}
	delete(c.doms, uuid)
}

// renewAt has the domain's state looked at again at until (zero: never),
// when something in its element ages out; the latest call wins.
func (c *carrier) renewAt(uuid string, d *carryDom, until time.Time) {
	if d.renew != nil {
		d.renew.Stop()
		d.renew = nil
	}
	if !until.IsZero() {
		d.renew = time.AfterFunc(max(time.Until(until), 0), func() { c.changed(uuid) })
	}
}

// state is the element for d now: per NIC, what was learned here first,
// then what it carried in, each address with its latest sighting, those
// seen within MaxAge, at most PerNIC; and when the first of them ages out
// (zero: none will).
func (c *carrier) state(d *carryDom) (elem []byte, until time.Time) {
	now := time.Now()
	pick := func(as []domxml.Address) []domxml.Address {
		var out []domxml.Address
		for _, a := range as {
			if a.Expired(now, c.o.MaxAge) {
				continue // aged out
			}
			if i := slices.IndexFunc(out, func(o domxml.Address) bool { return o.IP == a.IP }); i >= 0 {
				if a.Seen.After(out[i].Seen) {
					out[i].Seen = a.Seen
				}
				continue
			}
			if len(out) < c.o.PerNIC {
				out = append(out, a)
			}
		}
		for _, a := range out {
			if c.o.MaxAge > 0 && (until.IsZero() || a.Seen.Add(c.o.MaxAge).Before(until)) {
				until = a.Seen.Add(c.o.MaxAge)
			}
		}
		return out
	}
	m := map[rarp.MAC][]domxml.Address{}
	for _, mac := range d.macs {
		if as := pick(append(c.learned.Fresh(mac), d.in[mac]...)); len(as) > 0 {
			m[mac] = as
		}
	}
	for mac, in := range d.in { // a NIC not learning here keeps its entry
		if slices.Contains(d.macs, mac) {
			continue
		}
		if as := pick(in); len(as) > 0 {
			m[mac] = as
		}
	}
	return domxml.MarshalAddresses(m), until
}

func (c *carrier) flush(uuid string, d *carryDom) {
	c.mu.Lock()
	if c.doms[uuid] != d || c.off {
		c.mu.Unlock()
		return
	}
	d.t = nil
	elem, until := c.state(d)
	c.renewAt(uuid, d, until)
	if bytes.Equal(elem, d.last) {
		c.mu.Unlock()
		return
	}
	d.at = time.Now()
	name := d.name
	c.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), carryTimeout)
	err := c.o.Write(ctx, uuid, elem)
	cancel()
	log := c.log.With(zap.String("domain", name), zap.String("uuid", uuid))
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case err == nil:
		c.m.carry("ok")
		d.last, d.fails = elem, 0
		log.Info("learned addresses written into the domain's live XML; they travel with it", zap.ByteString("metadata", elem))
	case errors.Is(err, ErrMetadataDenied):
		c.m.carry("denied")
		if !c.off {
			c.off = true
			c.log.Warn("libvirt refuses to write the domain's metadata (read-only socket?): learned addresses stay on this host, a migration's destination will not know them", zap.Error(err))
		}
	default:
		c.m.carry("error")
		d.fails++
		if d.fails <= carryRetries && c.doms[uuid] == d && d.t == nil {
			d.t = time.AfterFunc(c.o.Every, func() { c.flush(uuid, d) })
			log.Warn("learned addresses not written into the domain's live XML; trying again", zap.Duration("in", c.o.Every), zap.Error(err))
			return
		}
		log.Warn("learned addresses not written into the domain's live XML; tried again at the next change", zap.Error(err))
	}
}
