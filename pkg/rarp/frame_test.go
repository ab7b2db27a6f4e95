package rarp

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"testing"

	"github.com/rarp-announce/rarp-announce/internal/frametest"
)

// qemuAnnounce is what QEMU 7.2's announce_self_create sent for
// 52:54:00:aa:bb:cc, captured in the lab (DESIGN-NOTES section 1).
const qemuAnnounce = "ffffffffffff525400aabbcc8035" +
	"0001080006040003" +
	"525400aabbcc00000000525400aabbcc00000000" +
	"000000000000000000000000000000000000"

// rarpdReply is Debian rarpd's reply from peer/results/capture-reference.txt.
const rarpdReply = "525400000001 02000a63fffe 8035 0001 0800 0604 0004 02000a63fffe 0a63fffe 525400000001 0a630001"

func TestAnnounceIsQEMUBytes(t *testing.T) {
	f := Announce(MustParseMAC("52:54:00:aa:bb:cc"), VLAN{})
	got, err := f.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	want := frametest.Hex(t, qemuAnnounce)
	if len(want) != 60 {
		t.Fatalf("reference is %d bytes", len(want))
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("announce differs from QEMU's\n got %x\nwant %x", got, want)
	}
}

func TestAnnounceTagged(t *testing.T) {
	f := Announce(MustParseMAC("52:54:00:aa:bb:cc"), VLAN{ID: 100, Priority: 5, DropEligible: true})
	got, err := f.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 64 {
		t.Fatalf("tagged announce is %d bytes, want 64", len(got))
	}
	// TPID 0x8100, TCI = PCP 5 | DEI | VID 100 = 0xb064, then the untagged frame's rest.
	if !bytes.Equal(got[12:16], []byte{0x81, 0x00, 0xb0, 0x64}) {
		t.Fatalf("tag bytes %x", got[12:16])
	}
	untagged := frametest.Hex(t, qemuAnnounce)
	if !bytes.Equal(got[:12], untagged[:12]) || !bytes.Equal(got[16:], untagged[12:]) {
		t.Fatalf("tagged frame is not the untagged one plus a tag:\n%x", got)
	}
}

func TestRoundTrip(t *testing.T) {
	cases := []Frame{
		Announce(MustParseMAC("52:54:00:aa:bb:cc"), VLAN{}),
		Announce(MustParseMAC("02:00:00:00:00:01"), VLAN{ID: 4094, Priority: 7}),
		{
			Destination: MustParseMAC("52:54:00:00:00:01"), Source: MustParseMAC("02:00:0a:63:ff:fe"),
			EtherType: EtherTypeRARP, Operation: OpReverseReply,
			SenderHardware: MustParseMAC("02:00:0a:63:ff:fe"), SenderIP: netip.MustParseAddr("10.99.255.254"),
			TargetHardware: MustParseMAC("52:54:00:00:00:01"), TargetIP: netip.MustParseAddr("10.99.0.1"),
		},
		{
			Destination: Broadcast, Source: MustParseMAC("02:00:00:00:00:02"), EtherType: EtherTypeARP,
			Operation: OpRequest, SenderHardware: MustParseMAC("02:00:00:00:00:02"),
			SenderIP: netip.MustParseAddr("192.0.2.1"), TargetIP: netip.MustParseAddr("192.0.2.2"),
		},
	}
	for _, want := range cases {
		b, err := want.MarshalBinary()
		if err != nil {
			t.Fatalf("%s: %v", want.String(), err)
		}
		var got Frame
		if err := got.UnmarshalBinary(b); err != nil {
			t.Fatalf("%s: %v", want.String(), err)
		}
		if got.TargetIP != want.TargetIP && !(want.TargetIP == netip.Addr{}) {
			t.Fatalf("tpa %v != %v", got.TargetIP, want.TargetIP)
		}
		want.TargetIP = got.TargetIP // the zero Addr decodes as 0.0.0.0
		if got != want {
			t.Fatalf("round trip\n got %s\nwant %s", got.String(), want.String())
		}
	}
}

func TestDecodeRarpdReply(t *testing.T) {
	var f Frame
	if err := f.UnmarshalBinary(frametest.Hex(t, rarpdReply)); err != nil {
		t.Fatal(err)
	}
	if f.Operation != OpReverseReply || f.TargetIP != netip.MustParseAddr("10.99.0.1") ||
		f.SenderIP != netip.MustParseAddr("10.99.255.254") || f.TargetHardware != MustParseMAC("52:54:00:00:00:01") {
		t.Fatalf("decoded %s", f.String())
	}
}

