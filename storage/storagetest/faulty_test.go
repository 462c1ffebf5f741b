package storagetest_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"evx/storage"
	"evx/storage/storagetest"
)

func newFaulty(t *testing.T) *storagetest.Faulty {
	d, err := storage.NewDisk(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return storagetest.NewFaulty(d)
}

// Without injected faults, Faulty is a conforming Backend.
func TestFaultyConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Backend { return newFaulty(t) })
}

func TestFaultyCreate(t *testing.T) {
	ctx := t.Context()
	f := newFaulty(t)

	f.Inject(storagetest.OpCreate, "k", storagetest.BeforePersist)
	r := strings.NewReader("hello")
	err := f.Create(ctx, "k", r, 5)
	if !errors.Is(err, storagetest.ErrInjected) || !strings.Contains(err.Error(), `"k"`) {
		t.Fatalf("Create with a fault before persisting = %v", err)
	}
	if r.Len() != 0 {
		t.Errorf("Create with a fault before persisting left %d bytes of input unread", r.Len())
	}
	if _, err := f.Stat(ctx, "k"); !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("after a fault before persisting, Stat = %v, want ErrNotExist", err)
	}

	// The fault struck once: the retry succeeds.
	if err := f.Create(ctx, "k", strings.NewReader("hello"), 5); err != nil {
		t.Fatalf("Create after the fault: %v", err)
	}

	f.Inject(storagetest.OpCreate, "", storagetest.AfterPersist)
	err = f.Create(ctx, "k2", strings.NewReader("world"), 5)
	if !errors.Is(err, storagetest.ErrInjected) {
		t.Fatalf("Create with a fault after persisting = %v", err)
	}
	if info, err := f.Stat(ctx, "k2"); err != nil || info.Size != 5 {
		t.Errorf("after a fault after persisting, Stat = %v, %v; want the stored object", info, err)
	}
	// A retry sees its own earlier attempt.
	if err := f.Create(ctx, "k2", strings.NewReader("world"), 5); !errors.Is(err, storage.ErrExist) {
		t.Errorf("retried Create = %v, want ErrExist", err)
	}
	if f.Pending() != 0 {
		t.Errorf("Pending() = %d, want 0", f.Pending())
	}
}

func TestFaultyKeyFilter(t *testing.T) {
	ctx := t.Context()
	f := newFaulty(t)
	f.Inject(storagetest.OpCreate, "b", storagetest.BeforePersist)
	if err := f.Create(ctx, "a", strings.NewReader("x"), 1); err != nil {
		t.Fatalf("Create of another key: %v", err)
	}
	if f.Pending() != 1 {
		t.Fatalf("a fault for another key struck")
	}
	if err := f.Create(ctx, "b", strings.NewReader("x"), 1); !errors.Is(err, storagetest.ErrInjected) {
		t.Fatalf("Create(b) = %v, want the injected fault", err)
	}
}

func TestFaultyOtherOps(t *testing.T) {
	ctx := t.Context()
	f := newFaulty(t)
	if err := f.Create(ctx, "k", bytes.NewReader([]byte("data")), 4); err != nil {
		t.Fatal(err)
	}

	f.Inject(storagetest.OpDelete, "k", storagetest.BeforePersist)
	if err := f.Delete(ctx, "k"); !errors.Is(err, storagetest.ErrInjected) {
		t.Fatalf("Delete = %v, want the injected fault", err)
	}
	if _, err := f.Stat(ctx, "k"); err != nil {
		t.Errorf("Delete failing before persisting removed the object: %v", err)
	}
	f.Inject(storagetest.OpDelete, "k", storagetest.AfterPersist)
	if err := f.Delete(ctx, "k"); !errors.Is(err, storagetest.ErrInjected) {
		t.Fatalf("Delete = %v, want the injected fault", err)
	}
	if _, err := f.Stat(ctx, "k"); !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("Delete failing after persisting kept the object: %v", err)
	}

	if err := f.Create(ctx, "k", bytes.NewReader([]byte("data")), 4); err != nil {
		t.Fatal(err)
	}
	for _, when := range []storagetest.When{storagetest.BeforePersist, storagetest.AfterPersist} {
		f.Inject(storagetest.OpOpen, "k", when)
		if o, err := f.Open(ctx, "k"); !errors.Is(err, storagetest.ErrInjected) || o != nil {
			t.Errorf("Open with a fault %v = %v, %v", when, o, err)
		}
		f.Inject(storagetest.OpStat, "k", when)
		if _, err := f.Stat(ctx, "k"); !errors.Is(err, storagetest.ErrInjected) {
			t.Errorf("Stat with a fault %v = %v", when, err)
		}
		f.Inject(storagetest.OpList, "", when)
		if infos, err := f.List(ctx, ""); !errors.Is(err, storagetest.ErrInjected) || infos != nil {
			t.Errorf("List with a fault %v = %v, %v", when, infos, err)
		}
	}
	if o, err := f.Open(ctx, "k"); err != nil {
		t.Errorf("Open after the faults: %v", err)
	} else {
		o.Close()
	}
}

// An injected fault can carry an error of the caller's choosing, such as
// storage.ErrUnavailable.
func TestFaultyInjectError(t *testing.T) {
	ctx := t.Context()
	f := newFaulty(t)
	f.InjectError(storagetest.OpStat, "k", storagetest.BeforePersist, storage.ErrUnavailable)
	_, err := f.Stat(ctx, "k")
	if !errors.Is(err, storage.ErrUnavailable) || !errors.Is(err, storagetest.ErrInjected) || !strings.Contains(err.Error(), `"k"`) {
		t.Errorf("Stat with an injected ErrUnavailable = %v", err)
	}
	f.InjectError(storagetest.OpCreate, "", storagetest.AfterPersist, storage.ErrUnavailable)
	if err := f.Create(ctx, "k", strings.NewReader("x"), 1); !errors.Is(err, storage.ErrUnavailable) {
		t.Errorf("Create with an injected ErrUnavailable = %v", err)
	}
	if _, err := f.Stat(ctx, "k"); err != nil {
		t.Errorf("the object of a Create failing after persisting: %v", err)
	}
	// Faults without an error of their own do not wrap one.
	f.Inject(storagetest.OpDelete, "k", storagetest.BeforePersist)
	if err := f.Delete(ctx, "k"); !errors.Is(err, storagetest.ErrInjected) || errors.Is(err, storage.ErrUnavailable) {
		t.Errorf("Delete with an injected fault = %v", err)
	}
}
