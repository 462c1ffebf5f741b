package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
)

var _ Locker = (*S3)(nil)

// maxPurgeVersions bounds the versions of one key that Purge holds in
// memory. A key written once has one, and a delete marker or two.
const maxPurgeVersions = 10000

// The locks of the S3 backend are S3 Object Lock: retention (in the mode
// of S3Config.LockMode) and legal hold of the object's version, which the
// server enforces against every client, whatever its credentials, until
// the date by the server's clock. They need a bucket with Object Lock
// enabled (S3Config.ObjectLock), which is also versioned: a DELETE without
// a version id only adds a delete marker, and only a DELETE of a version
// removes data. So Purge removes each version by its id.

// errNoObjectLock is the error of Locker methods on a backend configured
// without Object Lock.
func (s *S3) errNoObjectLock(op, key string) error {
	return fmt.Errorf("%s %q: object lock is not configured for bucket %q", op, key, s.bucket)
}

// CreateLocked implements [Locker.CreateLocked]. The retention travels
// with the upload (the PUT, or the start of a multipart upload), so the
// server commits the object already locked.
func (s *S3) CreateLocked(ctx context.Context, key string, r io.Reader, size int64, until time.Time) error {
	if err := ValidKey(key); err != nil {
		return err
	}
	if !s.objectLock {
		return s.errNoObjectLock("create", key)
	}
	u, err := retentionDate("create", key, until, time.Now())
	if err != nil {
		return err
	}
	return s.create(ctx, key, r, size, &Lock{Until: u})
}

// Lock implements [Locker.Lock]: the lock of the current version.
func (s *S3) Lock(ctx context.Context, key string) (Lock, error) {
	if err := ValidKey(key); err != nil {
		return Lock{}, err
	}
	if !s.objectLock {
		return Lock{}, s.errNoObjectLock("lock", key)
	}
	if err := ctx.Err(); err != nil {
		return Lock{}, fmt.Errorf("lock %q: %w", key, err)
	}
	l, _, err := s.lock(ctx, "lock", key, "")
	return l, err
}

// lock returns the lock of a version of key (the current one if
// versionID is empty), and its version id.
func (s *S3) lock(ctx context.Context, op, key, versionID string) (Lock, objectVersion, error) {
	oi, err := s.client.StatObject(ctx, s.bucket, key, minio.StatObjectOptions{VersionID: versionID})
	if err != nil {
		return Lock{}, objectVersion{}, s.objectError(ctx, op, key, err)
	}
	l, err := s3Lock(oi)
	if err != nil {
		return Lock{}, objectVersion{}, fmt.Errorf("%s %q: %w", op, key, err)
	}
	return l, objectVersion{id: oi.VersionID, mode: minio.RetentionMode(oi.Metadata.Get("X-Amz-Object-Lock-Mode"))}, nil
}

// objectVersion is what Extend and Hold need of the version they change.
type objectVersion struct {
	id   string
	mode minio.RetentionMode
}

// s3Lock reads the lock from the headers of a HEAD answer.
func s3Lock(oi minio.ObjectInfo) (Lock, error) {
	var l Lock
	if v := oi.Metadata.Get("X-Amz-Object-Lock-Retain-Until-Date"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return Lock{}, fmt.Errorf("the server's retention date %q: %w", v, err)
		}
		l.Until = t.UTC()
	}
	switch v := oi.Metadata.Get("X-Amz-Object-Lock-Legal-Hold"); {
	case strings.EqualFold(v, "ON"):
		l.Held = true
	case v == "" || strings.EqualFold(v, "OFF"):
	default:
		return Lock{}, fmt.Errorf("the server's legal hold status %q is neither ON nor OFF", v)
	}
	return l, nil
}

