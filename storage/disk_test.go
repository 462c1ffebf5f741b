package storage_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"evx/storage"
	"evx/storage/storagetest"
)

func newDisk(t *testing.T) *storage.Disk {
	t.Helper()
	d, err := storage.NewDisk(filepath.Join(t.TempDir(), "store"))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestDiskConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Backend { return newDisk(t) })
}

// Temporary files, such as a crash leaves behind, are never listed or
// served, and RemoveStaleTemp removes only old ones.
func TestDiskTemporaryFiles(t *testing.T) {
	ctx := t.Context()
	d := newDisk(t)
	tmp := filepath.Join(d.Root(), ".tmp")
	old := filepath.Join(tmp, "create-old")
	fresh := filepath.Join(tmp, "create-fresh")
	for _, p := range []string{old, fresh} {
		if err := os.WriteFile(p, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	longAgo := time.Now().Add(-48 * time.Hour)
	if err := os.Chtimes(old, longAgo, longAgo); err != nil {
		t.Fatal(err)
	}
	// Stray files that no Create makes are not objects either.
	if err := os.WriteFile(filepath.Join(d.Root(), ".hidden"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d.Root(), "bad name"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	infos, err := d.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 0 {
		t.Errorf("List = %v, want nothing", infos)
	}
	n, err := d.RemoveStaleTemp(ctx, 24*time.Hour)
	if err != nil || n != 1 {
		t.Fatalf("RemoveStaleTemp = %d, %v; want 1", n, err)
	}
	if _, err := os.Stat(old); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale temporary file not removed: %v", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("recent temporary file removed: %v", err)
	}
}

// Objects and their directories are private, and no temporary file
// outlives its Create.
func TestDiskFiles(t *testing.T) {
	ctx := t.Context()
	d := newDisk(t)
	if err := d.Create(ctx, "a/b/c", strings.NewReader("evidence"), 8); err != nil {
		t.Fatal(err)
	}
	if err := d.Create(ctx, "a/b/short", strings.NewReader("evid"), 8); !errors.Is(err, storage.ErrSizeMismatch) {
		t.Fatalf("short Create = %v", err)
	}
	fi, err := os.Stat(filepath.Join(d.Root(), "a", "b", "c"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("object mode %v, want 0600", fi.Mode().Perm())
	}
	for _, dir := range []string{"a", "a/b"} {
		fi, err := os.Stat(filepath.Join(d.Root(), dir))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o700 {
			t.Errorf("directory %s mode %v, want 0700", dir, fi.Mode().Perm())
		}
	}
	entries, err := os.ReadDir(filepath.Join(d.Root(), ".tmp"))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("temporary files left behind: %v", entries)
	}
}

// A key cannot be both an object and a directory of objects on disk; the
// refusal is an error that is not ErrExist, and nothing changes.
func TestDiskKeyAndDirectory(t *testing.T) {
	ctx := t.Context()
	d := newDisk(t)
	if err := d.Create(ctx, "a/b", strings.NewReader("x"), 1); err != nil {
		t.Fatal(err)
	}
	err := d.Create(ctx, "a", strings.NewReader("y"), 1)
	if err == nil || errors.Is(err, storage.ErrExist) {
		t.Errorf("Create(a) over directory a = %v, want a non-ErrExist error", err)
	}
	if _, err := d.Stat(ctx, "a"); !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("Stat(a) of a directory = %v, want ErrNotExist", err)
	}
	if err := d.Delete(ctx, "a"); err != nil {
		t.Errorf("Delete(a) of a directory = %v, want nil", err)
	}
	err = d.Create(ctx, "a/b/c", strings.NewReader("z"), 1)
	if err == nil || errors.Is(err, storage.ErrExist) {
		t.Errorf("Create(a/b/c) under object a/b = %v, want a non-ErrExist error", err)
	}
	if _, err := d.Stat(ctx, "a/b"); err != nil {
		t.Errorf("a/b lost: %v", err)
	}
}

// Objects persist across instances on the same directory: the root is the
// state.
func TestDiskReopen(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	d1, err := storage.NewDisk(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := d1.Create(ctx, "k", strings.NewReader("kept"), 4); err != nil {
		t.Fatal(err)
	}
	d2, err := storage.NewDisk(dir)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := d2.Stat(ctx, "k"); err != nil || info.Size != 4 {
		t.Errorf("Stat from a second instance = %v, %v", info, err)
	}
	if err := d2.Create(ctx, "k", strings.NewReader("new!"), 4); !errors.Is(err, storage.ErrExist) {
		t.Errorf("Create from a second instance = %v, want ErrExist", err)
	}
}
