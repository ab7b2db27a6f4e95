package plan

import "testing"

func TestStrategyText(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Strategy
		err  bool
	}{
		{"host", Host, false}, {"qemu", QEMU, false}, {"ovs", OVS, false}, {"skip", Skip, false},
		{"", "", false}, {"Host", "", true}, {"kvm", "", true},
	} {
		var s Strategy
		err := s.UnmarshalText([]byte(c.in))
		if (err != nil) != c.err || (err == nil && s != c.want) {
			t.Errorf("%q: %q, %v; want %q, error %v", c.in, s, err, c.want, c.err)
		}
		if err == nil {
			if b, _ := s.MarshalText(); string(b) != c.in {
				t.Errorf("%q: marshals as %q", c.in, b)
			}
		}
	}
}

func FuzzStrategyText(f *testing.F) {
	for _, s := range []string{"host", "qemu", "ovs", "skip", "", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		var s Strategy
		if err := s.UnmarshalText([]byte(in)); err != nil {
			return
		}
		b, _ := s.MarshalText()
		var again Strategy
		if err := again.UnmarshalText(b); err != nil || again != s {
			t.Fatalf("%q: round trip %q, %v", in, again, err)
		}
	})
}
