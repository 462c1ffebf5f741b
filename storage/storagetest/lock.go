package storagetest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"evx/storage"
)

// LockBackend is a backend with locks.
type LockBackend interface {
	storage.Backend
	storage.Locker
}

// LockEnv is a [LockBackend] under test, with what the lock suite needs
// to see past it.
type LockEnv struct {
	Backend LockBackend
	// Now is the clock that judges the backend's locks, or near enough:
	// the suite allows a second or two between it and an S3 server's.
	Now func() time.Time
	// Advance moves the backend's clock forward by d. Nil means that the
	// clock is real (an S3 server's): the suite then waits for a date by
	// polling the backend, with a deadline.
	Advance func(d time.Duration)
	// Versions returns how many versions of key the storage holds, delete
	// markers included, read past the backend (for S3, by listing the
	// bucket's versions with minio-go).
	Versions func(t *testing.T, key string) int
	// Hide makes key's object disappear past the backend, as someone with
	// access to the storage could: a DELETE without a version id on S3,
	// which the server allows whatever the lock and which only adds a
	// delete marker; removing the file on disk.
	Hide func(t *testing.T, key string)
}

// FakeClock is a clock for backends that take one, such as
// storage.NewDiskWithClock: it stands still until advanced.
type FakeClock struct {
	mu  sync.Mutex
	now time.Time
}

// NewFakeClock returns a clock that reads start.
func NewFakeClock(start time.Time) *FakeClock { return &FakeClock{now: start} }

// Now returns the clock's time.
func (c *FakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *FakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// shortRetention is the retention of the tests that wait for a date to
// pass: short, as a real S3 server's clock has to pass it; long enough for
// the calls the tests make before it.
const shortRetention = 3 * time.Second

// RunLocker runs the conformance suite of [storage.Locker]. newEnv must
// return a new, empty backend for each call.
func RunLocker(t *testing.T, newEnv func(t *testing.T) LockEnv) {
	tests := []struct {
		name string
		f    func(*testing.T, LockEnv)
	}{
		{"CreateLocked", testCreateLocked},
		{"CreateLockedExisting", testCreateLockedExisting},
		{"CreateLockedDates", testCreateLockedDates},
		{"CreateLockedLarge", testCreateLockedLarge},
		{"Extend", testExtend},
		{"ConcurrentExtend", testConcurrentExtend},
		{"Hold", testHold},
		{"DeleteLocked", testDeleteLocked},
		{"PurgeBeforeExpiry", testPurgeBeforeExpiry},
		{"PurgeAfterExpiry", testPurgeAfterExpiry},
		{"PurgeEveryVersion", testPurgeEveryVersion},
		{"PurgeAbsent", testPurgeAbsent},
		{"CreateOverHiddenLock", testCreateOverHiddenLock},
		{"LockerInvalidKeys", testLockerInvalidKeys},
		{"LockerCancelled", testLockerCancelled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.f(t, newEnv(t))
		})
	}
}

func mustCreateLocked(t *testing.T, b LockBackend, key string, data []byte, until time.Time) {
	t.Helper()
	if err := b.CreateLocked(t.Context(), key, bytes.NewReader(data), int64(len(data)), until); err != nil {
		t.Fatalf("CreateLocked(%q, %d bytes, %v): %v", key, len(data), until, err)
	}
}

func mustLock(t *testing.T, b LockBackend, key string) storage.Lock {
	t.Helper()
	l, err := b.Lock(t.Context(), key)
	if err != nil {
		t.Fatalf("Lock(%q): %v", key, err)
	}
	return l
}

// checkUntil checks that got is want rounded up to the second.
func checkUntil(t *testing.T, key string, got, want time.Time) {
	t.Helper()
	if got.Before(want) || !got.Before(want.Add(time.Second)) || got.Nanosecond() != 0 {
		t.Errorf("Lock(%q).Until = %v, want %v rounded up to the second", key, got, want)
	}
}

