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

// A Disk's locks survive a restart: a new Disk on the same root reads
// them and enforces them.
func TestDiskLockSurvivesRestart(t *testing.T) {
	ctx := t.Context()
	dir := filepath.Join(t.TempDir(), "store")
	clock := storagetest.NewFakeClock(time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC))
	d, err := storage.NewDiskWithClock(dir, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	until := clock.Now().Add(time.Hour)
	if err := d.CreateLocked(ctx, "a/k", strings.NewReader("evidence"), 8, until); err != nil {
		t.Fatal(err)
	}
	if err := d.Hold(ctx, "a/k", true); err != nil {
		t.Fatal(err)
	}
	d2, err := storage.NewDiskWithClock(dir, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	l, err := d2.Lock(ctx, "a/k")
	if err != nil {
		t.Fatal(err)
	}
	if !l.Until.Equal(until) || !l.Held {
		t.Errorf("Lock after restart = %+v, want until %v, held", l, until)
	}
	if err := d2.Delete(ctx, "a/k"); !errors.Is(err, storage.ErrLocked) {
		t.Errorf("Delete after restart = %v, want ErrLocked", err)
	}
	// The locks are never listed.
	infos, err := d2.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 1 || infos[0].Key != "a/k" {
		t.Errorf("List = %v, want only a/k", infos)
	}
}

// A lock file that cannot be read is not taken for no lock: Delete and
// Purge fail and leave the object.
func TestDiskCorruptLock(t *testing.T) {
	ctx := t.Context()
	d, env := newLockDisk(t)
	if err := d.CreateLocked(ctx, "k", strings.NewReader("x"), 1, env.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(d.Root(), ".retention", "*"))
	if err != nil || len(files) != 1 {
		t.Fatalf("lock files = %v, %v; want one", files, err)
	}
	b, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	if want := "evx-lock 1\nkey k\nuntil 2026-12-03T13:00:00Z\nheld no\n"; string(b) != want {
		t.Errorf("lock file holds %q, want %q", b, want)
	}
	for _, bad := range []string{"", "evx-lock 1\nkey k\nuntil 2026-12-03T13:00:00Z\nheld maybe\n", "evx-lock 1\nkey other\nuntil -\nheld no\n", strings.Repeat("x", 5000)} {
		if err := os.WriteFile(files[0], []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		env.Advance(2 * time.Hour)
		for call, err := range map[string]error{"Delete": d.Delete(ctx, "k"), "Purge": d.Purge(ctx, "k")} {
			if err == nil || !strings.Contains(err.Error(), "lock file") {
				t.Errorf("%s with lock file %.20q = %v, want an error about the lock file", call, bad, err)
			}
		}
		if _, err := d.Stat(ctx, "k"); err != nil {
			t.Errorf("object gone after a refused Delete: %v", err)
		}
	}
}

// A lock whose object is gone (a crash of CreateLocked before the link,
// or a file removed by hand) refuses Create until its date; then Purge or
// Delete of the key removes it.
func TestDiskStaleLock(t *testing.T) {
	ctx := t.Context()
	d, env := newLockDisk(t)
	if err := d.CreateLocked(ctx, "k", strings.NewReader("x"), 1, env.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	env.Hide(t, "k")
	if err := d.Purge(ctx, "k"); err != nil {
		t.Errorf("Purge of a key without an object = %v, want nil", err)
	}
	if err := d.Create(ctx, "k", strings.NewReader("y"), 1); !errors.Is(err, storage.ErrLocked) {
		t.Errorf("Create over a stale lock in force = %v, want ErrLocked", err)
	}
	env.Advance(2 * time.Hour)
	if err := d.Purge(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	if files, _ := filepath.Glob(filepath.Join(d.Root(), ".retention", "*")); len(files) != 0 {
		t.Errorf("lock files left after Purge of an expired stale lock: %v", files)
	}
	if err := d.Create(ctx, "k", strings.NewReader("y"), 1); err != nil {
		t.Errorf("Create after the stale lock expired: %v", err)
	}
	if l, err := d.Lock(ctx, "k"); err != nil || l != (storage.Lock{}) {
		t.Errorf("Lock of the new plain object = %+v, %v; want none", l, err)
	}
}

// Purge and Delete remove a lock file with its object.
func TestDiskPurgeRemovesLock(t *testing.T) {
	ctx := t.Context()
	d, env := newLockDisk(t)
	for _, key := range []string{"p", "d"} {
		if err := d.CreateLocked(ctx, key, strings.NewReader("x"), 1, env.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	env.Advance(2 * time.Hour)
	if err := d.Purge(ctx, "p"); err != nil {
		t.Fatal(err)
	}
	if err := d.Delete(ctx, "d"); err != nil {
		t.Fatal(err)
	}
	if files, _ := filepath.Glob(filepath.Join(d.Root(), ".retention", "*")); len(files) != 0 {
		t.Errorf("lock files left after Purge and Delete: %v", files)
	}
}

// A CreateLocked that loses the race to a plain Create of its key leaves
// the winner's object without a lock.
func TestDiskCreateLockedLosesRace(t *testing.T) {
	ctx := t.Context()
	d, env := newLockDisk(t)
	r := &hookReader{r: strings.NewReader("locked"), at: 3, hook: func() {
		if err := d.Create(ctx, "k", strings.NewReader("plain"), 5); err != nil {
			t.Error(err)
		}
	}}
	err := d.CreateLocked(ctx, "k", r, 6, env.Now().Add(time.Hour))
	if !errors.Is(err, storage.ErrExist) {
		t.Fatalf("CreateLocked after a plain Create won = %v, want ErrExist", err)
	}
	if l, err := d.Lock(ctx, "k"); err != nil || l != (storage.Lock{}) {
		t.Errorf("Lock of the plain winner = %+v, %v; want none", l, err)
	}
	if err := d.Delete(ctx, "k"); err != nil {
		t.Errorf("Delete of the plain winner: %v", err)
	}
}

func TestNewDiskWithClockNil(t *testing.T) {
	if _, err := storage.NewDiskWithClock(t.TempDir(), nil); err == nil {
		t.Error("NewDiskWithClock without a clock succeeded")
	}
}
