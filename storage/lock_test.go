package storage_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"evx/storage"
	"evx/storage/storagetest"
)

// newLockDisk returns a Disk with a fake clock, and its LockEnv.
func newLockDisk(t *testing.T) (*storage.Disk, storagetest.LockEnv) {
	t.Helper()
	clock := storagetest.NewFakeClock(time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC))
	d, err := storage.NewDiskWithClock(filepath.Join(t.TempDir(), "store"), clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	return d, storagetest.LockEnv{
		Backend: d,
		Now:     clock.Now,
		Advance: clock.Advance,
		Versions: func(t *testing.T, key string) int {
			_, err := os.Lstat(filepath.Join(d.Root(), filepath.FromSlash(key)))
			if errors.Is(err, fs.ErrNotExist) {
				return 0
			}
			if err != nil {
				t.Fatal(err)
			}
			return 1
		},
		Hide: func(t *testing.T, key string) {
			if err := os.Remove(filepath.Join(d.Root(), filepath.FromSlash(key))); err != nil {
				t.Fatal(err)
			}
		},
	}
}

func TestDiskLocker(t *testing.T) {
	storagetest.RunLocker(t, func(t *testing.T) storagetest.LockEnv {
		_, env := newLockDisk(t)
		return env
	})
}

// The plain Backend suite passes on a Disk whose clock is not the
// system's.
func TestDiskConformanceWithClock(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Backend {
		d, _ := newLockDisk(t)
		return d
	})
}