func checkLocked(t *testing.T, call string, err error, key string) {
	t.Helper()
	if !errors.Is(err, storage.ErrLocked) {
		t.Errorf("%s = %v, want ErrLocked", call, err)
	}
	checkQuoted(t, err, key)
	checkNotUnavailable(t, err)
}

// waitUntil makes the backend's clock pass date: it advances a fake
// clock, or else waits, polling Lock and Purge of key until Purge no
// longer fails with ErrLocked (or the deadline). It returns Purge's
// result once it did not fail so, or nil for a fake clock.
func waitUntil(t *testing.T, env LockEnv, key string, date time.Time) error {
	t.Helper()
	if env.Advance != nil {
		if d := date.Sub(env.Now()); d >= 0 {
			env.Advance(d + time.Millisecond)
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Until(date)+30*time.Second)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		err := env.Backend.Purge(ctx, key)
		if !errors.Is(err, storage.ErrLocked) {
			return err
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("Purge(%q) still fails with ErrLocked %v after its retention date %v: %v", key, time.Since(date), date, err)
		}
	}
}

func testCreateLocked(t *testing.T, env LockEnv) {
	b := env.Backend
	until := env.Now().Add(time.Hour).Add(300 * time.Millisecond)
	data := Data(1, 1000)
	mustCreateLocked(t, b, "locked/a", data, until)
	checkContent(t, b, "locked/a", data)
	l := mustLock(t, b, "locked/a")
	checkUntil(t, "locked/a", l.Until, until)
	if l.Held {
		t.Errorf("Lock(%q).Held = true after CreateLocked", "locked/a")
	}
	if !l.Locked(env.Now()) || l.Locked(l.Until) || !l.Locked(l.Until.Add(-time.Second)) {
		t.Errorf("Lock %+v: Locked is wrong around its date", l)
	}

	// An empty object is locked too.
	mustCreateLocked(t, b, "locked/empty", nil, until)
	checkUntil(t, "locked/empty", mustLock(t, b, "locked/empty").Until, until)

	// A plain object has no lock.
	mustCreate(t, b, "plain", []byte("x"))
	if l := mustLock(t, b, "plain"); l != (storage.Lock{}) {
		t.Errorf("Lock of a plain object = %+v, want none", l)
	}
	// Lock, Extend and Hold of a key without an object.
	_, err := b.Lock(t.Context(), "absent")
	if !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("Lock(absent) = %v, want ErrNotExist", err)
	}
	if err := b.Extend(t.Context(), "absent", until); !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("Extend(absent) = %v, want ErrNotExist", err)
	}
	if err := b.Hold(t.Context(), "absent", true); !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("Hold(absent) = %v, want ErrNotExist", err)
	}
	checkAbsent(t, b, "absent")
	// A whole-second date stays as it is.
	whole := env.Now().Add(2 * time.Hour).Truncate(time.Second)
	mustCreateLocked(t, b, "locked/whole", nil, whole)
	if got := mustLock(t, b, "locked/whole").Until; !got.Equal(whole) {
		t.Errorf("Lock.Until = %v, want %v", got, whole)
	}
}

func testCreateLockedExisting(t *testing.T, env LockEnv) {
	b := env.Backend
	until := env.Now().Add(time.Hour)
	mustCreateLocked(t, b, "k", []byte("first"), until)
	err := b.CreateLocked(t.Context(), "k", strings.NewReader("second"), 6, until.Add(time.Hour))
	if !errors.Is(err, storage.ErrExist) {
		t.Errorf("CreateLocked over a locked object = %v, want ErrExist", err)
	}
	checkContent(t, b, "k", []byte("first"))
	checkUntil(t, "k", mustLock(t, b, "k").Until, until)

	// Over a plain object, the object stays unlocked.
	mustCreate(t, b, "plain", []byte("plain"))
	err = b.CreateLocked(t.Context(), "plain", strings.NewReader("second"), 6, until)
	if !errors.Is(err, storage.ErrExist) {
		t.Errorf("CreateLocked over a plain object = %v, want ErrExist", err)
	}
	if l := mustLock(t, b, "plain"); l != (storage.Lock{}) {
		t.Errorf("a failed CreateLocked left a lock %+v on the plain object", l)
	}
	if err := b.Delete(t.Context(), "plain"); err != nil {
		t.Errorf("Delete of the plain object: %v", err)
	}
}

