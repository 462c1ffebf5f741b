package storage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// lockDir holds Disk's lock files, one per key ever written with Replace.
// Its name starts with a dot, so no valid key can reach it.
const lockDir = ".lock"

// replaceStripes is how many in-process locks a Disk spreads its keys
// over; keys that share one merely wait for each other.
const replaceStripes = 32

// diskVersion is the version of an object on [Disk]: the hex SHA-256 of
// its contents.
func diskVersion(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// ReadVersion implements [Backend.ReadVersion]. The version is the hex
// SHA-256 of the data. It takes no lock: the file it opens is never written
// once in place (Replace renames a new file over it), so the bytes it reads
// are one version's.
func (d *Disk) ReadVersion(ctx context.Context, key string, limit int64) ([]byte, string, error) {
	if err := checkReadVersion(ctx, key, limit); err != nil {
		return nil, "", err
	}
	f, err := os.Open(d.path(key))
	if err != nil {
		return nil, "", d.pathError("read", key, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, "", fmt.Errorf("read %q: %w", key, diskFailure(err))
	}
	if !fi.Mode().IsRegular() {
		return nil, "", fmt.Errorf("read %q: %w", key, ErrNotExist)
	}
	if fi.Size() > limit {
		return nil, "", tooLarge(key, fi.Size(), limit)
	}
	// One byte more than the size, to see the end where it should be.
	data := make([]byte, fi.Size()+1)
	n, err := io.ReadFull(f, data)
	if err != io.ErrUnexpectedEOF && err != io.EOF {
		if err == nil {
			return nil, "", tooLarge(key, fi.Size()+1, limit)
		}
		return nil, "", fmt.Errorf("read %q: %w", key, diskFailure(err))
	}
	if int64(n) != fi.Size() {
		// Files are never truncated in place; only a hand-edited root
		// shows this.
		return nil, "", fmt.Errorf("read %q: the file shrank from %d to %d bytes while read", key, fi.Size(), n)
	}
	data = data[:n]
	return data, diskVersion(data), nil
}

// Replace implements [Backend.Replace].
//
// It holds the key's lock file (root/.lock/<SHA-256 of the key>) with
// flock(2) from reading the current version to renaming the new file into
// place, so Replaces of one key by any goroutine or process on this
// machine take turns: each compares against what the last one stored.
// flock locks belong to an open file description, so two opens in one
// process exclude each other too, and the kernel drops a lock whose
// process dies. Within a process, Replaces of one key first queue on an
// in-process lock, so that waiting for it honours ctx without polling.
//
// The new contents go into a temporary file under root/.tmp, which is
// synced and then renamed over the object: rename(2) swaps the directory
// entry atomically, so readers open either the old file or the new one,
// complete; and a file already open keeps its old contents. The directory
// is then synced, so a nil return means the new object survives a power
// loss. A crash at any point leaves the old object or the new one.
func (d *Disk) Replace(ctx context.Context, key string, data []byte, ifVersion string) (string, error) {
	if err := ValidKey(key); err != nil {
		return "", err
	}
	if err := checkReplaceSize(key, data); err != nil {
		return "", err
	}
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("replace %q: %w", key, err)
	}
	unlock, err := d.lockKey(ctx, key, true)
	if err != nil {
		return "", fmt.Errorf("replace %q: %w", key, err)
	}
	defer unlock()

	final := d.path(key)
	stored, matchable, err := d.storedVersion(key, final)
	if err != nil {
		return "", err
	}
	if !matchable || stored != ifVersion {
		return "", mismatch(key, stored, ifVersion)
	}

	f, err := os.CreateTemp(filepath.Join(d.root, tempDir), "replace-*")
	if err != nil {
		return "", fmt.Errorf("replace %q: %w", key, diskFailure(err))
	}
	tmp := f.Name()
	renamed := false
	defer func() {
		if f != nil {
			f.Close()
		}
		if !renamed {
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return "", fmt.Errorf("replace %q: writing: %w", key, diskFailure(err))
	}
	if err := f.Sync(); err != nil {
		return "", fmt.Errorf("replace %q: sync: %w", key, diskFailure(err))
	}
	err = f.Close()
	f = nil
	if err != nil {
		return "", fmt.Errorf("replace %q: %w", key, diskFailure(err))
	}
	dir := filepath.Dir(final)
	if err := d.mkdirAll(dir); err != nil {
		return "", fmt.Errorf("replace %q: %w", key, diskFailure(err))
	}
	// The last moment to give up without effect.
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("replace %q: %w", key, err)
	}
	if err := os.Rename(tmp, final); err != nil {
		if errors.Is(err, syscall.ENOTDIR) {
			return "", fmt.Errorf("replace %q: a parent of the key is itself an object", key)
		}
		return "", fmt.Errorf("replace %q: %w", key, diskFailure(err))
	}
	renamed = true
	if err := syncDir(dir); err != nil {
		return "", fmt.Errorf("replace %q: %w", key, diskFailure(err))
	}
	return diskVersion(data), nil
}

// storedVersion returns the version of the object stored at path, or ""
// if there is none. An object that Replace cannot have stored (one larger
// than MaxReplaceSize) is not read: matchable is false, and stored only
// says why.
func (d *Disk) storedVersion(key, path string) (stored string, matchable bool, err error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", true, nil
	}
	if errors.Is(err, syscall.ENOTDIR) {
		return "", false, fmt.Errorf("replace %q: a parent of the key is itself an object", key)
	}
	if err != nil {
		return "", false, fmt.Errorf("replace %q: %w", key, diskFailure(err))
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", false, fmt.Errorf("replace %q: %w", key, diskFailure(err))
	}
	if fi.IsDir() {
		return "", false, fmt.Errorf("replace %q: a directory of other keys has this name", key)
	}
	if !fi.Mode().IsRegular() || fi.Size() > MaxReplaceSize {
		return fmt.Sprintf("none: %d bytes, over the limit", fi.Size()), false, nil
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.LimitReader(f, MaxReplaceSize+1)); err != nil {
		return "", false, fmt.Errorf("replace %q: reading the stored object: %w", key, diskFailure(err))
	}
	return hex.EncodeToString(h.Sum(nil)), true, nil
}

