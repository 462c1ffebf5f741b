package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// ErrLocked means that a lock keeps the object from the change asked for:
// its retention date has not passed, or a legal hold is placed on it, or
// an Extend was asked to move its retention earlier. See [Locker].
var ErrLocked = errors.New("object locked")

// MaxRetention bounds how far ahead a lock may reach: 100 years. A lock
// in COMPLIANCE mode cannot be shortened by anyone, so a date mistyped by
// a digit would otherwise keep an object for ever.
const MaxRetention = 100 * 365 * 24 * time.Hour

// Locker is implemented by backends that keep objects from deletion until
// a date (docs/retention.md).
//
// A lock has two parts, kept per object: a retention date, before which
// the object cannot be removed and which can only move later, and a legal
// hold, which keeps it until it is released whatever the date. An object
// is locked while its retention date has not passed or a hold is placed.
// Retention dates are kept to the second: CreateLocked and Extend round
// until up to the next whole second (never down), and Lock returns the
// rounded date.
//
// Whose clock judges a retention date is the backend's: on [S3], the
// storage server's; on [Disk], the Disk's own clock (see
// [NewDiskWithClock]).
//
// The Backend's methods keep their contract, with these additions for
// locked objects:
//   - Delete of a locked object fails with an error wrapping ErrLocked,
//     and leaves it visible. (On S3 a DELETE without a version id would
//     only hide the object behind a delete marker; Delete refuses rather
//     than hide evidence that cannot be removed.)
//   - Create fails with an error wrapping ErrLocked on a key whose object
//     is gone but whose lock is still in force: on S3, versions hidden by
//     a delete marker made outside the backend; on Disk, a lock whose file
//     was removed by hand or whose CreateLocked crashed before the object
//     was in place. CreateLocked does not refuse such a key: it adds a
//     locked object, and (on Disk) keeps at least the earlier lock.
//   - A key is locked only through these methods: Replace is for keys
//     that are never locked.
//
// Lock, Extend and Hold fail with an error wrapping [ErrNotExist] if no
// object is stored under key. Every method checks its key first, as the
// Backend's do, and honours ctx.
type Locker interface {
	// CreateLocked is Create, with the object locked against deletion
	// until until (retention) from the moment it is visible: there is no
	// window in which it exists unlocked. until must be in the future and
	// at most MaxRetention ahead.
	CreateLocked(ctx context.Context, key string, r io.Reader, size int64, until time.Time) error
	// Lock returns key's lock: the retention date (zero if none) and
	// whether a legal hold is placed.
	Lock(ctx context.Context, key string) (Lock, error)
	// Extend moves key's retention later; a date earlier than the current
	// one fails (ErrLocked). The same date again changes nothing.
	Extend(ctx context.Context, key string, until time.Time) error
	// Hold places (true) or releases (false) a legal hold on key.
	Hold(ctx context.Context, key string, held bool) error
	// Purge removes every version of key. Before its retention date, or
	// while held, it fails with an error wrapping ErrLocked and removes
	// nothing. Purging a key that has no object returns nil.
	Purge(ctx context.Context, key string) error
}

// Lock is an object's lock.
type Lock struct {
	// Until is the retention date, zero if the object has none.
	Until time.Time
	// Held is whether a legal hold is placed.
	Held bool
}

// Locked reports whether l keeps its object at time now.
func (l Lock) Locked(now time.Time) bool {
	return l.Held || now.Before(l.Until)
}

// retentionDate checks until for CreateLocked and Extend against now, and
// returns it in UTC rounded up to a whole second: S3 keeps retention dates
// to the second, and rounding down would release an object early.
func retentionDate(op, key string, until, now time.Time) (time.Time, error) {
	if until.IsZero() {
		return time.Time{}, fmt.Errorf("%s %q: no retention date", op, key)
	}
	u := until.UTC().Round(0)
	if t := u.Truncate(time.Second); !t.Equal(u) {
		u = t.Add(time.Second)
	}
	if !u.After(now) {
		return time.Time{}, fmt.Errorf("%s %q: retention date %s is not in the future", op, key, u.Format(time.RFC3339))
	}
	if u.Sub(now) > MaxRetention {
		return time.Time{}, fmt.Errorf("%s %q: retention date %s is more than %d years ahead", op, key, u.Format(time.RFC3339), MaxRetention/(365*24*time.Hour))
	}
	return u, nil
}

// lockedError is the error of an operation refused because of l.
func lockedError(op, key string, l Lock) error {
	switch {
	case l.Held && !l.Until.IsZero():
		return fmt.Errorf("%s %q: %w: a legal hold is placed (retention until %s)", op, key, ErrLocked, l.Until.Format(time.RFC3339))
	case l.Held:
		return fmt.Errorf("%s %q: %w: a legal hold is placed", op, key, ErrLocked)
	}
	return fmt.Errorf("%s %q: %w: retention until %s", op, key, ErrLocked, l.Until.Format(time.RFC3339))
}
