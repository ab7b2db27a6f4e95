package plan

import "fmt"

// Strategies a NIC may be given, in the order messages list them.
var allStrategies = []Strategy{Host, QEMU, OVS, Skip}

// ParseStrategy returns the strategy s names.
func ParseStrategy(s string) (Strategy, error) {
	for _, v := range allStrategies {
		if string(v) == s {
			return v, nil
		}
	}
	return "", fmt.Errorf("%q is not host, qemu, ovs or skip", s)
}

// MarshalText implements encoding.TextMarshaler.
func (s Strategy) MarshalText() ([]byte, error) { return []byte(s), nil }

// UnmarshalText implements encoding.TextUnmarshaler: config files and flags
// read a strategy through it, so its names are checked in one place.
func (s *Strategy) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*s = "" // unset: the plan's default
		return nil
	}
	v, err := ParseStrategy(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}
