// Package helpertest tests test helpers: it gives a helper a testing.TB
// whose Fatal ends the helper, as the real one does, and reports what the
// helper failed with instead of failing the test that checks it.
package helpertest

import (
	"fmt"
	"runtime"
	"testing"
)

// TB is a testing.TB whose Fatal and Fatalf record the message and end the
// goroutine; everything else (Cleanup, Logf, TempDir) goes to the real
// test. Call the helper under check inside Run.
type TB struct {
	testing.TB
	msg string
}

var _ testing.TB = (*TB)(nil)

// New returns a TB built on t.
func New(t testing.TB) *TB { return &TB{TB: t} }

// Run calls f on a goroutine of its own and returns the message a fatal
// failure through this TB ended it with, "" if f returned.
func (r *TB) Run(f func()) string {
	r.msg = ""
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	<-done
	return r.msg
}

func (r *TB) Helper() {}

func (r *TB) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (r *TB) Fatal(args ...any) {
	r.msg = fmt.Sprint(args...)
	runtime.Goexit()
}
