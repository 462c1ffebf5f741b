package storage_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
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

// A FaultyLocker without faults passes the lock suite, and its faults
// strike Purge before and after it takes effect.
func TestFaultyLocker(t *testing.T) {
	storagetest.RunLocker(t, func(t *testing.T) storagetest.LockEnv {
		d, env := newLockDisk(t)
		env.Backend = storagetest.NewFaultyLocker(d)
		return env
	})
	d, env := newLockDisk(t)
	f := storagetest.NewFaultyLocker(d)
	ctx := t.Context()
	until := env.Now().Add(time.Minute)
	if err := f.CreateLocked(ctx, "k", strings.NewReader("x"), 1, until); err != nil {
		t.Fatal(err)
	}
	env.Advance(2 * time.Minute)
	f.Inject(storagetest.OpPurge, "k", storagetest.BeforePersist)
	if err := f.Purge(ctx, "k"); !errors.Is(err, storagetest.ErrInjected) {
		t.Fatalf("Purge with a fault before: %v, want ErrInjected", err)
	}
	if _, err := d.Stat(ctx, "k"); err != nil {
		t.Fatalf("a Purge failing before it took effect removed the object: %v", err)
	}
	f.Inject(storagetest.OpPurge, "k", storagetest.AfterPersist)
	if err := f.Purge(ctx, "k"); !errors.Is(err, storagetest.ErrInjected) {
		t.Fatalf("Purge with a fault after: %v, want ErrInjected", err)
	}
	if _, err := d.Stat(ctx, "k"); !errors.Is(err, storage.ErrNotExist) {
		t.Fatalf("a Purge failing after it took effect left the object: %v", err)
	}
	if f.Pending() != 0 {
		t.Errorf("%d faults left", f.Pending())
	}
}
