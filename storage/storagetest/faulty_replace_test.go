package storagetest_test

import (
	"errors"
	"testing"

	"evx/storage"
	"evx/storage/storagetest"
)

// A Replace failing before persisting changes nothing; one failing after
// persisting has stored its data, and the caller learns the new version
// only by reading it.
func TestFaultyReplace(t *testing.T) {
	ctx := t.Context()
	f := newFaulty(t)
	v1, err := f.Replace(ctx, "k", []byte("one"), "")
	if err != nil {
		t.Fatal(err)
	}

	f.Inject(storagetest.OpReplace, "k", storagetest.BeforePersist)
	v, err := f.Replace(ctx, "k", []byte("two"), v1)
	if !errors.Is(err, storagetest.ErrInjected) || errors.Is(err, storage.ErrVersionMismatch) || v != "" {
		t.Fatalf("Replace with a fault before persisting = %q, %v", v, err)
	}
	if data, rv, err := f.ReadVersion(ctx, "k", 100); err != nil || string(data) != "one" || rv != v1 {
		t.Errorf("after a fault before persisting, ReadVersion = %q, %q, %v; want the old object", data, rv, err)
	}

	f.Inject(storagetest.OpReplace, "", storagetest.AfterPersist)
	v, err = f.Replace(ctx, "k", []byte("two"), v1)
	if !errors.Is(err, storagetest.ErrInjected) || errors.Is(err, storage.ErrVersionMismatch) || v != "" {
		t.Fatalf("Replace with a fault after persisting = %q, %v", v, err)
	}
	data, v2, err := f.ReadVersion(ctx, "k", 100)
	if err != nil || string(data) != "two" || v2 == v1 {
		t.Errorf("after a fault after persisting, ReadVersion = %q, %q, %v; want the new object", data, v2, err)
	}
	// A retry with the old version is refused: its first attempt took effect.
	if _, err := f.Replace(ctx, "k", []byte("two"), v1); !errors.Is(err, storage.ErrVersionMismatch) {
		t.Errorf("retried Replace = %v, want ErrVersionMismatch", err)
	}

	// An AfterPersist fault is used up by a Replace that is refused by
	// itself, which has nothing to undo.
	f.Inject(storagetest.OpReplace, "k", storagetest.AfterPersist)
	if _, err := f.Replace(ctx, "k", []byte("three"), v1); !errors.Is(err, storage.ErrVersionMismatch) || errors.Is(err, storagetest.ErrInjected) {
		t.Errorf("refused Replace with a fault after persisting = %v, want only ErrVersionMismatch", err)
	}
	if f.Pending() != 0 {
		t.Errorf("Pending() = %d, want 0", f.Pending())
	}
}

func TestFaultyReadVersion(t *testing.T) {
	ctx := t.Context()
	f := newFaulty(t)
	if _, err := f.Replace(ctx, "k", []byte("one"), ""); err != nil {
		t.Fatal(err)
	}
	for _, when := range []storagetest.When{storagetest.BeforePersist, storagetest.AfterPersist} {
		f.InjectError(storagetest.OpReadVersion, "k", when, storage.ErrUnavailable)
		data, v, err := f.ReadVersion(ctx, "k", 100)
		if !errors.Is(err, storagetest.ErrInjected) || !errors.Is(err, storage.ErrUnavailable) || data != nil || v != "" {
			t.Errorf("ReadVersion with a fault %v = %q, %q, %v", when, data, v, err)
		}
	}
	if data, _, err := f.ReadVersion(ctx, "k", 100); err != nil || string(data) != "one" {
		t.Errorf("ReadVersion after the faults = %q, %v", data, err)
	}
}
