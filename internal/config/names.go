package config

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
)

// CheckListenAddress checks a host:port to serve metrics on: net.Listen
// would refuse a port out of range only at start (exit 1, a restart loop
// under systemd). Port 0 is a free port the kernel picks, logged at start
// (tests use it).
func CheckListenAddress(s string) error {
	if s == "" {
		return errors.New("empty: the agent serves /metrics, /healthz and /readyz on host:port (default 127.0.0.1:9798)")
	}
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not host:port", s)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("%q: port %q is not 0 to 65535", s, port)
	}
	return nil
}

// CheckInterfaceName checks a network interface name as Linux would
// (dev_valid_name): 1 to 15 bytes, not "." or "..", no '/', ':' or white
// space. A name no interface can have is a typo, refused at start rather
// than waited for.
func CheckInterfaceName(name string) error {
	switch {
	case name == "":
		return errors.New("empty interface name")
	case len(name) > 15:
		return fmt.Errorf("%q is longer than 15 bytes, which no interface name is", name)
	case name == "." || name == "..", strings.ContainsAny(name, "/: \t\n\v\f\r"):
		return fmt.Errorf("%q is not a valid interface name", name)
	}
	return nil
}

// CheckBootDir checks that the responder's boot directory can be read: the
// responder answers only for addresses with a boot file there, so one it
// cannot read would make it answer nobody.
func CheckBootDir(path string) error {
	if _, err := os.ReadDir(path); err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