func testCreateLockedDates(t *testing.T, env LockEnv) {
	b := env.Backend
	now := env.Now()
	for _, until := range []time.Time{{}, now.Add(-time.Hour), now.Add(-time.Second), now.Add(storage.MaxRetention + 24*time.Hour)} {
		err := b.CreateLocked(t.Context(), "dates", unreadable{t}, 1, until)
		if err == nil || errors.Is(err, storage.ErrLocked) {
			t.Errorf("CreateLocked until %v = %v, want an error of its own", until, err)
		}
		checkQuoted(t, err, "dates")
		checkAbsent(t, b, "dates")
	}
	mustCreateLocked(t, b, "dates", []byte("x"), now.Add(time.Hour))
	for _, until := range []time.Time{{}, now.Add(-time.Hour), now.Add(storage.MaxRetention + 24*time.Hour)} {
		if err := b.Extend(t.Context(), "dates", until); err == nil || errors.Is(err, storage.ErrLocked) {
			t.Errorf("Extend until %v = %v, want an error of its own", until, err)
		}
	}
}

// A lock travels with a multipart upload on S3 too.
func testCreateLockedLarge(t *testing.T, env LockEnv) {
	b := env.Backend
	until := env.Now().Add(time.Hour)
	const n = multipartSize
	if err := b.CreateLocked(t.Context(), "large", DataReader(12, n), n, until); err != nil {
		t.Fatalf("CreateLocked of %d bytes: %v", n, err)
	}
	checkData(t, b, "large", 12, n)
	checkUntil(t, "large", mustLock(t, b, "large").Until, until)
	checkLocked(t, "Delete(large)", b.Delete(t.Context(), "large"), "large")
	checkLocked(t, "Purge(large)", b.Purge(t.Context(), "large"), "large")
	checkData(t, b, "large", 12, n)
	// A cancelled or short locked upload leaves nothing, and no lock
	// that would refuse the key.
	err := b.CreateLocked(t.Context(), "short", io.LimitReader(DataReader(13, n), n-1), n, until)
	if !errors.Is(err, storage.ErrSizeMismatch) {
		t.Fatalf("short CreateLocked = %v, want ErrSizeMismatch", err)
	}
	checkAbsent(t, b, "short")
	mustCreate(t, b, "short", []byte("x"))
}

func testExtend(t *testing.T, env LockEnv) {
	b := env.Backend
	ctx := t.Context()
	until := env.Now().Add(time.Hour)
	mustCreateLocked(t, b, "k", []byte("x"), until)
	later := until.Add(time.Hour)
	if err := b.Extend(ctx, "k", later); err != nil {
		t.Fatalf("Extend later: %v", err)
	}
	checkUntil(t, "k", mustLock(t, b, "k").Until, later)
	// The same date again is no change.
	if err := b.Extend(ctx, "k", later); err != nil {
		t.Errorf("Extend to the same date: %v", err)
	}
	err := b.Extend(ctx, "k", until)
	checkLocked(t, "Extend earlier", err, "k")
	checkUntil(t, "k", mustLock(t, b, "k").Until, later)

	// Extend locks a plain object.
	mustCreate(t, b, "plain", []byte("x"))
	if err := b.Extend(ctx, "plain", until); err != nil {
		t.Fatalf("Extend of a plain object: %v", err)
	}
	checkUntil(t, "plain", mustLock(t, b, "plain").Until, until)
	checkLocked(t, "Delete(plain)", b.Delete(ctx, "plain"), "plain")
	checkContent(t, b, "plain", []byte("x"))
}

