package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// Release builds may set these with
//
//	go build -ldflags "-X main.version=v1.2.0 -X main.commit=$(git rev-parse HEAD)"
//
// when they are built from a source archive, which carries no VCS
// information for the toolchain to record. Otherwise they stay empty and
// the build information the toolchain stamps is used.
var (
	version string
	commit  string
)

// buildInfo says which evx this is.
type buildInfo struct {
	// Version is a module version (a release tag, or a pseudo-version
	// of a commit), or "devel" when unknown.
	Version string `json:"version"`
	// Commit is the VCS revision built, or "unknown".
	Commit string `json:"commit"`
	// Modified says the working tree had changes that were not committed.
	Modified bool `json:"modified"`
	// Go is the version of Go that built the binary.
	Go string `json:"go"`
	// Platform is GOOS/GOARCH.
	Platform string `json:"platform"`
}

// readBuildInfo returns what the binary knows of its own build.
func readBuildInfo() buildInfo {
	bi, _ := debug.ReadBuildInfo()
	return buildInfoFrom(bi, version, commit)
}

// buildInfoFrom combines the toolchain's build information (nil if there
// is none) with the values set by -ldflags, which win.
func buildInfoFrom(bi *debug.BuildInfo, ldVersion, ldCommit string) buildInfo {
	info := buildInfo{Version: "devel", Commit: "unknown", Go: runtime.Version(),
		Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi != nil {
		if v := bi.Main.Version; v != "" && v != "(devel)" {
			info.Version = v
		}
		if bi.GoVersion != "" {
			info.Go = bi.GoVersion
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				info.Commit = s.Value
			case "vcs.modified":
				info.Modified = s.Value == "true"
			}
		}
	}
	if ldVersion != "" {
		info.Version = ldVersion
	}
	if ldCommit != "" && ldCommit != info.Commit {
		// The toolchain's vcs.modified describes another revision.
		info.Commit, info.Modified = ldCommit, false
	}
	return info
}

func (b buildInfo) String() string {
	c := b.Commit
	if b.Modified {
		c += " (modified)"
	}
	return fmt.Sprintf("evx     %s\ncommit  %s\ngo      %s %s\n", b.Version, c, b.Go, b.Platform)
}

func newVersionCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version [--json]",
		Short: "Print the version, commit and Go version of this evx",
		Long: `version prints the version of evx, the commit it was built from (and
whether the working tree had uncommitted changes), and the Go version and
platform it was built with. "evx --version" prints the same.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			info := readBuildInfo()
			if asJSON {
				return printJSON(cmd.OutOrStdout(), info)
			}
			_, err := fmt.Fprint(cmd.OutOrStdout(), info)
			return err
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
