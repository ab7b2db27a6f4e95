package enumname

import "testing"

type color uint8

var colors = Table[color]{1: "red", 2: "green"}

func TestName(t *testing.T) {
	for _, c := range []struct {
		v    color
		want string
	}{{1, "red"}, {2, "green"}, {0, "color(0)"}, {255, "color(255)"}} {
		if got := colors.Name(c.v, "color(%d)"); got != c.want {
			t.Errorf("Name(%d) = %q, want %q", c.v, got, c.want)
		}
	}
	if got := (Table[int32]{}).Name(-3, "state%d"); got != "state-3" {
		t.Errorf("negative: %q", got)
	}
}

func TestValues(t *testing.T) {
	got := Table[color]{7: "c", 1: "a", 3: "b"}.Values()
	if len(got) != 3 || got[0] != 1 || got[1] != 3 || got[2] != 7 {
		t.Fatalf("Values = %v, want [1 3 7]", got)
	}
	if got := (Table[color]{}).Values(); len(got) != 0 {
		t.Fatalf("empty table: %v", got)
	}
}