// Concurrent Extends of one key never move its date earlier: each one
// succeeds or fails with ErrLocked, and the latest date stays.
func testConcurrentExtend(t *testing.T, env LockEnv) {
	b := env.Backend
	start := env.Now().Add(time.Hour)
	mustCreateLocked(t, b, "k", []byte("x"), start)
	const n = 8
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = b.Extend(t.Context(), "k", start.Add(time.Duration(i+1)*time.Minute)) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil && !errors.Is(err, storage.ErrLocked) {
			t.Errorf("concurrent Extend %d = %v, want nil or ErrLocked", i, err)
		}
	}
	if errs[n-1] != nil {
		t.Errorf("the Extend to the latest date failed: %v", errs[n-1])
	}
	checkUntil(t, "k", mustLock(t, b, "k").Until, start.Add(n*time.Minute))
}

func testHold(t *testing.T, env LockEnv) {
	b := env.Backend
	ctx := t.Context()
	until := env.Now().Add(shortRetention)
	mustCreateLocked(t, b, "held", []byte("x"), until)
	if err := b.Hold(ctx, "held", true); err != nil {
		t.Fatalf("Hold: %v", err)
	}
	if l := mustLock(t, b, "held"); !l.Held {
		t.Errorf("Lock after Hold = %+v, want held", l)
	}
	// Past its date, the hold alone keeps it.
	passDate(t, env, mustLock(t, b, "held").Until)
	checkLocked(t, "Purge of a held object", b.Purge(ctx, "held"), "held")
	checkLocked(t, "Delete of a held object", b.Delete(ctx, "held"), "held")
	checkContent(t, b, "held", []byte("x"))
	if n := env.Versions(t, "held"); n != 1 {
		t.Errorf("%d versions of a held object after a refused Purge, want 1", n)
	}
	if err := b.Hold(ctx, "held", false); err != nil {
		t.Fatalf("releasing the hold: %v", err)
	}
	if l := mustLock(t, b, "held"); l.Held {
		t.Errorf("Lock after release = %+v, want not held", l)
	}
	wantPurged(t, env, b, "held", "Purge after release")

	// A hold without retention, on a plain object.
	mustCreate(t, b, "plain", []byte("x"))
	if err := b.Hold(ctx, "plain", true); err != nil {
		t.Fatalf("Hold of a plain object: %v", err)
	}
	checkLocked(t, "Delete of a held plain object", b.Delete(ctx, "plain"), "plain")
	if err := b.Hold(ctx, "plain", false); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete(ctx, "plain"); err != nil {
		t.Errorf("Delete after release: %v", err)
	}
}

