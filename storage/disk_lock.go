package storage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// retentionDir holds Disk's locks, one small file per locked key, named
// by the hex SHA-256 of the key. Its name starts with a dot, so no valid
// key can reach it and List never shows it.
const retentionDir = ".retention"

// maxLockFileSize bounds the read of a lock file: its four lines and a
// key of at most MaxKeyLength bytes fit well within it.
const maxLockFileSize = 4 << 10

var _ Locker = (*Disk)(nil)

// The lock of an object on Disk is a file beside it, under
// root/.retention, which survives restarts like the object. Every change
// to a lock, and every removal of a locked object, happens under the key's
// lock file (root/.lock, as for Replace), so that they take turns across
// goroutines and processes; a lock is written to a synced temporary file
// and renamed into place, so it is always one whole version.
//
// This is enforcement by the program, not by the storage: anyone who may
// write the root (its owner, root) can still delete the files. The S3
// backend's locks are enforced by the server.

// CreateLocked implements [Locker.CreateLocked]. The lock file is synced
// in place before the object is linked into place, so a crash leaves at
// worst a lock without an object (see [Locker] on Create), never an
// object without its lock.
func (d *Disk) CreateLocked(ctx context.Context, key string, r io.Reader, size int64, until time.Time) error {
	if err := ValidKey(key); err != nil {
		return err
	}
	u, err := retentionDate("create", key, until, d.now())
	if err != nil {
		return err
	}
	return d.create(ctx, key, r, size, &Lock{Until: u})
}

// linkLocked links tmp to final with lock in place: under the key's lock
// file, it writes the lock, then links the object, and puts the earlier
// lock back if the link fails.
func (d *Disk) linkLocked(ctx context.Context, key, tmp, final string, lock Lock) error {
	unlock, err := d.lockKey(ctx, key, true)
	if err != nil {
		return fmt.Errorf("create %q: %w", key, err)
	}
	defer unlock()
	if _, err := os.Lstat(final); err == nil {
		return fmt.Errorf("create %q: %w", key, ErrExist)
	}
	old, hadLock, err := d.readLock(key)
	if err != nil {
		return fmt.Errorf("create %q: %w", key, err)
	}
	if hadLock {
		// A lock without an object: a crash between these two steps, or
		// a file removed by hand. The new object keeps at least it.
		if old.Until.After(lock.Until) {
			lock.Until = old.Until
		}
		lock.Held = old.Held
	}
	if err := d.writeLock(key, lock); err != nil {
		return fmt.Errorf("create %q: %w", key, err)
	}
	if err := link(key, tmp, final); err != nil {
		if _, serr := os.Lstat(final); serr == nil && !errors.Is(err, ErrExist) {
			// Linked, but the directory's sync failed: the object
			// stands, with its lock.
			return err
		}
		var rerr error
		if hadLock {
			rerr = d.writeLock(key, old)
		} else {
			rerr = d.removeLock(key)
		}
		if rerr != nil {
			return fmt.Errorf("%w; and restoring the lock: %w", err, rerr)
		}
		return err
	}
	return nil
}

// Lock implements [Locker.Lock].
func (d *Disk) Lock(ctx context.Context, key string) (Lock, error) {
	if err := ValidKey(key); err != nil {
		return Lock{}, err
	}
	if err := ctx.Err(); err != nil {
		return Lock{}, fmt.Errorf("lock %q: %w", key, err)
	}
	if err := d.objectExists("lock", key); err != nil {
		return Lock{}, err
	}
	l, _, err := d.readLock(key)
	if err != nil {
		return Lock{}, fmt.Errorf("lock %q: %w", key, err)
	}
	return l, nil
}

// Extend implements [Locker.Extend].
func (d *Disk) Extend(ctx context.Context, key string, until time.Time) error {
	if err := ValidKey(key); err != nil {
		return err
	}
	u, err := retentionDate("extend", key, until, d.now())
	if err != nil {
		return err
	}
	return d.changeLock(ctx, "extend", key, func(l Lock) (Lock, error) {
		if u.Before(l.Until) {
			return l, fmt.Errorf("extend %q: %w: retention until %s cannot move earlier, to %s",
				key, ErrLocked, l.Until.Format(time.RFC3339), u.Format(time.RFC3339))
		}
		l.Until = u
		return l, nil
	})
}

// Hold implements [Locker.Hold].
func (d *Disk) Hold(ctx context.Context, key string, held bool) error {
	if err := ValidKey(key); err != nil {
		return err
	}
	return d.changeLock(ctx, "hold", key, func(l Lock) (Lock, error) {
		l.Held = held
		return l, nil
	})
}

// changeLock applies change to the lock of key's object under the key's
// lock file.
func (d *Disk) changeLock(ctx context.Context, op, key string, change func(Lock) (Lock, error)) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s %q: %w", op, key, err)
	}
	unlock, err := d.lockKey(ctx, key, true)
	if err != nil {
		return fmt.Errorf("%s %q: %w", op, key, err)
	}
	defer unlock()
	if err := d.objectExists(op, key); err != nil {
		return err
	}
	l, had, err := d.readLock(key)
	if err != nil {
		return fmt.Errorf("%s %q: %w", op, key, err)
	}
	n, err := change(l)
	if err != nil {
		return err
	}
	if had && n == l {
		return nil
	}
	if err := d.writeLock(key, n); err != nil {
		return fmt.Errorf("%s %q: %w", op, key, err)
	}
	return nil
}

