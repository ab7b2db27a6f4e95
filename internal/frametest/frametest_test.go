package frametest

import (
	"bytes"
	"testing"
)

func TestHex(t *testing.T) {
	if got := Hex(t, "0102 03 0a0B"); !bytes.Equal(got, []byte{1, 2, 3, 10, 11}) {
		t.Fatalf("Hex = % x", got)
	}
}

func TestEther(t *testing.T) {
	f := Ether([6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, [6]byte{0x52, 0x54, 0, 0, 0, 1}, 0x88b5)
	want := Hex(t, "ffffffffffff 525400000001 88b5")
	if len(f) != 60 || !bytes.Equal(f[:14], want) || !bytes.Equal(f[14:], make([]byte, 46)) {
		t.Fatalf("Ether = % x", f)
	}
}
