// Package version is the build's version stamp. The Makefile and the
// Dockerfile set Version and Commit with
//
//	-ldflags "-X github.com/aerodb/authority/internal/version.Version=v0.7.0
//	          -X github.com/aerodb/authority/internal/version.Commit=<git sha>"
//
// A binary built without them (go install, go build) falls back to what
// the Go toolchain recorded: the module version and the VCS revision.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Set at link time (-ldflags -X); empty when not stamped.
var (
	Version string
	Commit  string
)

// Info is what a binary reports about its build.
type Info struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	Modified  bool   `json:"modified,omitempty"`
	GoVersion string `json:"go_version"`
	Platform  string `json:"platform"`
}

// Get returns the build's info: the stamped values, else the toolchain's.
func Get() Info {
	return get(Version, Commit, debug.ReadBuildInfo)
}

func get(ver, commit string, read func() (*debug.BuildInfo, bool)) Info {
	in := Info{Version: ver, Commit: commit, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := read(); ok {
		if in.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			in.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch {
			case s.Key == "vcs.revision" && in.Commit == "":
				in.Commit = s.Value
			case s.Key == "vcs.modified" && commit == "":
				in.Modified = s.Value == "true"
			}
		}
	}
	if in.Version == "" {
		in.Version = "devel"
	}
	if in.Commit == "" {
		in.Commit = "unknown"
	}
	return in
}

// String is one line: "<name> <version> (commit <c>, <go>, <os/arch>)".
func (in Info) String(name string) string {
	c := in.Commit
	if len(c) > 12 {
		c = c[:12]
	}
	if in.Modified {
		c += "+dirty"
	}
	return fmt.Sprintf("%s %s (commit %s, %s, %s)", name, in.Version, c, in.GoVersion, in.Platform)
}
