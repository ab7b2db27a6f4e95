package responder

import (
	"testing"

	"golang.org/x/net/bpf"
)

// TestFilterJumps checks that every jump of the socket filter lands on
// the instruction its comment names, since a wrong skip silently passes
// frames (the privileged tests then show it on the wire).
func TestFilterJumps(t *testing.T) {
	const accept, drop = 10, 11
	f := requestFilter(7)
	if _, ok := f[accept].(bpf.RetConstant); !ok || f[accept].(bpf.RetConstant).Val != snapLen {
		t.Fatal("instruction 10 is not the accept")
	}
	if r, ok := f[drop].(bpf.RetConstant); !ok || r.Val != 0 {
		t.Fatal("instruction 11 is not the drop")
	}
	if j, ok := f[1].(bpf.JumpIf); !ok || j.Val != 7 {
		t.Fatalf("instruction 1 is %v, want the test of ifindex 7", f[1])
	}
	want := map[int]int{1: drop, 3: drop, 5: drop, 7: accept, 9: drop}
	for i, ins := range f {
		j, ok := ins.(bpf.JumpIf)
		if !ok {
			continue
		}
		if got := i + 1 + int(j.SkipTrue); got != want[i] {
			t.Errorf("instruction %d jumps to %d, want %d", i, got, want[i])
		}
	}
	if _, err := bpf.Assemble(f); err != nil {
		t.Fatal(err)
	}
}
