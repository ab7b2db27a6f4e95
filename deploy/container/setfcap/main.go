// Command setfcap gives an executable file capabilities (permitted and
// effective), like "setcap cap_net_raw,cap_net_admin=ep FILE", so that the
// container image can carry them without libcap's tools in the builder.
//
// Why the image needs them: Kubernetes grants a non-root container its added
// capabilities only in the bounding set (it has no ambient capabilities,
// kubernetes/kubernetes#56374); the agent gets them at exec from the file.
//
// Usage: setfcap FILE CAP[,CAP...]   e.g. setfcap rarp-announce cap_net_raw,cap_net_admin
package main

import (
	"encoding/binary"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// known are the capabilities the agent may need; anything else is refused
// so a typo cannot silently produce a binary without its capability.
var known = map[string]int{
	"cap_net_raw":          unix.CAP_NET_RAW,
	"cap_net_admin":        unix.CAP_NET_ADMIN,
	"cap_net_bind_service": unix.CAP_NET_BIND_SERVICE,
}

// vfsCapData encodes struct vfs_cap_data, revision 2 (linux/capability.h):
// magic_etc, then permitted/inheritable for capabilities 0-31 and 32-63.
func vfsCapData(caps []int) []byte {
	const revision2, flagEffective = 0x02000000, 0x000001
	b := make([]byte, 20)
	binary.LittleEndian.PutUint32(b[0:], revision2|flagEffective)
	for _, c := range caps {
		off := 4 + (c/32)*8 // permitted word for this capability's half
		binary.LittleEndian.PutUint32(b[off:], binary.LittleEndian.Uint32(b[off:])|1<<(c%32))
	}
	return b
}

func parseCaps(s string) ([]int, error) {
	var caps []int
	for _, name := range strings.Split(strings.ToLower(s), ",") {
		c, ok := known[strings.TrimSpace(name)]
		if !ok {
			return nil, fmt.Errorf("unknown capability %q (known: cap_net_raw, cap_net_admin, cap_net_bind_service)", name)
		}
		caps = append(caps, c)
	}
	return caps, nil
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: setfcap FILE CAP[,CAP...]")
		os.Exit(2)
	}
	caps, err := parseCaps(os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, "setfcap:", err)
		os.Exit(2)
	}
	if err := unix.Setxattr(os.Args[1], "security.capability", vfsCapData(caps), 0); err != nil {
		fmt.Fprintf(os.Stderr, "setfcap: %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}
