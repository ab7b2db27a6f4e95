// Package testbin builds the project's commands for tests that run them as
// a user would, and runs them with their exit code and output captured.
package testbin

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Build compiles the main package in pkgDir (relative to the test's
// directory) with go build's extra flags (for example -race) into a new
// temporary directory. It is for TestMain, so it returns errors instead of
// failing a test; remove the directory with cleanup when done.
func Build(pkgDir, name string, flags ...string) (path string, cleanup func(), err error) {
	dir, err := os.MkdirTemp("", "rarp-announce-bin")
	if err != nil {
		return "", nil, err
	}
	cleanup = func() { os.RemoveAll(dir) }
	path = filepath.Join(dir, name)
	args := append(append([]string{"build"}, flags...), "-o", path, ".")
	cmd := exec.Command("go", args...)
	cmd.Dir = pkgDir
	if out, err := cmd.CombinedOutput(); err != nil {
		cleanup()
		return "", nil, fmt.Errorf("go build %s: %v\n%s", pkgDir, err, out)
	}
	return path, cleanup, nil
}

// Result is how one run of a command ended.
type Result struct {
	Code           int
	Stdout, Stderr string
}

// Run runs cmd to its end. A non-zero exit is a Result, not an error; a
// command that could not run at all fails t.
func Run(t testing.TB, cmd *exec.Cmd) Result {
	t.Helper()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%v: %v", cmd.Args, err)
	}
	return Result{code, out.String(), errb.String()}
}
