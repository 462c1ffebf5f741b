package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// tempDir is where Disk writes objects before linking them into place. Its
// name starts with a dot, so no valid key can reach it.
const tempDir = ".tmp"

// Disk is a [Backend] that keeps each object as a file under a root
// directory, at the key's path.
//
// Create writes into a temporary file under root/.tmp, syncs it, and links
// it into place with link(2), which fails if the name exists: that is what
// makes Create both create-only and atomic. The directory entries are then
// synced, so a nil return means the object survives a power loss. The
// temporary files of Creates interrupted by a crash stay in root/.tmp until
// [Disk.RemoveStaleTemp] removes them; they are never listed or served.
//
// Replace renames a synced temporary file over the object while it holds
// the key's lock file in root/.lock: see [Disk.Replace]. Versions are the
// hex SHA-256 of the contents. Lock files are empty and never removed.
//
// The root must be on a local POSIX file system that supports hard links,
// flock(2) and fsync on directories (ext4, xfs, btrfs, zfs), and only
// processes on one machine may share it: flock does not reach across
// machines on every network file system. Files are created with
// mode 0600 and directories with 0700: they hold evidence.
type Disk struct {
	root string
	// now is the clock that judges retention dates (see [Locker]).
	now func() time.Time
	// replacing are the in-process locks of Replace, by a stripe of the
	// key's hash: each channel holds a token while a Replace or Delete of
	// one of its keys holds the key's lock file.
	replacing [replaceStripes]chan struct{}
}

var _ Backend = (*Disk)(nil)

// NewDisk returns a Disk rooted at dir, creating dir if needed. Its locks
// are judged by the system clock.
func NewDisk(dir string) (*Disk, error) {
	return NewDiskWithClock(dir, time.Now)
}

// NewDiskWithClock is NewDisk with now as the clock that judges retention
// dates, for tests and for callers that keep their own clock.
func NewDiskWithClock(dir string, now func() time.Time) (*Disk, error) {
	if now == nil {
		return nil, fmt.Errorf("storage directory %q: no clock", dir)
	}
	root, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("storage directory %q: %w", dir, err)
	}
	if err := os.MkdirAll(filepath.Join(root, tempDir), 0o700); err != nil {
		return nil, fmt.Errorf("storage directory %q: %w", dir, err)
	}
	d := &Disk{root: root, now: now}
	for i := range d.replacing {
		d.replacing[i] = make(chan struct{}, 1)
	}
	return d, nil
}

// Root returns the absolute path of the directory d stores objects in.
func (d *Disk) Root() string { return d.root }

func (d *Disk) path(key string) string {
	return filepath.Join(d.root, filepath.FromSlash(key))
}

// Create implements [Backend.Create]. It fails with [ErrLocked] on a key
// whose lock is in force without an object: see [Locker].
func (d *Disk) Create(ctx context.Context, key string, r io.Reader, size int64) error {
	return d.create(ctx, key, r, size, nil)
}

// create is Create, and CreateLocked if lock is not nil: then the lock is
// in place before the object is linked into place.
func (d *Disk) create(ctx context.Context, key string, r io.Reader, size int64, lock *Lock) (err error) {
	if err := ValidKey(key); err != nil {
		return err
	}
	if err := checkSize(key, size); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("create %q: %w", key, err)
	}
	final := d.path(key)
	// Checked again, atomically, by link(2) below; this only spares
	// writing data that would be thrown away.
	if fi, err := os.Lstat(final); err == nil {
		if fi.IsDir() {
			return fmt.Errorf("create %q: a directory of other keys has this name", key)
		}
		return fmt.Errorf("create %q: %w", key, ErrExist)
	}

	// The temporary name tells which part of the store the object is
	// for (create-outbox-…, create-log-…): debris an operator finds, or
	// a test looks for, names its origin.
	top, _, _ := strings.Cut(key, "/")
	top = top[:min(len(top), 32)] // a file name has at most 255 bytes
	f, err := os.CreateTemp(filepath.Join(d.root, tempDir), "create-"+top+"-*")
	if err != nil {
		return fmt.Errorf("create %q: %w", key, diskFailure(err))
	}
	tmp := f.Name()
	// The temporary name goes in every case: on success the object lives
	// on under its final name.
	defer func() {
		if f != nil {
			f.Close()
		}
		os.Remove(tmp)
	}()

	er := newExactReader(ctx, key, r, size)
	if _, err := io.Copy(f, er); err != nil {
		if er.err != nil {
			return er.err
		}
		return fmt.Errorf("create %q: writing: %w", key, diskFailure(err))
	}
	if err := er.finish(); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("create %q: sync: %w", key, diskFailure(err))
	}
	err = f.Close()
	f = nil
	if err != nil {
		return fmt.Errorf("create %q: %w", key, diskFailure(err))
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("create %q: %w", key, err)
	}

	dir := filepath.Dir(final)
	if err := d.mkdirAll(dir); err != nil {
		return fmt.Errorf("create %q: %w", key, diskFailure(err))
	}
	if lock != nil {
		return d.linkLocked(ctx, key, tmp, final, *lock)
	}
	if l, ok, err := d.readLock(key); err != nil {
		return fmt.Errorf("create %q: %w", key, err)
	} else if ok && l.Locked(d.now()) {
		return lockedError("create", key, l)
	}
	return link(key, tmp, final)
}

