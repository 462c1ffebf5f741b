package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestGatewayReloadOnHangup drives a reload as an operator makes it on the
// host: edit gateway.yaml, send the evx gateway process SIGHUP, and see the
// new agreement in force through the operator's API; then a broken edit is
// refused whole, with its line and field, and the running agreement stays.
func TestGatewayReloadOnHangup(t *testing.T) {
	bin := procBuild(t)
	dir := filepath.Join(t.TempDir(), "dev")
	procMust(t, bin, "dev-env", "--dir", dir)
	cfg := filepath.Join(dir, "DE", "gateway.yaml")
	pid, _, stop := procStartGateway(t, bin, cfg)
	defer stop()
	operator := filepath.Join(dir, "DE", "operator", "profile.yaml")
	show := func() string { return procMust(t, bin, "agreement", "show", "FR", "--profile", operator) }
	if out := show(); !strings.Contains(out, "agreement DE→FR v1 (ref dev-env)") {
		t.Fatalf("agreement before the reload:\n%s", out)
	}

	editConfig(t, cfg, "    version: 1\n    ref: \"dev-env\"\n", "    version: 2\n    ref: \"2026/120\"\n")
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	// The reload runs in the gateway, on its own time: the operator's
	// view shows it once applied.
	deadline := time.Now().Add(20 * time.Second)
	for out := show(); !strings.Contains(out, "agreement DE→FR v2 (ref 2026/120)"); out = show() {
		if time.Now().After(deadline) {
			t.Fatalf("agreement 20 s after SIGHUP:\n%s", out)
		}
	}

	editConfig(t, cfg, `    outbound: ["criminal-investigation",`, `    outbound: ["fishing", "criminal-investigation",`)
	stdout, stderr, err := procRun(t, bin, nil, "agreement", "reload", "--profile", operator)
	if err == nil || !strings.Contains(stderr, "invalid-config") || !strings.Contains(stderr, "outbound") || !strings.Contains(stderr, "fishing") {
		t.Fatalf("reload of a broken file: %v\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
	}
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if out := show(); !strings.Contains(out, "agreement DE→FR v2 (ref 2026/120)") || !strings.Contains(out, "criminal-investigation") || strings.Contains(out, "fishing") {
		t.Fatalf("agreement after a refused reload:\n%s", out)
	}
}

// editConfig replaces old, which must be in the file once, with new.
func editConfig(t *testing.T, path, old, new string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(string(data), old) != 1 {
		t.Fatalf("%s does not hold %q once", path, old)
	}
	if err := os.WriteFile(path, []byte(strings.Replace(string(data), old, new, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
}
