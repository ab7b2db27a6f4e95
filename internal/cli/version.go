package cli

import (
	"context"
	"fmt"
	"runtime"

	"github.com/rarp-announce/rarp-announce/internal/version"
)

func runVersion(_ context.Context, env *Env, args []string) int {
	fs := flagSet(env, "version", "", "")
	if code, ok := parse(env, fs, args); !ok {
		return code
	}
	v, rev := version.Get()
	fmt.Fprintf(env.Stdout, "rarp-announce %s (revision %s, %s)\n", v, rev, runtime.Version())
	return ExitOK
}