// link links the complete temporary file tmp to key's path final, and
// syncs the directory.
func link(key, tmp, final string) error {
	dir := filepath.Dir(final)
	if err := os.Link(tmp, final); err != nil {
		if errors.Is(err, fs.ErrExist) {
			if fi, serr := os.Lstat(final); serr == nil && fi.IsDir() {
				return fmt.Errorf("create %q: a directory of other keys has this name", key)
			}
			return fmt.Errorf("create %q: %w", key, ErrExist)
		}
		if errors.Is(err, syscall.ENOTDIR) {
			return fmt.Errorf("create %q: a parent of the key is itself an object", key)
		}
		return fmt.Errorf("create %q: %w", key, diskFailure(err))
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("create %q: %w", key, diskFailure(err))
	}
	return nil
}

// mkdirAll creates dir and its missing parents below the root, syncing
// each parent after creating a child in it, so that the path to a new
// object survives a power loss.
func (d *Disk) mkdirAll(dir string) error {
	if dir == d.root {
		return nil
	}
	fi, err := os.Lstat(dir)
	if err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("a parent of the key is itself an object")
		}
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	parent := filepath.Dir(dir)
	if err := d.mkdirAll(parent); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		if errors.Is(err, fs.ErrExist) {
			// A concurrent Create made it; it also syncs parent.
			return nil
		}
		if errors.Is(err, syscall.ENOTDIR) {
			return fmt.Errorf("a parent of the key is itself an object")
		}
		return err
	}
	return syncDir(parent)
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// Open implements [Backend.Open].
func (d *Disk) Open(ctx context.Context, key string) (Object, error) {
	if err := ValidKey(key); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("open %q: %w", key, err)
	}
	f, err := os.Open(d.path(key))
	if err != nil {
		return nil, d.pathError("open", key, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open %q: %w", key, diskFailure(err))
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("open %q: %w", key, ErrNotExist)
	}
	return &diskObject{f: f, key: key, size: fi.Size()}, nil
}

// diskObject reads an object's file. It does not embed the *os.File, so
// that every read goes through Read or ReadAt, which say that an I/O
// error is the storage's (os.File's WriteTo, which io.Copy would prefer,
// would not).
type diskObject struct {
	f    *os.File
	key  string
	size int64
}

func (o *diskObject) Size() int64  { return o.size }
func (o *diskObject) Close() error { return o.f.Close() }

func (o *diskObject) Read(p []byte) (int, error) {
	n, err := o.f.Read(p)
	return n, o.readError(err)
}

func (o *diskObject) ReadAt(p []byte, off int64) (int, error) {
	n, err := o.f.ReadAt(p, off)
	return n, o.readError(err)
}

// readError passes on io.EOF and other errors as they are, except those
// of a failing file system.
func (o *diskObject) readError(err error) error {
	if diskUnavailable(err) {
		return fmt.Errorf("read %q: %w: %w", o.key, ErrUnavailable, err)
	}
	return err
}

// Stat implements [Backend.Stat].
func (d *Disk) Stat(ctx context.Context, key string) (Info, error) {
	if err := ValidKey(key); err != nil {
		return Info{}, err
	}
	if err := ctx.Err(); err != nil {
		return Info{}, fmt.Errorf("stat %q: %w", key, err)
	}
	fi, err := os.Lstat(d.path(key))
	if err != nil {
		return Info{}, d.pathError("stat", key, err)
	}
	if !fi.Mode().IsRegular() {
		return Info{}, fmt.Errorf("stat %q: %w", key, ErrNotExist)
	}
	return Info{Key: key, Size: fi.Size(), Modified: fi.ModTime()}, nil
}

// pathError maps a file system error on key's path to the Backend's
// errors: a missing file, or a missing or non-directory parent, means no
// object.
func (d *Disk) pathError(op, key string, err error) error {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return fmt.Errorf("%s %q: %w", op, key, ErrNotExist)
	}
	return fmt.Errorf("%s %q: %w", op, key, diskFailure(err))
}

// diskFailure returns err, from the file system, wrapped with
// [ErrUnavailable] if it means that the storage failed rather than the
// call: see "Unavailable storage" on [Backend].
func diskFailure(err error) error {
	if diskUnavailable(err) {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}

// diskUnavailable reports whether err is an I/O error, a full or
// read-only file system, an exceeded quota, or a process or system out of
// file descriptors: conditions that an operator (or time) must fix, not
// the caller. Permission errors are not among them: they are
// configuration errors.
func diskUnavailable(err error) bool {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return false
	}
	switch errno {
	case syscall.EIO, syscall.ENOSPC, syscall.EDQUOT, syscall.EROFS, syscall.EMFILE, syscall.ENFILE:
		return true
	}
	return false
}

