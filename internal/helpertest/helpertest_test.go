package helpertest

import (
	"testing"
)

func TestRun(t *testing.T) {
	tb := New(t)
	ran := false
	if msg := tb.Run(func() { ran = true }); msg != "" || !ran {
		t.Fatalf("a helper that returns: ran %v, failed %q", ran, msg)
	}
	after := false
	if msg := tb.Run(func() { tb.Fatalf("no %s within %d s", "reply", 5); after = true }); msg != "no reply within 5 s" || after {
		t.Fatalf("Fatalf: failed %q, went on after it: %v", msg, after)
	}
	if msg := tb.Run(func() { tb.Fatal("lost ", 3, " frames") }); msg != "lost 3 frames" {
		t.Fatalf("Fatal: failed %q", msg)
	}
	if msg := tb.Run(func() {}); msg != "" {
		t.Fatalf("a run after a failure reports the old message %q", msg)
	}
	if tb.Failed() {
		t.Fatal("the recorded failures failed the real test")
	}
}
