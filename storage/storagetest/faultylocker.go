package storagetest

import (
	"context"
	"io"
	"time"

	"evx/storage"
)

// The Locker methods, for [FaultyLocker.Inject].
const (
	OpCreateLocked Op = "create-locked"
	OpLock         Op = "lock"
	OpExtend       Op = "extend"
	OpHold         Op = "hold"
	OpPurge        Op = "purge"
)

// FaultyLocker is a [Faulty] over a backend that also locks objects: it
// makes chosen calls of the [storage.Locker] methods fail too, so that a
// test can show that a caller keeps working when a purge or a hold fails,
// and retries. Without injected faults it passes every call through.
type FaultyLocker struct {
	*Faulty
	locker storage.Locker
}

var (
	_ storage.Backend = (*FaultyLocker)(nil)
	_ storage.Locker  = (*FaultyLocker)(nil)
)

// NewFaultyLocker returns a FaultyLocker that passes calls to b.
func NewFaultyLocker(b interface {
	storage.Backend
	storage.Locker
}) *FaultyLocker {
	return &FaultyLocker{Faulty: NewFaulty(b), locker: b}
}

// CreateLocked implements [storage.Locker.CreateLocked], as Create does
// [storage.Backend.Create].
func (f *FaultyLocker) CreateLocked(ctx context.Context, key string, r io.Reader, size int64, until time.Time) error {
	ft := f.take(OpCreateLocked, key)
	if ft.when == BeforePersist {
		if size > 0 {
			io.Copy(io.Discard, io.LimitReader(r, size))
		}
		return ft.error(key)
	}
	if err := f.locker.CreateLocked(ctx, key, r, size, until); err != nil {
		return err
	}
	return ft.after(key)
}

// Lock implements [storage.Locker.Lock].
func (f *FaultyLocker) Lock(ctx context.Context, key string) (storage.Lock, error) {
	ft := f.take(OpLock, key)
	if ft.when == BeforePersist {
		return storage.Lock{}, ft.error(key)
	}
	l, err := f.locker.Lock(ctx, key)
	if err == nil && ft.when == AfterPersist {
		return storage.Lock{}, ft.error(key)
	}
	return l, err
}

// Extend implements [storage.Locker.Extend].
func (f *FaultyLocker) Extend(ctx context.Context, key string, until time.Time) error {
	return f.change(OpExtend, key, func() error { return f.locker.Extend(ctx, key, until) })
}

// Hold implements [storage.Locker.Hold].
func (f *FaultyLocker) Hold(ctx context.Context, key string, held bool) error {
	return f.change(OpHold, key, func() error { return f.locker.Hold(ctx, key, held) })
}

// Purge implements [storage.Locker.Purge].
func (f *FaultyLocker) Purge(ctx context.Context, key string) error {
	return f.change(OpPurge, key, func() error { return f.locker.Purge(ctx, key) })
}

// change runs a call of op on key that changes the storage, with the
// fault injected for it, if any.
func (f *FaultyLocker) change(op Op, key string, call func() error) error {
	ft := f.take(op, key)
	if ft.when == BeforePersist {
		return ft.error(key)
	}
	if err := call(); err != nil {
		return err
	}
	return ft.after(key)
}

// after is the error of an AfterPersist fault, once its call took effect;
// nil for no fault.
func (ft fault) after(key string) error {
	if ft.when == AfterPersist {
		return ft.error(key)
	}
	return nil
}
