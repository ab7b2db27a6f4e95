package config

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
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
