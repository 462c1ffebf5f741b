package main

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"testing"
)

func TestBuildInfoFrom(t *testing.T) {
	vcs := func(rev, modified string) *debug.BuildInfo {
		return &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "evx", Version: "v0.0.0-20261203104453-d3607d896f82+dirty"},
			Settings: []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: modified}}}
	}
	platform := runtime.GOOS + "/" + runtime.GOARCH
	for _, tc := range []struct {
		name             string
		bi               *debug.BuildInfo
		ldVersion, ldRev string
		want             buildInfo
	}{
		{"no build info", nil, "", "", buildInfo{Version: "devel", Commit: "unknown", Go: runtime.Version(), Platform: platform}},
		{"no VCS", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}}, "", "",
			buildInfo{Version: "devel", Commit: "unknown", Go: "go1.26.8", Platform: platform}},
		{"modified tree", vcs("d3607d896f82f479b977cb889524b56006255837", "true"), "", "",
			buildInfo{Version: "v0.0.0-20261203104453-d3607d896f82+dirty", Commit: "d3607d896f82f479b977cb889524b56006255837", Modified: true, Go: "go1.26.8", Platform: platform}},
		{"clean tree", vcs("d3607d896f82f479b977cb889524b56006255837", "false"), "", "",
			buildInfo{Version: "v0.0.0-20261203104453-d3607d896f82+dirty", Commit: "d3607d896f82f479b977cb889524b56006255837", Go: "go1.26.8", Platform: platform}},
		{"release by -ldflags", &debug.BuildInfo{GoVersion: "go1.26.8"}, "v1.2.0", "0123456789abcdef0123456789abcdef01234567",
			buildInfo{Version: "v1.2.0", Commit: "0123456789abcdef0123456789abcdef01234567", Go: "go1.26.8", Platform: platform}},
		{"-ldflags commit over another VCS revision", vcs("d3607d896f82f479b977cb889524b56006255837", "true"), "v1.2.0", "0123456789abcdef0123456789abcdef01234567",
			buildInfo{Version: "v1.2.0", Commit: "0123456789abcdef0123456789abcdef01234567", Go: "go1.26.8", Platform: platform}},
		{"-ldflags commit the same as VCS", vcs("d3607d896f82f479b977cb889524b56006255837", "true"), "", "d3607d896f82f479b977cb889524b56006255837",
			buildInfo{Version: "v0.0.0-20261203104453-d3607d896f82+dirty", Commit: "d3607d896f82f479b977cb889524b56006255837", Modified: true, Go: "go1.26.8", Platform: platform}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := buildInfoFrom(tc.bi, tc.ldVersion, tc.ldRev); got != tc.want {
				t.Errorf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
	text := buildInfo{Version: "v1.2.0", Commit: "abc", Modified: true, Go: "go1.26.8", Platform: "linux/amd64"}.String()
	if want := "evx     v1.2.0\ncommit  abc (modified)\ngo      go1.26.8 linux/amd64\n"; text != want {
		t.Errorf("text form:\n%s\nwant:\n%s", text, want)
	}
}

// TestVersionLdflags builds evx as a release would, with -ldflags -X, and
// checks that the variables it names exist and are printed.
func TestVersionLdflags(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "evx")
	build := exec.Command("go", "build", "-o", bin,
		"-ldflags", "-X main.version=v9.8.7 -X main.commit=0123456789abcdef0123456789abcdef01234567", ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "version", "--json").Output()
	if err != nil {
		t.Fatal(err)
	}
	var got buildInfo
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v in %s", err, out)
	}
	if got.Version != "v9.8.7" || got.Commit != "0123456789abcdef0123456789abcdef01234567" || got.Modified {
		t.Errorf("version --json of a release build: %+v", got)
	}
}
