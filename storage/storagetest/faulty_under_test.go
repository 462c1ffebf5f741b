package storagetest_test

import (
	"bytes"
	"errors"
	"testing"

	"evx/storage/storagetest"
)

// A fault injected under a prefix passes calls on other keys and strikes
// the first call on a key under the prefix, once.
func TestFaultyInjectUnder(t *testing.T) {
	ctx := t.Context()
	f := newFaulty(t)
	create := func(key string) error { return f.Create(ctx, key, bytes.NewReader([]byte("x")), 1) }

	f.InjectUnder(storagetest.OpCreate, "inbox/", storagetest.BeforePersist)
	if err := create("log/batch/0"); err != nil {
		t.Fatalf("Create outside the prefix: %v", err)
	}
	if err := create("inboxes/a"); err != nil {
		t.Fatalf("Create of a key that only shares the prefix's letters: %v", err)
	}
	if err := create("inbox/a/payload"); !errors.Is(err, storagetest.ErrInjected) {
		t.Fatalf("Create under the prefix = %v, want the injected fault", err)
	}
	if err := create("inbox/a/payload"); err != nil {
		t.Fatalf("Create under the prefix after the fault struck: %v", err)
	}
	if f.Pending() != 0 {
		t.Errorf("Pending() = %d, want 0", f.Pending())
	}
}