// Extend implements [Locker.Extend] with a PUT of the current version's
// retention, in the version's own mode (the configured one if it has
// none). A COMPLIANCE retention cannot be shortened by anyone; the
// comparison here makes a shorter date fail alike in GOVERNANCE mode,
// without asking the server.
func (s *S3) Extend(ctx context.Context, key string, until time.Time) error {
	if err := ValidKey(key); err != nil {
		return err
	}
	if !s.objectLock {
		return s.errNoObjectLock("extend", key)
	}
	u, err := retentionDate("extend", key, until, time.Now())
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("extend %q: %w", key, err)
	}
	l, v, err := s.lock(ctx, "extend", key, "")
	if err != nil {
		return err
	}
	switch {
	case u.Before(l.Until):
		return fmt.Errorf("extend %q: %w: retention until %s cannot move earlier, to %s",
			key, ErrLocked, l.Until.Format(time.RFC3339), u.Format(time.RFC3339))
	case u.Equal(l.Until):
		return nil
	}
	mode := v.mode
	if !mode.IsValid() {
		mode = s.lockMode
	}
	err = s.client.PutObjectRetention(ctx, s.bucket, key, minio.PutObjectRetentionOptions{
		Mode: &mode, RetainUntilDate: &u, VersionID: v.id,
	})
	if err != nil {
		if ctx.Err() == nil {
			// A concurrent Extend to a later date may have come first:
			// the server then refuses to shorten it.
			if now, _, rerr := s.lock(ctx, "extend", key, v.id); rerr == nil && now.Until.After(u) {
				return fmt.Errorf("extend %q: %w: retention until %s cannot move earlier, to %s",
					key, ErrLocked, now.Until.Format(time.RFC3339), u.Format(time.RFC3339))
			}
		}
		return s.objectError(ctx, "extend", key, err)
	}
	return nil
}

// Hold implements [Locker.Hold] on the current version.
func (s *S3) Hold(ctx context.Context, key string, held bool) error {
	if err := ValidKey(key); err != nil {
		return err
	}
	if !s.objectLock {
		return s.errNoObjectLock("hold", key)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("hold %q: %w", key, err)
	}
	_, v, err := s.lock(ctx, "hold", key, "")
	if err != nil {
		return err
	}
	status := minio.LegalHoldDisabled
	if held {
		status = minio.LegalHoldEnabled
	}
	err = s.client.PutObjectLegalHold(ctx, s.bucket, key, minio.PutObjectLegalHoldOptions{
		Status: &status, VersionID: v.id,
	})
	if err != nil {
		return s.objectError(ctx, "hold", key, err)
	}
	return nil
}

// versions lists every version and delete marker of key, newest first.
func (s *S3) versions(ctx context.Context, op, key string) ([]minio.ObjectInfo, error) {
	lctx, cancel := context.WithCancel(ctx)
	ch := s.client.ListObjects(lctx, s.bucket, minio.ListObjectsOptions{Prefix: key, WithVersions: true, Recursive: true})
	defer func() {
		// minio-go's listing goroutine stops once lctx is done; drain
		// its channel so that it has returned when versions does.
		cancel()
		for range ch {
		}
	}()
	var vs []minio.ObjectInfo
	for oi := range ch {
		if oi.Err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("%s %q: %w", op, key, ctx.Err())
			}
			return nil, fmt.Errorf("%s %q: listing versions: %w", op, key, s3Failure(oi.Err))
		}
		if oi.Key != key {
			continue // a longer key with this prefix
		}
		if len(vs) == maxPurgeVersions {
			return nil, fmt.Errorf("%s %q: more than %d versions", op, key, maxPurgeVersions)
		}
		vs = append(vs, oi)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s %q: %w", op, key, err)
	}
	return vs, nil
}

// lockedVersion is a version of a key with its lock.
type lockedVersion struct {
	id   string
	lock Lock
}

// versionLocks returns the versions of key that are objects, with their
// locks, and the ids of its delete markers.
func (s *S3) versionLocks(ctx context.Context, op, key string) (objects []lockedVersion, markers []string, err error) {
	vs, err := s.versions(ctx, op, key)
	if err != nil {
		return nil, nil, err
	}
	return s.locksOf(ctx, op, key, vs)
}

// locksOf is versionLocks of the versions vs of key.
func (s *S3) locksOf(ctx context.Context, op, key string, vs []minio.ObjectInfo) (objects []lockedVersion, markers []string, err error) {
	for _, v := range vs {
		if v.IsDeleteMarker {
			markers = append(markers, v.VersionID)
			continue
		}
		l, _, err := s.lock(ctx, op, key, v.VersionID)
		if errors.Is(err, ErrNotExist) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, nil, err
		}
		objects = append(objects, lockedVersion{id: v.VersionID, lock: l})
	}
	return objects, markers, nil
}

// checkHiddenLocks is Create's check, with Object Lock, that no locked
// version of key hides behind a delete marker: after a DELETE without a
// version id made outside the backend, a Create would otherwise succeed
// over the marker and leave the locked version unseen. It costs one HEAD
// when the key has never been stored, and lists versions only when the
// current one is a delete marker. The retention dates are judged by this
// process's clock.
func (s *S3) checkHiddenLocks(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("create %q: %w", key, err)
	}
	oi, err := s.client.StatObject(ctx, s.bucket, key, minio.StatObjectOptions{})
	if err == nil {
		return fmt.Errorf("create %q: %w", key, ErrExist)
	}
	if err := s.objectError(ctx, "create", key, err); !errors.Is(err, ErrNotExist) {
		return err
	}
	if !oi.IsDeleteMarker {
		return nil
	}
	objects, _, err := s.versionLocks(ctx, "create", key)
	if err != nil {
		return err
	}
	now := time.Now()
	for _, v := range objects {
		if v.lock.Locked(now) {
			return fmt.Errorf("create %q: %w: a deleted version (%s) is still locked (retention until %s, held %t)",
				key, ErrLocked, v.id, v.lock.Until.Format(time.RFC3339), v.lock.Held)
		}
	}
	return nil
}