// lockKey takes the locks that serialise Replaces (and Deletes) of key:
// first this process's, then the lock file's. It returns the function
// that releases both. If create is false and the key has no lock file,
// no Replace has ever stored the key: lockKey then takes no lock and
// returns a no-op.
func (d *Disk) lockKey(ctx context.Context, key string, create bool) (unlock func(), err error) {
	sum := sha256.Sum256([]byte(key))
	lockPath := filepath.Join(d.root, lockDir, hex.EncodeToString(sum[:]))
	if !create {
		if _, err := os.Lstat(lockPath); errors.Is(err, fs.ErrNotExist) {
			return func() {}, nil
		} else if err != nil {
			return nil, diskFailure(err)
		}
	}

	stripe := d.replacing[int(sum[0])%replaceStripes]
	select {
	case stripe <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	f, err := openLockFile(lockPath)
	if err != nil {
		<-stripe
		return nil, diskFailure(err)
	}
	if err := flockContext(ctx, f); err != nil {
		f.Close()
		<-stripe
		return nil, err
	}
	return func() {
		// Closing the file releases the flock.
		f.Close()
		<-stripe
	}, nil
}

// openLockFile opens the lock file at path, creating it if need be. A new
// lock file's directory entry is synced: Delete relies on finding the lock
// file of every key that Replace has stored, also after a power loss.
func openLockFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return f, err
	}
	dir := filepath.Dir(path)
	if err := os.Mkdir(dir, 0o700); err == nil {
		if err := syncDir(filepath.Dir(dir)); err != nil {
			return nil, err
		}
	} else if !errors.Is(err, fs.ErrExist) {
		return nil, err
	}
	f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syncDir(dir); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// flockContext takes an exclusive flock on f, waiting until ctx is done.
// A blocking flock(2) cannot be cancelled, so it tries without blocking
// and, while another process holds the lock, tries again after a pause
// that grows from 1 ms to 32 ms. The holder keeps the lock for one read,
// one small write and two fsyncs.
func flockContext(ctx context.Context, f *os.File) error {
	fd := int(f.Fd())
	pause := time.Millisecond
	for {
		err := syscall.Flock(fd, syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			return fmt.Errorf("lock %s: %w", f.Name(), err)
		}
		t := time.NewTimer(pause)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
		pause = min(2*pause, 32*time.Millisecond)
	}
}