// Purge implements [Locker.Purge]. An object on Disk has one version,
// its file, so Purge is Delete. Of a lock without an object, it removes
// the lock once its date has passed.
func (d *Disk) Purge(ctx context.Context, key string) error {
	return d.remove(ctx, "purge", key)
}

// removeStaleLock removes the lock of a key that has no object once the
// lock has expired. One still in force stays, and keeps refusing Create.
func (d *Disk) removeStaleLock(ctx context.Context, op, key string) error {
	if _, err := os.Lstat(d.lockPath(key)); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	unlock, err := d.lockKey(ctx, key, false)
	if err != nil {
		return fmt.Errorf("%s %q: %w", op, key, err)
	}
	defer unlock()
	if _, err := os.Lstat(d.path(key)); err == nil {
		// Created meanwhile: not stale. (Delete need not see it.)
		return nil
	}
	l, ok, err := d.readLock(key)
	if err != nil {
		return fmt.Errorf("%s %q: %w", op, key, err)
	}
	if !ok || l.Locked(d.now()) {
		return nil
	}
	if err := d.removeLock(key); err != nil {
		return fmt.Errorf("%s %q: %w", op, key, err)
	}
	return nil
}

// objectExists returns nil if an object is stored under key, and an error
// wrapping ErrNotExist if not.
func (d *Disk) objectExists(op, key string) error {
	fi, err := os.Lstat(d.path(key))
	if err != nil {
		return d.pathError(op, key, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s %q: %w", op, key, ErrNotExist)
	}
	return nil
}

func (d *Disk) lockPath(key string) string {
	sum := sha256.Sum256([]byte(key))
	return filepath.Join(d.root, retentionDir, hex.EncodeToString(sum[:]))
}

// A lock file is four lines of text:
//
//	evx-lock 1
//	key bundles/0af3…/payload.age
//	until 2027-01-31T12:00:00Z
//	held no
//
// "until -" stands for no retention date, "held yes" for a legal hold.
// The key is there for whoever reads the root by hand, and is checked.
const lockFileMagic = "evx-lock 1"

func formatLock(key string, l Lock) []byte {
	until := "-"
	if !l.Until.IsZero() {
		until = l.Until.UTC().Format(time.RFC3339)
	}
	held := "no"
	if l.Held {
		held = "yes"
	}
	return fmt.Appendf(nil, "%s\nkey %s\nuntil %s\nheld %s\n", lockFileMagic, key, until, held)
}

// parseLock parses a lock file of key strictly: a lock that cannot be
// read must not be taken for no lock.
func parseLock(key string, b []byte) (Lock, error) {
	lines := strings.Split(string(b), "\n")
	if len(lines) != 5 || lines[4] != "" || lines[0] != lockFileMagic || lines[1] != "key "+key {
		return Lock{}, errors.New("not a lock file of this key")
	}
	var l Lock
	switch u, ok := strings.CutPrefix(lines[2], "until "); {
	case !ok:
		return Lock{}, errors.New("no retention date line")
	case u != "-":
		t, err := time.Parse(time.RFC3339, u)
		if err != nil || !strings.HasSuffix(u, "Z") || t.Nanosecond() != 0 {
			return Lock{}, fmt.Errorf("bad retention date %q", u)
		}
		l.Until = t
	}
	switch lines[3] {
	case "held yes":
		l.Held = true
	case "held no":
	default:
		return Lock{}, fmt.Errorf("bad hold line %q", lines[3])
	}
	return l, nil
}

// readLock returns the lock of key, and whether it has a lock file.
func (d *Disk) readLock(key string) (Lock, bool, error) {
	p := d.lockPath(key)
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return Lock{}, false, nil
	}
	if err != nil {
		return Lock{}, false, fmt.Errorf("reading its lock: %w", diskFailure(err))
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxLockFileSize+1))
	if err != nil {
		return Lock{}, false, fmt.Errorf("reading its lock: %w", diskFailure(err))
	}
	if len(b) > maxLockFileSize {
		return Lock{}, false, fmt.Errorf("lock file %s is over %d bytes", p, maxLockFileSize)
	}
	l, err := parseLock(key, b)
	if err != nil {
		return Lock{}, false, fmt.Errorf("lock file %s: %w", p, err)
	}
	return l, true, nil
}

// writeLock stores l as key's lock: a synced temporary file renamed into
// place, then the directory synced, so the lock is one whole version and
// survives a power loss once writeLock returns.
func (d *Disk) writeLock(key string, l Lock) error {
	dir := filepath.Join(d.root, retentionDir)
	if err := os.Mkdir(dir, 0o700); err == nil {
		if err := syncDir(d.root); err != nil {
			return fmt.Errorf("writing its lock: %w", diskFailure(err))
		}
	} else if !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("writing its lock: %w", diskFailure(err))
	}
	f, err := os.CreateTemp(filepath.Join(d.root, tempDir), "lock-*")
	if err != nil {
		return fmt.Errorf("writing its lock: %w", diskFailure(err))
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	_, err = io.Copy(f, bytes.NewReader(formatLock(key, l)))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, d.lockPath(key))
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		return fmt.Errorf("writing its lock: %w", diskFailure(err))
	}
	return nil
}

// removeLock removes key's lock file, if any, and syncs its directory.
func (d *Disk) removeLock(key string) error {
	err := syscall.Unlink(d.lockPath(key))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err == nil {
		err = syncDir(filepath.Join(d.root, retentionDir))
	}
	if err != nil {
		return fmt.Errorf("removing its lock: %w", diskFailure(err))
	}
	return nil
}
