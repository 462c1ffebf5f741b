package storage_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"evx/storage"
	"evx/storage/storagetest"
)

// mountTmpfs mounts a tmpfs of size bytes on a new directory, unmounted
// when t ends, and returns the directory. A full or read-only file system
// is the one storage failure a test can produce for real; it takes the
// right to mount (root), without which t is skipped.
func mountTmpfs(t *testing.T, size int) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, fmt.Sprintf("size=%d,mode=0700", size)); err != nil {
		t.Skipf("cannot mount a tmpfs to fill or make read-only (%v); this test needs root", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmounting %s: %v", dir, err)
		}
	})
	return dir
}

// checkUnavailable checks that err reports the storage unavailable, with
// the file system's errno and the key.
func checkUnavailable(t *testing.T, call string, err error, errno syscall.Errno, key string) {
	t.Helper()
	if !errors.Is(err, storage.ErrUnavailable) || !errors.Is(err, errno) || !strings.Contains(err.Error(), `"`+key+`"`) {
		t.Errorf("%s = %v, want ErrUnavailable (%v) quoting %q", call, err, errno, key)
	}
}

// A full file system makes Create fail as unavailable, leaving nothing
// behind; once there is room again, Create works.
func TestDiskFull(t *testing.T) {
	ctx := t.Context()
	d, err := storage.NewDisk(mountTmpfs(t, 1<<20))
	if err != nil {
		t.Fatal(err)
	}
	const n = 2 << 20
	err = d.Create(ctx, "dir/big", storagetest.DataReader(1, n), n)
	checkUnavailable(t, "Create on a full file system", err, syscall.ENOSPC, "dir/big")
	if _, err := d.Stat(ctx, "dir/big"); !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("Stat after the failed Create = %v, want ErrNotExist", err)
	}
	if entries, err := os.ReadDir(filepath.Join(d.Root(), ".tmp")); err != nil || len(entries) != 0 {
		t.Errorf("temporary files after the failed Create: %v, %v", entries, err)
	}
	if err := d.Create(ctx, "dir/small", strings.NewReader("evidence"), 8); err != nil {
		t.Errorf("Create once there is room again: %v", err)
	}
}

// A file system that turns read-only makes the calls that write fail as
// unavailable; objects can still be read.
func TestDiskReadOnly(t *testing.T) {
	ctx := t.Context()
	dir := mountTmpfs(t, 1<<20)
	d, err := storage.NewDisk(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Create(ctx, "kept", strings.NewReader("evidence"), 8); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_REMOUNT|syscall.MS_RDONLY|syscall.MS_NOSUID|syscall.MS_NODEV, ""); err != nil {
		t.Fatalf("remounting read-only: %v", err)
	}
	checkUnavailable(t, "Create on a read-only file system", d.Create(ctx, "new", strings.NewReader("x"), 1), syscall.EROFS, "new")
	checkUnavailable(t, "Delete on a read-only file system", d.Delete(ctx, "kept"), syscall.EROFS, "kept")
	if info, err := d.Stat(ctx, "kept"); err != nil || info.Size != 8 {
		t.Errorf("Stat on a read-only file system = %v, %v", info, err)
	}
	if infos, err := d.List(ctx, ""); err != nil || len(infos) != 1 {
		t.Errorf("List on a read-only file system = %v, %v", infos, err)
	}
	o, err := d.Open(ctx, "kept")
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	p := make([]byte, 8)
	if _, err := o.ReadAt(p, 0); err != nil || string(p) != "evidence" {
		t.Errorf("ReadAt on a read-only file system = %q, %v", p, err)
	}
}
