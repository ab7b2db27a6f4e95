package netnstest

import (
	"bytes"
	"testing"
)

// A tagged frame crossing a veth is seen by the Sniffer on both ends with
// its 802.1Q tag where it was (the kernel hands the tag to packet sockets
// apart from the frame); an untagged one stays untagged.
func TestSniffRestoresVLANTags(t *testing.T) {
	Require(t)
	a, b := New(t, "sna"), New(t, "snb")
	Veth(t, a, "a0", b, "b0")
	out, in := Sniff(t, a, "a0"), Sniff(t, b, "b0")
	tagged := []byte{
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 0x01,
		0x81, 0x00, 0x20, 0x64, // PCP 1, VID 100
		0x88, 0xb5, 0x01,
	}
	tagged = append(tagged, make([]byte, 64-len(tagged))...)
	untagged := append(append([]byte(nil), tagged[:12]...), tagged[16:]...)
	Send(t, a, "a0", tagged)
	Send(t, a, "a0", untagged)
	for name, s := range map[string]*Sniffer{"sent, a0": out, "received, b0": in} {
		var got [][]byte
		for _, f := range s.Stop() {
			if bytes.Equal(f[6:12], tagged[6:12]) {
				got = append(got, f)
			}
		}
		if len(got) != 2 || !bytes.Equal(got[0], tagged) || !bytes.Equal(got[1][:len(untagged)], untagged) {
			t.Fatalf("%s: frames %x, want the tagged one then the untagged one", name, got)
		}
		if vid, et, ok := VLANOf(got[0]); !ok || vid != 100 || et != 0x88b5 {
			t.Fatalf("%s: VLANOf = %d, %#x, %v; want 100, 0x88b5, true", name, vid, et, ok)
		}
		if _, _, ok := VLANOf(got[1]); ok {
			t.Fatalf("%s: the untagged frame has a tag", name)
		}
	}
}
