package responder

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/rarp-announce/rarp-announce/internal/frametest"
	"github.com/rarp-announce/rarp-announce/pkg/rarp"
	"github.com/rarp-announce/rarp-announce/pkg/rarptable"
)

// The request and Debian rarpd's reply captured by the peer harness
// (test/peer/reference/capture-reference.txt): rarpd on peer0
// (02:00:0a:63:ff:fe, 10.99.255.254/16) answers 52:54:00:00:00:01 ->
// 10.99.0.1.
const (
	refRequest = "ffffffffffff525400000001803500010800060400035254000000010000000052540000000100000000"
)

func table(t testing.TB, lines ...string) *rarptable.Table {
	t.Helper()
	var entries []rarptable.Entry
	for _, l := range lines {
		f := strings.Fields(l)
		e := rarptable.Entry{MAC: rarp.MustParseMAC(f[0])}
		for _, a := range f[1:] {
			if strings.HasPrefix(a, "@") {
				e.Interface = a[1:]
				continue
			}
			e.IPs = append(e.IPs, netip.MustParseAddr(a))
		}
		entries = append(entries, e)
	}
	tb, err := rarptable.NewTable(entries)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

// peer0 is the interface rarpd answered from in the reference capture.
func peer0(t testing.TB) *ifState {
	return &ifState{mac: rarp.MustParseMAC("02:00:0a:63:ff:fe"), addrs: []ifAddr{{local: 0x0a63fffe, prefix: 0x0a630000, mask: 0xffff0000}}}
}

// request builds a request: Ethernet source src, sha, tha.
func request(t testing.TB, src, sha, tha string) []byte {
	t.Helper()
	f := rarp.Announce(rarp.MustParseMAC(tha), rarp.VLAN{})
	f.Source, f.SenderHardware = rarp.MustParseMAC(src), rarp.MustParseMAC(sha)
	b, err := f.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestReplyIsByteForByteRarpds(t *testing.T) {
	req := frametest.Hex(t, refRequest)
	want := frametest.Hex(t, "5254 0000 0001 0200 0a63 fffe 8035 0001 0800 0604 0004 0200 0a63 fffe 0a63 fffe 5254 0000 0001 0a63 0001")
	v := table(t, "52:54:00:00:00:01 10.99.0.1").View("peer0")
	out := make([]byte, snapLen)
	d := decide(req, peer0(t), &v, &rules{}, out)
	if d.out != outReply {
		t.Fatalf("outcome %d, want a reply", d.out)
	}
	if !bytes.Equal(out[:ReplyLen], want) {
		t.Fatalf("reply\n got %x\nwant %x", out[:ReplyLen], want)
	}
	// The same request padded to 60 bytes, as QEMU and most stacks send it.
	padded := request(t, "52:54:00:00:00:01", "52:54:00:00:00:01", "52:54:00:00:00:01")
	clear(out)
	if d := decide(padded, peer0(t), &v, &rules{}, out); d.out != outReply || !bytes.Equal(out[:ReplyLen], want) {
		t.Fatalf("padded request: outcome %d reply %x", d.out, out[:ReplyLen])
	}
	// And the reply decodes as a RARP reply.
	var f rarp.Frame
	if err := f.UnmarshalBinary(out[:ReplyLen]); err != nil || f.Operation != rarp.OpReverseReply || f.TargetIP != netip.MustParseAddr("10.99.0.1") {
		t.Fatalf("reply decodes as %v, %v", &f, err)
	}
}

func TestDecideRules(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"0A630001", "0A630002.SUN4M", "0a630003", "0A63000", "README"} {
		if err := os.WriteFile(filepath.Join(dir, n), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	boot, err := newBootDir(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	tb := table(t,
		"52:54:00:00:00:01 10.99.0.1",
		"52:54:00:00:00:02 10.99.0.2",
		"52:54:00:00:00:03 10.99.0.3",
		"52:54:00:00:00:04 192.0.2.4",              // off-link
		"52:54:00:00:00:05 192.0.2.5 10.99.0.5",    // several: the on-link one
		"52:54:00:00:00:06 192.0.2.6 198.51.100.6", // several, all off-link
		"52:54:00:00:00:07 10.99.0.7 @peer0",
		"52:54:00:00:00:07 10.99.0.77",
		"52:54:00:00:00:08 10.88.0.8 @other",
	)
	cases := []struct {
		name        string
		frame       []byte
		r           rules
		out         outcome
		reason      string
		spa, tpa    string
		replyToSelf bool
	}{
		{name: "known", frame: request(t, "52:54:00:00:00:01", "52:54:00:00:00:01", "52:54:00:00:00:01"), out: outReply, spa: "10.99.255.254", tpa: "10.99.0.1"},
		{name: "third party", frame: request(t, "02:00:00:00:00:aa", "02:00:00:00:00:aa", "52:54:00:00:00:02"), out: outReply, spa: "10.99.255.254", tpa: "10.99.0.2"},
		{name: "unknown", frame: request(t, "52:54:00:00:00:99", "52:54:00:00:00:99", "52:54:00:00:00:99"), out: outUnknown},
		{name: "source differs from sha", frame: request(t, "02:00:00:00:00:aa", "52:54:00:00:00:01", "52:54:00:00:00:01"), out: outMalformed, reason: "sender_mismatch"},
		{name: "broadcast source", frame: request(t, "ff:ff:ff:ff:ff:ff", "ff:ff:ff:ff:ff:ff", "52:54:00:00:00:01"), out: outMalformed, reason: "bad_source"},
		{name: "multicast source", frame: request(t, "01:00:5e:00:00:01", "01:00:5e:00:00:01", "52:54:00:00:00:01"), out: outMalformed, reason: "bad_source"},
		{name: "group bit on a local address", frame: request(t, "03:00:00:00:00:01", "03:00:00:00:00:01", "52:54:00:00:00:01"), out: outMalformed, reason: "bad_source"},
		{name: "zero source", frame: request(t, "00:00:00:00:00:00", "00:00:00:00:00:00", "52:54:00:00:00:01"), out: outMalformed, reason: "bad_source"},
		{name: "group source, unicast sha", frame: request(t, "01:80:c2:00:00:00", "52:54:00:00:00:01", "52:54:00:00:00:01"), out: outMalformed, reason: "bad_source"},
		{name: "off-link refused", frame: request(t, "52:54:00:00:00:04", "52:54:00:00:00:04", "52:54:00:00:00:04"), out: outOffLink},
		{name: "off-link allowed", frame: request(t, "52:54:00:00:00:04", "52:54:00:00:00:04", "52:54:00:00:00:04"), r: rules{offLink: true}, out: outReply, spa: "0.0.0.0", tpa: "192.0.2.4"},
		{name: "several, one on-link", frame: request(t, "52:54:00:00:00:05", "52:54:00:00:00:05", "52:54:00:00:00:05"), out: outReply, spa: "10.99.255.254", tpa: "10.99.0.5"},
		{name: "several off-link, -o", frame: request(t, "52:54:00:00:00:06", "52:54:00:00:00:06", "52:54:00:00:00:06"), r: rules{offLink: true}, out: outOffLink},
		{name: "interface's own mapping", frame: request(t, "52:54:00:00:00:07", "52:54:00:00:00:07", "52:54:00:00:00:07"), out: outReply, spa: "10.99.255.254", tpa: "10.99.0.7"},
		{name: "other interface's mapping", frame: request(t, "52:54:00:00:00:08", "52:54:00:00:00:08", "52:54:00:00:00:08"), out: outUnknown},
		{name: "boot file", frame: request(t, "52:54:00:00:00:01", "52:54:00:00:00:01", "52:54:00:00:00:01"), r: rules{boot: boot}, out: outReply, spa: "10.99.255.254", tpa: "10.99.0.1"},
		{name: "boot file with suffix", frame: request(t, "52:54:00:00:00:02", "52:54:00:00:00:02", "52:54:00:00:00:02"), r: rules{boot: boot}, out: outReply, spa: "10.99.255.254", tpa: "10.99.0.2"},
		{name: "boot file in lower case", frame: request(t, "52:54:00:00:00:03", "52:54:00:00:00:03", "52:54:00:00:00:03"), r: rules{boot: boot}, out: outNotBootable},
		{name: "short", frame: request(t, "52:54:00:00:00:01", "52:54:00:00:00:01", "52:54:00:00:00:01")[:30], out: outMalformed, reason: "short_frame"},
		{name: "header only", frame: request(t, "52:54:00:00:00:01", "52:54:00:00:00:01", "52:54:00:00:00:01")[:14], out: outMalformed, reason: "short_frame"},
		{name: "empty", frame: nil, out: outMalformed, reason: "short_frame"},
		{name: "htype", frame: patch(request(t, "52:54:00:00:00:01", "52:54:00:00:00:01", "52:54:00:00:00:01"), 15, 6), out: outMalformed, reason: "htype"},
		{name: "ptype", frame: patch(request(t, "52:54:00:00:00:01", "52:54:00:00:00:01", "52:54:00:00:00:01"), 16, 0x86), out: outMalformed, reason: "ptype"},
		{name: "hlen", frame: patch(request(t, "52:54:00:00:00:01", "52:54:00:00:00:01", "52:54:00:00:00:01"), 18, 8), out: outMalformed, reason: "hlen"},
		{name: "plen", frame: patch(request(t, "52:54:00:00:00:01", "52:54:00:00:00:01", "52:54:00:00:00:01"), 19, 16), out: outMalformed, reason: "plen"},
		{name: "a reply", frame: patch(request(t, "52:54:00:00:00:01", "52:54:00:00:00:01", "52:54:00:00:00:01"), 21, 4), out: outIgnored},
		{name: "op 9", frame: patch(request(t, "52:54:00:00:00:01", "52:54:00:00:00:01", "52:54:00:00:00:01"), 21, 9), out: outMalformed, reason: "other"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := tb.View("peer0")
			out := make([]byte, snapLen)
			d := decide(c.frame, peer0(t), &v, &c.r, out)
			if d.out != c.out {
				t.Fatalf("outcome %d, want %d", d.out, c.out)
			}
			if c.reason != "" && malformedReasons[d.reason] != c.reason {
				t.Fatalf("reason %s, want %s", malformedReasons[d.reason], c.reason)
			}
			if c.out != outReply {
				if !bytes.Equal(out, make([]byte, snapLen)) {
					t.Fatal("wrote a reply for a frame it does not answer")
				}
				return
			}
			var f rarp.Frame
			if err := f.UnmarshalBinary(out[:ReplyLen]); err != nil {
				t.Fatal(err)
			}
			req := f
			_ = req.UnmarshalBinary(c.frame)
			if f.Destination != req.Source || f.Source != peer0(t).mac || f.SenderHardware != peer0(t).mac ||
				f.TargetHardware != req.TargetHardware || f.Operation != rarp.OpReverseReply ||
				f.SenderIP.String() != c.spa || f.TargetIP.String() != c.tpa {
				t.Fatalf("reply %v, want to %s spa %s tpa %s", &f, req.Source, c.spa, c.tpa)
			}
		})
	}
}

func patch(b []byte, i int, v byte) []byte {
	b[i] = v
	return b
}

func TestInterfaceWithoutIPv4(t *testing.T) {
	st := &ifState{mac: rarp.MustParseMAC("02:00:00:00:00:01")}
	v := table(t, "52:54:00:00:00:01 10.99.0.1").View("x")
	req := request(t, "52:54:00:00:00:01", "52:54:00:00:00:01", "52:54:00:00:00:01")
	out := make([]byte, snapLen)
	if d := decide(req, st, &v, &rules{}, out); d.out != outOffLink {
		t.Fatalf("without an address and without --off-link: %d", d.out)
	}
	if d := decide(req, st, &v, &rules{offLink: true}, out); d.out != outReply || !bytes.Equal(out[28:32], []byte{0, 0, 0, 0}) {
		t.Fatalf("with --off-link: %d, spa %x", d.out, out[28:32])
	}
}

func TestBootName(t *testing.T) {
	for name, want := range map[string]int64{"0A630001": 0x0a630001, "C0A80101.PXE": 0xc0a80101, "FFFFFFFF": 0xffffffff, "0a630001": -1, "0A63": -1, "0A63000G": -1, "": -1} {
		got, ok := bootName(name)
		if (want < 0) == ok || (ok && int64(got) != want) {
			t.Errorf("bootName(%q) = %x %v, want %x", name, got, ok, want)
		}
	}
}

// TestDecideDoesNotAllocate: the hot path (decode, validate, look up,
// choose the address, build the reply) allocates nothing, for every
// outcome.
func TestDecideDoesNotAllocate(t *testing.T) {
	v := table(t, "52:54:00:00:00:01 10.99.0.1", "52:54:00:00:00:04 192.0.2.4").View("peer0")
	st := peer0(t)
	frames := [][]byte{
		request(t, "52:54:00:00:00:01", "52:54:00:00:00:01", "52:54:00:00:00:01"),
		request(t, "52:54:00:00:00:09", "52:54:00:00:00:09", "52:54:00:00:00:09"),
		request(t, "52:54:00:00:00:04", "52:54:00:00:00:04", "52:54:00:00:00:04"),
		request(t, "02:00:00:00:00:01", "52:54:00:00:00:01", "52:54:00:00:00:01"),
		request(t, "52:54:00:00:00:01", "52:54:00:00:00:01", "52:54:00:00:00:01")[:20],
	}
	out := make([]byte, snapLen)
	r := &rules{}
	allocs := testing.AllocsPerRun(1000, func() {
		for _, f := range frames {
			decide(f, st, &v, r, out)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per batch of %d frames", allocs, len(frames))
	}
}

func BenchmarkDecide(b *testing.B) {
	v := table(b, "52:54:00:00:00:01 10.99.0.1").View("peer0")
	st := peer0(b)
	f := request(b, "52:54:00:00:00:01", "52:54:00:00:00:01", "52:54:00:00:00:01")
	out := make([]byte, snapLen)
	r := &rules{}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		decide(f, st, &v, r, out)
	}
}

// FuzzDecide feeds arbitrary frames to the decision: it never panics, and
// whatever it answers is a well-formed reply to a valid request for a MAC
// in the table, sent back to the requester.
func FuzzDecide(f *testing.F) {
	tb := table(f, "52:54:00:00:00:01 10.99.0.1", "52:54:00:00:00:02 192.0.2.2", "52:54:00:00:00:03 10.99.0.3 @peer0")
	st := peer0(f)
	f.Add(request(f, "52:54:00:00:00:01", "52:54:00:00:00:01", "52:54:00:00:00:01"))
	f.Add(request(f, cliMAC, cliMAC, "52:54:00:00:00:03"))
	f.Add(request(f, cliMAC, "52:54:00:00:00:01", "52:54:00:00:00:02"))
	f.Add(frametest.Hex(f, refRequest)[:21])
	f.Fuzz(func(t *testing.T, frame []byte) {
		for _, r := range []rules{{}, {offLink: true}} {
			v := tb.View("peer0")
			out := make([]byte, snapLen)
			d := decide(frame, st, &v, &r, out)
			if d.out != outReply {
				continue
			}
			var req, rep rarp.Frame
			if err := req.UnmarshalBinary(frame); err != nil || req.Operation != rarp.OpReverseRequest || req.Source != req.SenderHardware || req.VLAN.Tagged() {
				t.Fatalf("answered an invalid request %x (%v)", frame, err)
			}
			if v.Lookup(req.TargetHardware) == nil {
				t.Fatalf("answered an unknown MAC %s", req.TargetHardware)
			}
			if err := rep.UnmarshalBinary(out[:ReplyLen]); err != nil || rep.Operation != rarp.OpReverseReply ||
				rep.Destination != req.Source || rep.TargetHardware != req.TargetHardware || rep.SenderHardware != st.mac {
				t.Fatalf("reply %x to %x (%v)", out[:ReplyLen], frame, err)
			}
		}
	})
}

// BenchmarkDecideTableSize: the cost of a request in user space (decode,
// look up, choose the address, build the reply) with tables of 10, 100k
// and 1M entries, asking for 400 MACs spread over the table as the
// side-by-side benchmark does, and for every MAC of the table in a
// scattered order (cold caches).
func BenchmarkDecideTableSize(b *testing.B) {
	for _, n := range []int{10, 100_000, 1_000_000} {
		entries := make([]rarptable.Entry, n)
		for i := range entries {
			k := i%65000 + 1
			entries[i] = rarptable.Entry{
				MAC: rarp.MAC{0x52, 0x54, 0, byte((i + 1) >> 16), byte((i + 1) >> 8), byte(i + 1)},
				IPs: []netip.Addr{netip.AddrFrom4([4]byte{10, 99, byte(k >> 8), byte(k)})},
			}
		}
		tb, err := rarptable.NewTable(entries)
		if err != nil {
			b.Fatal(err)
		}
		st := peer0(b)
		for _, mode := range []string{"400", "all"} {
			distinct := min(400, n)
			if mode == "all" {
				distinct = n
			}
			frames := make([][]byte, distinct)
			for i := range frames {
				j := i * (n - 1) / max(distinct-1, 1)
				if mode == "all" {
					j = (i * 7919) % n // scattered
				}
				f := rarp.Announce(entries[j].MAC, rarp.VLAN{})
				frames[i], _ = f.MarshalBinary()
			}
			b.Run(fmt.Sprintf("entries=%d/macs=%s", n, mode), func(b *testing.B) {
				out := make([]byte, snapLen)
				r := &rules{}
				b.ReportAllocs()
				for i := 0; i < b.N; i++ {
					v := tb.View("peer0")
					if d := decide(frames[i%len(frames)], st, &v, r, out); d.out != outReply {
						b.Fatal("not answered")
					}
				}
			})
		}
	}
}

// Warnings are limited per kind: off-link requests, however many, leave
// the warning that replies are failing its own once a second.
func TestWarningsLimitedPerKind(t *testing.T) {
	core, logs := observer.New(zapcore.WarnLevel)
	l := &link{name: "eth0", r: &Responder{log: zap.New(core)}}
	var bc batchCounts
	for range 3 {
		l.account(&decision{out: outOffLink}, &bc)
	}
	if n := logs.FilterMessageSnippet("not on the interface's subnet").Len(); n != 1 || bc.n[tOffLink] != 3 {
		t.Fatalf("three off-link requests within a second: %d warnings, %d counted; want 1 and 3", n, bc.n[tOffLink])
	}
	if _, ok := l.sendWarn.now(); !ok {
		t.Fatal("the off-link warnings used up the send-error warning's second")
	}
	if _, ok := l.offLinkWarn.now(); ok {
		t.Fatal("a fourth off-link warning within the second was allowed")
	}
}

// TestCountingDoesNotAllocate: adding a batch's tallies to an interface's
// counters allocates nothing, and adds each tally where it belongs.
func TestCountingDoesNotAllocate(t *testing.T) {
	var c counters
	var b batchCounts
	allocs := testing.AllocsPerRun(1000, func() {
		b.n[tRequests] += 3
		b.n[tReplies] += 2
		b.malformed[reasonBadSource]++
		c.add(&b)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per batch", allocs)
	}
	s := c.snapshot()
	if n := s.Requests; n != 3*1001 || s.Replies != 2*1001 || s.Malformed["bad_source"] != 1001 || s.Unknown != 0 {
		t.Fatalf("after 1001 batches: %+v", s)
	}
}
