package announce

import (
	"encoding/binary"
	"io"
	"sync"
	"time"
)

// PcapWriter writes frames to a classic pcap file (the format tcpdump -w
// writes: microsecond timestamps, link type Ethernet), so a schedule can be
// run as a dry run and read back with tcpdump or tshark. The format is a
// fixed 24-byte header and a 16-byte header per record: the standard library
// does it, no capture library is needed.
type PcapWriter struct {
	mu     sync.Mutex
	w      io.Writer
	header bool
	now    func() time.Time
}

// NewPcapWriter returns a writer that writes the file header before the
// first frame.
func NewPcapWriter(w io.Writer) *PcapWriter {
	return &PcapWriter{w: w, now: time.Now}
}

const (
	pcapMagic       = 0xa1b2c3d4
	pcapLinkEther   = 1
	pcapSnapLen     = 65535
	pcapVersionMaj  = 2
	pcapVersionMin  = 4
	pcapRecordExtra = 16
)

// WriteFrame appends one record stamped with the current time.
func (p *PcapWriter) WriteFrame(frame []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.header {
		var h [24]byte
		binary.LittleEndian.PutUint32(h[0:], pcapMagic)
		binary.LittleEndian.PutUint16(h[4:], pcapVersionMaj)
		binary.LittleEndian.PutUint16(h[6:], pcapVersionMin)
		binary.LittleEndian.PutUint32(h[16:], pcapSnapLen)
		binary.LittleEndian.PutUint32(h[20:], pcapLinkEther)
		if _, err := p.w.Write(h[:]); err != nil {
			return err
		}
		p.header = true
	}
	t := p.now()
	rec := make([]byte, pcapRecordExtra, pcapRecordExtra+len(frame))
	binary.LittleEndian.PutUint32(rec[0:], uint32(t.Unix()))
	binary.LittleEndian.PutUint32(rec[4:], uint32(t.Nanosecond()/1000))
	binary.LittleEndian.PutUint32(rec[8:], uint32(len(frame)))
	binary.LittleEndian.PutUint32(rec[12:], uint32(len(frame)))
	_, err := p.w.Write(append(rec, frame...))
	return err
}

// Opener returns an Opener whose Senders, whatever the interface, all
// write into this file.
func (p *PcapWriter) Opener() Opener {
	return func(string) (Sender, error) { return pcapSender{p}, nil }
}

type pcapSender struct{ p *PcapWriter }

func (s pcapSender) Send(frame []byte) error { return s.p.WriteFrame(frame) }
func (s pcapSender) Close() error            { return nil }