// List implements [Backend.List].
func (d *Disk) List(ctx context.Context, prefix string) ([]Info, error) {
	if err := validPrefix(prefix); err != nil {
		return nil, err
	}
	// Only the directory holding the prefix's last, possibly partial,
	// segment can contain matches.
	start := d.root
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		start = d.path(prefix[:i])
	}
	infos := []Info{}
	err := filepath.WalkDir(start, func(path string, de fs.DirEntry, err error) error {
		if err != nil {
			if path == start && (errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)) {
				return fs.SkipAll
			}
			// An object deleted or a directory renamed during the walk
			// is not an error: List need not see concurrent changes.
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if path == start {
			return nil
		}
		rel, err := filepath.Rel(d.root, path)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if strings.HasPrefix(de.Name(), ".") || keyProblem(key) != "" {
			// The temporary directory, and anything else that is not an
			// object a Create could have made.
			if de.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if de.IsDir() {
			// Descend only where keys can still match the prefix.
			if strings.HasPrefix(key+"/", prefix) || strings.HasPrefix(prefix, key+"/") {
				return nil
			}
			return fs.SkipDir
		}
		if !de.Type().IsRegular() || !strings.HasPrefix(key, prefix) {
			return nil
		}
		fi, err := de.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		infos = append(infos, Info{Key: key, Size: fi.Size(), Modified: fi.ModTime()})
		return nil
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("list %q: %w", prefix, ctx.Err())
		}
		return nil, fmt.Errorf("list %q: %w", prefix, diskFailure(err))
	}
	// WalkDir's order is per directory, which differs from key order
	// ("a-b" sorts before "a/b").
	slices.SortFunc(infos, func(a, b Info) int { return strings.Compare(a.Key, b.Key) })
	return infos, nil
}

// Delete implements [Backend.Delete]. A locked object is not deleted: it
// fails with [ErrLocked] (see [Locker]).
func (d *Disk) Delete(ctx context.Context, key string) error {
	return d.remove(ctx, "delete", key)
}

// remove is Delete and Purge, which are one on Disk: an object has one
// version, its file.
func (d *Disk) remove(ctx context.Context, op, key string) error {
	if err := ValidKey(key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s %q: %w", op, key, err)
	}
	p := d.path(key)
	fi, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return d.removeStaleLock(ctx, op, key)
	}
	if err != nil {
		return fmt.Errorf("%s %q: %w", op, key, diskFailure(err))
	}
	if fi.IsDir() {
		// A directory of other keys, not an object.
		return nil
	}
	// A key that Replace has stored is deleted under its lock, so that a
	// Replace never compares against an object that Delete then removes
	// before the Replace's own takes its place. So is a key that was
	// ever locked (CreateLocked, Extend and Hold make its lock file), so
	// that its lock is read after any change to it has finished.
	unlock, err := d.lockKey(ctx, key, false)
	if err != nil {
		return fmt.Errorf("%s %q: %w", op, key, err)
	}
	defer unlock()
	l, locked, err := d.readLock(key)
	if err != nil {
		return fmt.Errorf("%s %q: %w", op, key, err)
	}
	if locked && l.Locked(d.now()) {
		return lockedError(op, key, l)
	}
	// Empty directories are left behind: removing them would race with a
	// Create that has just made one.
	if err := syscall.Unlink(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s %q: %w", op, key, diskFailure(err))
	}
	if err := syncDir(filepath.Dir(p)); err != nil {
		return fmt.Errorf("%s %q: %w", op, key, diskFailure(err))
	}
	if locked {
		// After the object: a crash in between leaves a lock whose date
		// has passed, which refuses nothing.
		if err := d.removeLock(key); err != nil {
			return fmt.Errorf("%s %q: %w", op, key, err)
		}
	}
	return nil
}

// RemoveStaleTemp removes the temporary files that Creates interrupted by
// a crash left behind, if they were last written more than olderThan ago.
// Call it at start-up with an age longer than any upload can stall, so
// that it cannot remove the file of a Create still running in another
// process that shares the root.
func (d *Disk) RemoveStaleTemp(ctx context.Context, olderThan time.Duration) (removed int, err error) {
	dir := filepath.Join(d.root, tempDir)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("remove stale temporary files: %w", err)
	}
	cutoff := time.Now().Add(-olderThan)
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return removed, err
		}
		fi, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return removed, fmt.Errorf("remove stale temporary files: %w", err)
		}
		if !fi.Mode().IsRegular() || !fi.ModTime().Before(cutoff) {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return removed, fmt.Errorf("remove stale temporary files: %w", err)
		}
		removed++
	}
	return removed, nil
}
