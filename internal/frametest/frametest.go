// Package frametest writes frames for tests: bytes given as readable hex,
// and minimal Ethernet frames to teach or probe a switch.
package frametest

import (
	"encoding/binary"
	"encoding/hex"
	"strings"
	"testing"
)

// Hex decodes s, hex with spaces allowed anywhere (to group a frame's
// fields), and fails t if it is not hex.
func Hex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Ether is a minimum-size (60-byte) Ethernet frame to dst from src of
// etherType, its payload zero. A switch learns src from it.
func Ether(dst, src [6]byte, etherType uint16) []byte {
	f := make([]byte, 60)
	copy(f[0:6], dst[:])
	copy(f[6:12], src[:])
	binary.BigEndian.PutUint16(f[12:], etherType)
	return f
}
