package agent

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Set at build time with -ldflags "-X github.com/leadport/leadport-agent/agent.version=...".
var (
	version = "dev"
	commit  = ""
)

// VersionInfo is what `leadport-agent version` prints and the status reports.
type VersionInfo struct {
	Version string `json:"version"`
	Commit  string `json:"commit"`
	Go      string `json:"go"`
	OS      string `json:"os"`
	Arch    string `json:"arch"`
}

// Version describes this build. Without ldflags (go run, go test) the commit
// comes from the VCS stamp the Go toolchain embeds.
func Version() VersionInfo {
	v := VersionInfo{Version: version, Commit: commit, Go: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH}
	if v.Commit == "" {
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, s := range bi.Settings {
				if s.Key == "vcs.revision" {
					v.Commit = s.Value
				}
			}
		}
	}
	if v.Commit == "" {
		v.Commit = "unknown"
	}
	return v
}

func (v VersionInfo) String() string {
	return fmt.Sprintf("leadport-agent %s (commit %s, %s, %s/%s)", v.Version, v.Commit, v.Go, v.OS, v.Arch)
}
