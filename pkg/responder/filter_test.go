package responder

import (
	"testing"

	"golang.org/x/net/bpf"
)

// TestFilterJumps checks that every jump of the socket filter lands on
// the instruction its comment names, since a wrong skip silently passes
// frames (the privileged tests then show it on the wire).
func TestFilterJumps(t *testing.T) {
	const accept, drop = 8, 9
	if _, ok := requestFilter[accept].(bpf.RetConstant); !ok || requestFilter[accept].(bpf.RetConstant).Val != snapLen {
		t.Fatal("instruction 8 is not the accept")
	}
	if r, ok := requestFilter[drop].(bpf.RetConstant); !ok || r.Val != 0 {
		t.Fatal("instruction 9 is not the drop")
	}
	want := map[int]int{1: drop, 3: drop, 5: accept, 7: drop}
	for i, ins := range requestFilter {
		j, ok := ins.(bpf.JumpIf)
		if !ok {
			continue
		}
		if got := i + 1 + int(j.SkipTrue); got != want[i] {
			t.Errorf("instruction %d jumps to %d, want %d", i, got, want[i])
		}
	}
	if _, err := bpf.Assemble(requestFilter); err != nil {
		t.Fatal(err)
	}
}
