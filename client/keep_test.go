package client

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// A bundle is kept by a hard link where one can be made, and copied where
// it cannot (another file system: EXDEV); an existing file is never
// replaced either way.
func TestKeepBundle(t *testing.T) {
	dir := t.TempDir()
	data := bytes.Repeat([]byte("bundle "), 10_000)
	src, err := os.CreateTemp(dir, ".evx-pull-*.evx")
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if _, err := src.Write(data); err != nil {
		t.Fatal(err)
	}
	size := int64(len(data))
	crossDevice := func(oldname, newname string) error {
		return &os.LinkError{Op: "link", Old: oldname, New: newname, Err: syscall.EXDEV}
	}

	linked := filepath.Join(dir, "linked.evx")
	if copied, err := keepBundle(src, size, linked, os.Link); err != nil || copied {
		t.Fatalf("keep by link: copied %v, %v", copied, err)
	}
	copiedPath := filepath.Join(dir, "copied.evx")
	if copied, err := keepBundle(src, size, copiedPath, crossDevice); err != nil || !copied {
		t.Fatalf("keep across file systems: copied %v, %v; want a copy", copied, err)
	}
	for _, p := range []string{linked, copiedPath} {
		got, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("%s: %d bytes, %v; want the bundle", p, len(got), err)
		}
		if info, err := os.Stat(p); err != nil || info.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, %v; want mode 0600", p, info, err)
		}
	}

	// An existing file stays as it was, whether the link or the copy
	// finds it.
	existing := filepath.Join(dir, "existing.evx")
	if err := os.WriteFile(existing, []byte("earlier"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, link := range []func(string, string) error{os.Link, crossDevice} {
		if _, err := keepBundle(src, size, existing, link); !errors.Is(err, os.ErrExist) {
			t.Errorf("keeping over an existing file: %v, want %v", err, os.ErrExist)
		}
		if got, _ := os.ReadFile(existing); string(got) != "earlier" {
			t.Errorf("the existing file was changed to %d bytes", len(got))
		}
	}
}