// Purge implements [Locker.Purge]. It reads the lock of every version of
// key first and removes nothing if one is held. It then removes the
// versions by their ids, the one with the latest retention date first, so
// that the server's clock decides: if the server refuses that one, Purge
// has removed nothing; if it accepts it, it accepts the others, whose
// dates are earlier. Delete markers go last, so that a failed Purge never
// makes a deleted object visible again. A Hold or Extend of an older
// version that runs meanwhile can still stop Purge midway; it then says
// how many versions it removed.
func (s *S3) Purge(ctx context.Context, key string) error {
	if err := ValidKey(key); err != nil {
		return err
	}
	if !s.objectLock {
		return s.errNoObjectLock("purge", key)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("purge %q: %w", key, err)
	}
	vs, err := s.versions(ctx, "purge", key)
	if err != nil {
		return err
	}
	if len(vs) == 1 && !vs[0].IsDeleteMarker {
		return s.purgeOnly(ctx, key, vs[0].VersionID)
	}
	objects, markers, err := s.locksOf(ctx, "purge", key, vs)
	if err != nil {
		return err
	}
	for _, v := range objects {
		if v.lock.Held {
			return lockedError("purge", key, v.lock)
		}
	}
	slices.SortStableFunc(objects, func(a, b lockedVersion) int { return b.lock.Until.Compare(a.lock.Until) })
	for i, v := range objects {
		err := s.client.RemoveObject(ctx, s.bucket, key, minio.RemoveObjectOptions{VersionID: v.id})
		switch {
		case err == nil:
			continue
		case ctx.Err() != nil:
			return fmt.Errorf("purge %q: %w (%d of %d versions removed)", key, ctx.Err(), i, len(objects)+len(markers))
		case lockRefusal(err, v.lock) && i == 0:
			return lockedError("purge", key, v.lock)
		case lockRefusal(err, v.lock):
			return fmt.Errorf("purge %q: %w: the server refused version %s after %d of %d versions were removed: %w",
				key, ErrLocked, v.id, i, len(objects)+len(markers), err)
		}
		return fmt.Errorf("purge %q: version %s (%d of %d versions removed): %w", key, v.id, i, len(objects)+len(markers), s3Failure(err))
	}
	for i, id := range markers {
		err := s.client.RemoveObject(ctx, s.bucket, key, minio.RemoveObjectOptions{VersionID: id})
		if err != nil {
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			return fmt.Errorf("purge %q: delete marker %s (%d of %d versions removed): %w", key, id, len(objects)+i, len(objects)+len(markers), s3Failure(err))
		}
	}
	return nil
}

// purgeOnly is Purge of key's one version, id, the usual case: the server
// judges the lock, and the lock is read only to tell a refusal for it from
// another failure. It saves a request per key.
func (s *S3) purgeOnly(ctx context.Context, key, id string) error {
	err := s.client.RemoveObject(ctx, s.bucket, key, minio.RemoveObjectOptions{VersionID: id})
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return fmt.Errorf("purge %q: %w", key, ctx.Err())
	}
	l, _, lerr := s.lock(ctx, "purge", key, id)
	switch {
	case errors.Is(lerr, ErrNotExist):
		return nil // removed meanwhile
	case lerr == nil && (l.Held || lockRefusal(err, l)):
		return lockedError("purge", key, l)
	}
	return fmt.Errorf("purge %q: version %s: %w", key, id, s3Failure(err))
}

// lockRefusal reports whether err is a server's refusal to remove a
// version locked by l: AWS S3 answers AccessDenied, MinIO InvalidRequest
// ("Object is WORM protected"). A version without a retention date (and
// not held, which Purge checked) is refused for another reason, such as
// missing permissions, and that is not ErrLocked.
func lockRefusal(err error, l Lock) bool {
	if l.Until.IsZero() {
		return false
	}
	switch minio.ToErrorResponse(err).Code {
	case "AccessDenied", "InvalidRequest", "ObjectLocked":
		return true
	}
	return false
}