// passDate makes the storage's clock pass date: it advances a fake
// clock, or else waits until Now is a second past date, polling it.
func passDate(t *testing.T, env LockEnv, date time.Time) {
	t.Helper()
	if env.Advance != nil {
		if d := date.Sub(env.Now()); d >= 0 {
			env.Advance(d + time.Millisecond)
		}
		return
	}
	deadline := time.NewTimer(time.Until(date) + 30*time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for !env.Now().After(date.Add(time.Second)) {
		select {
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("the clock did not pass %v", date)
		}
	}
}

func testDeleteLocked(t *testing.T, env LockEnv) {
	b := env.Backend
	ctx := t.Context()
	mustCreateLocked(t, b, "k", []byte("evidence"), env.Now().Add(time.Hour))
	checkLocked(t, "Delete of a locked object", b.Delete(ctx, "k"), "k")
	// Not hidden either: Delete refused before anything.
	checkContent(t, b, "k", []byte("evidence"))
	infos, err := b.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if got := infoKeys(infos); len(got) != 1 || got[0] != "k" {
		t.Errorf("List after a refused Delete = %q", got)
	}
	if n := env.Versions(t, "k"); n != 1 {
		t.Errorf("%d versions after a refused Delete, want 1 (no delete marker)", n)
	}
}

func testPurgeBeforeExpiry(t *testing.T, env LockEnv) {
	b := env.Backend
	ctx := t.Context()
	mustCreateLocked(t, b, "k", []byte("evidence"), env.Now().Add(time.Hour))
	checkLocked(t, "Purge before expiry", b.Purge(ctx, "k"), "k")
	checkContent(t, b, "k", []byte("evidence"))
	if n := env.Versions(t, "k"); n != 1 {
		t.Errorf("%d versions after a refused Purge, want 1", n)
	}
}

func testPurgeAfterExpiry(t *testing.T, env LockEnv) {
	b := env.Backend
	ctx := t.Context()
	until := env.Now().Add(shortRetention)
	mustCreateLocked(t, b, "k", []byte("evidence"), until)
	mustCreateLocked(t, b, "other", []byte("other"), env.Now().Add(time.Hour))
	checkLocked(t, "Purge before expiry", b.Purge(ctx, "k"), "k")
	if err := waitUntil(t, env, "k", mustLock(t, b, "k").Until); err != nil {
		t.Fatalf("Purge after expiry: %v", err)
	}
	wantPurged(t, env, b, "k", "Purge after expiry")
	// Purge is idempotent, the key can be used again, and other keys
	// keep their objects.
	if err := b.Purge(ctx, "k"); err != nil {
		t.Errorf("second Purge: %v", err)
	}
	mustCreate(t, b, "k", []byte("again"))
	checkContent(t, b, "k", []byte("again"))
	checkContent(t, b, "other", []byte("other"))

	// Once expired, Delete removes too.
	until = env.Now().Add(shortRetention)
	mustCreateLocked(t, b, "d", []byte("x"), until)
	checkLocked(t, "Delete before expiry", b.Delete(ctx, "d"), "d")
	passDate(t, env, mustLock(t, b, "d").Until)
	if err := b.Delete(ctx, "d"); err != nil {
		t.Fatalf("Delete after expiry: %v", err)
	}
	checkAbsent(t, b, "d")
}

// Purge removes every version of a key: on S3 those a Delete left behind
// as noncurrent, and its delete markers.
func testPurgeEveryVersion(t *testing.T, env LockEnv) {
	b := env.Backend
	ctx := t.Context()
	mustCreate(t, b, "k", []byte("one"))
	if err := b.Delete(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, b, "k", []byte("two"))
	if err := b.Delete(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	until := env.Now().Add(shortRetention)
	mustCreateLocked(t, b, "k", []byte("three"), until)
	mustCreate(t, b, "kk", []byte("not k"))
	mustCreate(t, b, "k-longer", []byte("not k"))
	before := env.Versions(t, "k")
	checkLocked(t, "Purge before expiry", b.Purge(ctx, "k"), "k")
	if n := env.Versions(t, "k"); n != before {
		t.Errorf("a refused Purge changed the versions from %d to %d", before, n)
	}
	checkContent(t, b, "k", []byte("three"))
	if err := waitUntil(t, env, "k", mustLock(t, b, "k").Until); err != nil {
		t.Fatalf("Purge after expiry: %v", err)
	}
	wantPurged(t, env, b, "k", "Purge after expiry")
	checkContent(t, b, "kk", []byte("not k"))
	checkContent(t, b, "k-longer", []byte("not k"))
}

func testPurgeAbsent(t *testing.T, env LockEnv) {
	if err := env.Backend.Purge(t.Context(), "never/created"); err != nil {
		t.Errorf("Purge of a key never created = %v, want nil", err)
	}
	// A plain object is purged at once.
	mustCreate(t, env.Backend, "plain", []byte("x"))
	if err := env.Backend.Purge(t.Context(), "plain"); err != nil {
		t.Errorf("Purge of a plain object = %v", err)
	}
	checkAbsent(t, env.Backend, "plain")
	if n := env.Versions(t, "plain"); n != 0 {
		t.Errorf("%d versions after Purge, want 0", n)
	}
}

// An object hidden past the backend while locked (a delete marker on S3,
// a file removed on disk) keeps the key: Create refuses it until the
// lock's date, and Purge refuses to remove what is left.
func testCreateOverHiddenLock(t *testing.T, env LockEnv) {
	b := env.Backend
	ctx := t.Context()
	until := env.Now().Add(time.Hour)
	mustCreateLocked(t, b, "k", []byte("evidence"), until)
	env.Hide(t, "k")
	checkAbsent(t, b, "k")
	err := b.Create(ctx, "k", strings.NewReader("new"), 3)
	checkLocked(t, "Create over a hidden locked object", err, "k")
	checkAbsent(t, b, "k")
	// CreateLocked stores a locked object; the hidden version keeps its
	// own lock (on disk, the new object takes it over).
	newUntil := env.Now().Add(time.Minute)
	mustCreateLocked(t, b, "k", []byte("again"), newUntil)
	checkContent(t, b, "k", []byte("again"))
	if l := mustLock(t, b, "k"); l.Until.Before(newUntil) {
		t.Errorf("Lock after CreateLocked over a hidden lock = %+v, want it locked at least until %v", l, newUntil)
	}
	checkLocked(t, "Purge", b.Purge(ctx, "k"), "k")
	checkContent(t, b, "k", []byte("again"))
}

func testLockerInvalidKeys(t *testing.T, env LockEnv) {
	b := env.Backend
	ctx := t.Context()
	until := env.Now().Add(time.Hour)
	for _, key := range InvalidKeys {
		errs := []callError{{"CreateLocked", b.CreateLocked(ctx, key, unreadable{t}, 0, until)}}
		_, err := b.Lock(ctx, key)
		errs = append(errs, callError{"Lock", err},
			callError{"Extend", b.Extend(ctx, key, until)},
			callError{"Hold", b.Hold(ctx, key, true)},
			callError{"Purge", b.Purge(ctx, key)})
		for _, e := range errs {
			if !errors.Is(e.err, storage.ErrInvalidKey) {
				t.Errorf("%s(%q) = %v, want ErrInvalidKey", e.call, key, e.err)
			}
			checkQuoted(t, e.err, key)
		}
	}
}

func testLockerCancelled(t *testing.T, env LockEnv) {
	b := env.Backend
	until := env.Now().Add(time.Hour)
	mustCreateLocked(t, b, "present", []byte("x"), until)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, lerr := b.Lock(ctx, "present")
	for _, e := range []callError{
		{"CreateLocked", b.CreateLocked(ctx, "new", strings.NewReader("x"), 1, until)},
		{"Lock", lerr},
		{"Extend", b.Extend(ctx, "present", until.Add(time.Hour))},
		{"Hold", b.Hold(ctx, "present", true)},
		{"Purge", b.Purge(ctx, "present")},
	} {
		if !errors.Is(e.err, context.Canceled) {
			t.Errorf("%s = %v, want context.Canceled", e.call, e.err)
		}
		checkNotUnavailable(t, e.err)
	}
	checkAbsent(t, b, "new")
	if l := mustLock(t, b, "present"); l.Held || !l.Until.Before(until.Add(time.Second)) {
		t.Errorf("Lock after cancelled calls = %+v, want unchanged", l)
	}
}

// wantPurged purges key, as what, and checks that no version of it is
// left.
func wantPurged(t *testing.T, env LockEnv, b LockBackend, key, what string) {
	t.Helper()
	if err := b.Purge(t.Context(), key); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	checkAbsent(t, b, key)
	if n := env.Versions(t, key); n != 0 {
		t.Errorf("%d versions of %q after Purge, want 0", n, key)
	}
}
