package storagetest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"evx/storage"
)

// Op names a [storage.Backend] method, for [Faulty.Inject].
type Op string

const (
	OpCreate Op = "create"
	OpOpen   Op = "open"
	OpStat   Op = "stat"
	OpList   Op = "list"
	OpDelete Op = "delete"
	// OpReadVersion and OpReplace are ReadVersion and Replace.
	OpReadVersion Op = "read-version"
	OpReplace     Op = "replace"
)

// When says at which point an injected fault strikes.
type When int

const (
	// BeforePersist makes the call fail without any effect, as a backend
	// that fails before committing does. A Create still reads its input
	// (up to its size) first, as a real upload would before failing at the
	// commit.
	BeforePersist When = iota + 1
	// AfterPersist lets the call take effect and then fail, as when a
	// remote backend's response is lost or the process crashes just after
	// the commit. For Open, the object is closed and not returned; a
	// Replace stores its data, and the caller does not learn the new
	// version.
	AfterPersist
)

func (w When) String() string {
	switch w {
	case BeforePersist:
		return "before persisting"
	case AfterPersist:
		return "after persisting"
	}
	return fmt.Sprintf("When(%d)", int(w))
}

// ErrInjected is wrapped by every error that a [Faulty] injects.
var ErrInjected = errors.New("injected storage fault")

// Faulty wraps a [storage.Backend] and makes chosen calls fail, for testing
// how callers handle storage failures. Without injected faults it passes
// every call through unchanged.
type Faulty struct {
	storage.Backend

	mu     sync.Mutex
	faults []fault
}

type fault struct {
	op     Op
	key    string
	prefix bool // key is a prefix of the keys the fault strikes
	when   When
	err    error // also wrapped by the fault's error, if not nil
}

var _ storage.Backend = (*Faulty)(nil)

// NewFaulty returns a Faulty that passes calls to b.
func NewFaulty(b storage.Backend) *Faulty {
	return &Faulty{Backend: b}
}

// Inject arms a fault for the next call of op on key (the prefix, for
// OpList), or on any key if key is "". Each fault strikes once; faults for
// the same call strike in the order they were injected. An AfterPersist
// fault is used up by the next matching call even if that call fails by
// itself (an invalid key, an existing object), since it then has nothing to
// undo.
func (f *Faulty) Inject(op Op, key string, when When) {
	f.InjectError(op, key, when, nil)
}

// InjectError is Inject with a fault whose error also wraps err, such as
// [storage.ErrUnavailable] to test how callers treat a storage outage.
func (f *Faulty) InjectError(op Op, key string, when When, err error) {
	if when != BeforePersist && when != AfterPersist {
		panic(fmt.Sprintf("storagetest: invalid When %d", when))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults = append(f.faults, fault{op: op, key: key, when: when, err: err})
}

// InjectUnder is Inject for the next call of op on any key that starts
// with prefix: for a test that cannot know the key in advance while other
// work of the same kind goes on in the background.
func (f *Faulty) InjectUnder(op Op, prefix string, when When) {
	if when != BeforePersist && when != AfterPersist {
		panic(fmt.Sprintf("storagetest: invalid When %d", when))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults = append(f.faults, fault{op: op, key: prefix, prefix: true, when: when})
}

// Pending returns how many injected faults have not struck yet.
func (f *Faulty) Pending() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.faults)
}

// take removes and returns the first fault matching a call, or one whose
// when is 0.
func (f *Faulty) take(op Op, key string) fault {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, ft := range f.faults {
		if ft.op == op && (ft.key == "" || ft.key == key || ft.prefix && strings.HasPrefix(key, ft.key)) {
			f.faults = append(f.faults[:i], f.faults[i+1:]...)
			return ft
		}
	}
	return fault{}
}

// error returns the error of ft striking a call on key.
func (ft fault) error(key string) error {
	if ft.err != nil {
		return fmt.Errorf("%s %q: %w (%s): %w", ft.op, key, ErrInjected, ft.when, ft.err)
	}
	return fmt.Errorf("%s %q: %w (%s)", ft.op, key, ErrInjected, ft.when)
}

// Create implements [storage.Backend.Create].
func (f *Faulty) Create(ctx context.Context, key string, r io.Reader, size int64) error {
	ft := f.take(OpCreate, key)
	if ft.when == BeforePersist {
		if size > 0 {
			io.Copy(io.Discard, io.LimitReader(r, size))
		}
		return ft.error(key)
	}
	if err := f.Backend.Create(ctx, key, r, size); err != nil {
		return err
	}
	if ft.when == AfterPersist {
		return ft.error(key)
	}
	return nil
}

// Open implements [storage.Backend.Open].
func (f *Faulty) Open(ctx context.Context, key string) (storage.Object, error) {
	ft := f.take(OpOpen, key)
	if ft.when == BeforePersist {
		return nil, ft.error(key)
	}
	o, err := f.Backend.Open(ctx, key)
	if err != nil {
		return nil, err
	}
	if ft.when == AfterPersist {
		o.Close()
		return nil, ft.error(key)
	}
	return o, nil
}

// Stat implements [storage.Backend.Stat].
func (f *Faulty) Stat(ctx context.Context, key string) (storage.Info, error) {
	ft := f.take(OpStat, key)
	if ft.when == BeforePersist {
		return storage.Info{}, ft.error(key)
	}
	info, err := f.Backend.Stat(ctx, key)
	if err == nil && ft.when == AfterPersist {
		return storage.Info{}, ft.error(key)
	}
	return info, err
}

// List implements [storage.Backend.List].
func (f *Faulty) List(ctx context.Context, prefix string) ([]storage.Info, error) {
	ft := f.take(OpList, prefix)
	if ft.when == BeforePersist {
		return nil, ft.error(prefix)
	}
	infos, err := f.Backend.List(ctx, prefix)
	if err == nil && ft.when == AfterPersist {
		return nil, ft.error(prefix)
	}
	return infos, err
}

// Delete implements [storage.Backend.Delete].
func (f *Faulty) Delete(ctx context.Context, key string) error {
	ft := f.take(OpDelete, key)
	if ft.when == BeforePersist {
		return ft.error(key)
	}
	if err := f.Backend.Delete(ctx, key); err != nil {
		return err
	}
	if ft.when == AfterPersist {
		return ft.error(key)
	}
	return nil
}

// ReadVersion implements [storage.Backend.ReadVersion].
func (f *Faulty) ReadVersion(ctx context.Context, key string, limit int64) ([]byte, string, error) {
	ft := f.take(OpReadVersion, key)
	if ft.when == BeforePersist {
		return nil, "", ft.error(key)
	}
	data, version, err := f.Backend.ReadVersion(ctx, key, limit)
	if err == nil && ft.when == AfterPersist {
		return nil, "", ft.error(key)
	}
	return data, version, err
}

// Replace implements [storage.Backend.Replace].
func (f *Faulty) Replace(ctx context.Context, key string, data []byte, ifVersion string) (string, error) {
	ft := f.take(OpReplace, key)
	if ft.when == BeforePersist {
		return "", ft.error(key)
	}
	version, err := f.Backend.Replace(ctx, key, data, ifVersion)
	if err != nil {
		return "", err
	}
	if ft.when == AfterPersist {
		return "", ft.error(key)
	}
	return version, nil
}
