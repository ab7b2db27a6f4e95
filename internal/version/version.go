// Package version holds the build's version, set at link time:
//
//	go build -ldflags "-X github.com/rarp-announce/rarp-announce/internal/version.Version=1.2.3"
package version

import "runtime/debug"

// Version is the release version; "dev" in an untagged build.
var Version = "dev"

// Revision is the VCS revision, from -ldflags or the Go build info.
var Revision = ""

// Get returns the version and revision.
func Get() (version, revision string) {
	revision = Revision
	if revision == "" {
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, s := range bi.Settings {
				if s.Key == "vcs.revision" {
					revision = s.Value
				}
			}
		}
	}
	if revision == "" {
		revision = "unknown"
	}
	return Version, revision
}
