// Command rarp-announce makes switches follow live-migrated VMs.
// See README.md and 'rarp-announce --help'.
package main

import (
	"os"

	"github.com/rarp-announce/rarp-announce/internal/cli"
)

func main() { os.Exit(cli.Main(os.Args[1:])) }