func TestDecodeErrors(t *testing.T) {
	good := frametest.Hex(t, qemuAnnounce)
	mod := func(off int, v ...byte) []byte {
		b := bytes.Clone(good)
		copy(b[off:], v)
		return b
	}
	tagged, _ := (&Frame{Destination: Broadcast, Source: MAC{2}, VLAN: VLAN{ID: 10}, EtherType: EtherTypeRARP, Operation: OpReverseRequest}).MarshalBinary()
	cases := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrShortFrame},
		{"13 bytes", good[:13], ErrShortFrame},
		{"header only", good[:14], ErrShortFrame},
		{"body cut at 41", good[:41], ErrShortFrame},
		{"ipv4 ethertype", mod(12, 0x08, 0x00), ErrEtherType},
		{"ipv6 ethertype", mod(12, 0x86, 0xdd), ErrEtherType},
		{"htype 6", mod(14, 0x00, 0x06), ErrHardwareType},
		{"ptype ipv6", mod(16, 0x86, 0xdd), ErrProtocolType},
		{"hlen 8", mod(18, 8), ErrHardwareLength},
		{"plen 16", mod(19, 16), ErrProtocolLength},
		{"op 0", mod(20, 0, 0), ErrOperation},
		{"op 5", mod(20, 0, 5), ErrOperation},
		{"op 256", mod(20, 1, 0), ErrOperation},
		{"tag cut", tagged[:16], ErrShortFrame},
		{"vid 0", func() []byte { b := bytes.Clone(tagged); b[14], b[15] = 0xe0, 0; return b }(), ErrVLANID},
		{"vid 4095", func() []byte { b := bytes.Clone(tagged); b[14], b[15] = 0x0f, 0xff; return b }(), ErrVLANID},
		{"tagged ipv4", func() []byte { b := bytes.Clone(tagged); b[16], b[17] = 8, 0; return b }(), ErrEtherType},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var f Frame
			err := f.UnmarshalBinary(c.in)
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			if Reason(err) == "other" || Reason(err) == "ok" {
				t.Fatalf("no reason label for %v", err)
			}
		})
	}
	var f Frame
	if err := f.UnmarshalBinary(good[:42]); err != nil {
		t.Fatalf("unpadded 42-byte frame must decode: %v", err)
	}
}

func TestEncodeErrors(t *testing.T) {
	cases := []struct {
		name string
		f    Frame
		want error
	}{
		{"vid 4095", Announce(MAC{2}, VLAN{ID: 4095}), ErrVLANID},
		{"pcp 8", Announce(MAC{2}, VLAN{ID: 1, Priority: 8}), ErrVLANPriority},
		{"ethertype", Frame{EtherType: 0x0800, Operation: OpRequest}, ErrEtherType},
		{"op", Frame{EtherType: EtherTypeRARP, Operation: 9}, ErrOperation},
		{"ipv6 spa", Frame{EtherType: EtherTypeRARP, Operation: OpReverseReply, SenderIP: netip.MustParseAddr("::1")}, ErrProtocolAddr},
	}
	for _, c := range cases {
		if _, err := c.f.MarshalBinary(); !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
}

func TestMAC(t *testing.T) {
	for _, s := range []string{"52:54:00:AA:bb:cc", "52-54-00-aa-bb-cc", "5254.00aa.bbcc"} {
		m, err := ParseMAC(s)
		if err != nil || m.String() != "52:54:00:aa:bb:cc" {
			t.Errorf("ParseMAC(%q) = %v, %v", s, m, err)
		}
	}
	for _, s := range []string{"", "52:54:00:aa:bb", "00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01", "zz:54:00:aa:bb:cc"} {
		if _, err := ParseMAC(s); !errors.Is(err, ErrBadMAC) {
			t.Errorf("ParseMAC(%q) err = %v", s, err)
		}
		func() {
			defer func() {
				if r, _ := recover().(error); !errors.Is(r, ErrBadMAC) {
					t.Errorf("MustParseMAC(%q) panicked with %v, want ErrBadMAC", s, r)
				}
			}()
			MustParseMAC(s)
		}()
	}
	for s, bad := range map[string]bool{"00:00:00:00:00:00": true, "ff:ff:ff:ff:ff:ff": true, "01:00:5e:00:00:01": true, "33:33:00:00:00:01": true, "52:54:00:aa:bb:cc": false, "02:00:00:00:00:00": false} {
		if err := MustParseMAC(s).ValidateUnicast(); (err != nil) != bad {
			t.Errorf("ValidateUnicast(%s) = %v", s, err)
		}
	}
}

func TestDecodeDoesNotAllocate(t *testing.T) {
	b := frametest.Hex(t, qemuAnnounce)
	var f Frame
	if n := testing.AllocsPerRun(100, func() { _ = f.UnmarshalBinary(b) }); n != 0 {
		t.Fatalf("UnmarshalBinary allocates %v times", n)
	}
	buf := make([]byte, 0, MaxFrameLen)
	a := Announce(MAC{2, 0, 0, 0, 0, 1}, VLAN{ID: 7})
	if n := testing.AllocsPerRun(100, func() { _, _ = a.AppendBinary(buf[:0]) }); n != 0 {
		t.Fatalf("AppendBinary allocates %v times", n)
	}
}

// FuzzUnmarshal checks that decoding never panics, that whatever decodes
// re-encodes, and that the re-encoding decodes to the same frame.
func FuzzUnmarshal(f *testing.F) {
	f.Add(frametest.Hex(f, qemuAnnounce))
	f.Add(frametest.Hex(f, rarpdReply))
	tagged, _ := (&Frame{Destination: Broadcast, Source: MAC{2}, VLAN: VLAN{ID: 10, Priority: 3}, EtherType: EtherTypeRARP, Operation: OpReverseRequest}).MarshalBinary()
	f.Add(tagged)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		var fr Frame
		if err := fr.UnmarshalBinary(b); err != nil {
			if Reason(err) == "other" {
				t.Fatalf("error without a reason: %v", err)
			}
			return
		}
		out, err := fr.MarshalBinary()
		if err != nil {
			t.Fatalf("decoded %s but cannot encode: %v", fr.String(), err)
		}
		var again Frame
		if err := again.UnmarshalBinary(out); err != nil || again != fr {
			t.Fatalf("re-encoding changed the frame: %s -> %s (%v)", fr.String(), again.String(), err)
		}
		n := 42
		if fr.VLAN.Tagged() {
			n = 46
		}
		if !bytes.Equal(out[:n], b[:n]) {
			t.Fatalf("re-encoding changed bytes\n in %x\nout %x", b[:n], out[:n])
		}
	})
}

func BenchmarkMarshalAnnounce(b *testing.B) {
	f := Announce(MAC{0x52, 0x54, 0, 0xaa, 0xbb, 0xcc}, VLAN{})
	buf := make([]byte, 0, MaxFrameLen)
	b.ReportAllocs()
	for b.Loop() {
		_, _ = f.AppendBinary(buf[:0])
	}
}

func BenchmarkMarshalAnnounceTagged(b *testing.B) {
	f := Announce(MAC{0x52, 0x54, 0, 0xaa, 0xbb, 0xcc}, VLAN{ID: 100})
	buf := make([]byte, 0, MaxFrameLen)
	b.ReportAllocs()
	for b.Loop() {
		_, _ = f.AppendBinary(buf[:0])
	}
}

func BenchmarkUnmarshal(b *testing.B) {
	in := frametest.Hex(b, qemuAnnounce)
	var f Frame
	b.ReportAllocs()
	for b.Loop() {
		_ = f.UnmarshalBinary(in)
	}
}

func TestOperationString(t *testing.T) {
	for op, want := range map[Operation]string{
		OpRequest: "request", OpReply: "reply", OpReverseRequest: "reverse-request",
		OpReverseReply: "reverse-reply", 0: "Operation(0)", 5: "Operation(5)",
	} {
		if got := op.String(); got != want {
			t.Errorf("Operation(%d).String() = %q, want %q", uint16(op), got, want)
		}
	}
}

// The labels are metric label values (the responder's malformed reasons):
// pinned, wrapped as UnmarshalBinary wraps them.
func TestReasonLabels(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{nil, "ok"},
		{ErrShortFrame, "short_frame"}, {ErrEtherType, "ethertype"}, {ErrHardwareType, "htype"},
		{ErrProtocolType, "ptype"}, {ErrHardwareLength, "hlen"}, {ErrProtocolLength, "plen"},
		{ErrOperation, "opcode"}, {ErrVLANID, "vlan_id"},
		{ErrVLANPriority, "other"}, {ErrProtocolAddr, "other"}, {errors.New("x"), "other"},
	} {
		err := c.err
		if err != nil {
			err = fmt.Errorf("%w: detail", err)
		}
		if got := Reason(err); got != c.want {
			t.Errorf("Reason(%v) = %q, want %q", err, got, c.want)
		}
	}
}
