package storagetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"

	"evx/storage"
)

// RunUnavailable checks that a backend whose storage is down says so. b
// must fail every request of its own, as an S3 backend does whose server
// is stopped, unreachable or never answers. Every method must then fail
// with an error that wraps [storage.ErrUnavailable], quotes the key or
// prefix, and does not claim that the object exists or does not; while the
// errors that are the caller's own come first and do not wrap
// ErrUnavailable: an invalid key, a size over the limit, a done context.
func RunUnavailable(t *testing.T, b storage.Backend) {
	ctx := t.Context()
	check := func(t *testing.T, call string, err error, quoted string) {
		t.Helper()
		if !errors.Is(err, storage.ErrUnavailable) {
			t.Errorf("%s with the storage down = %v, want ErrUnavailable", call, err)
		}
		if errors.Is(err, storage.ErrNotExist) || errors.Is(err, storage.ErrExist) || errors.Is(err, storage.ErrVersionMismatch) {
			t.Errorf("%s with the storage down = %v, which claims to know whether the object exists", call, err)
		}
		checkQuoted(t, err, quoted)
	}
	t.Run("Create", func(t *testing.T) {
		data := Data(20, 10)
		check(t, "Create", b.Create(ctx, "down/small", bytes.NewReader(data), int64(len(data))), "down/small")
		check(t, "Create", b.Create(ctx, "down/large", DataReader(21, multipartSize), multipartSize), "down/large")
	})
	t.Run("Open", func(t *testing.T) {
		o, err := b.Open(ctx, "down/object")
		if err == nil {
			o.Close()
		}
		check(t, "Open", err, "down/object")
	})
	t.Run("Stat", func(t *testing.T) {
		_, err := b.Stat(ctx, "down/object")
		check(t, "Stat", err, "down/object")
	})
	t.Run("List", func(t *testing.T) {
		infos, err := b.List(ctx, "down/")
		check(t, "List", err, "down/")
		if infos != nil {
			t.Errorf("List with the storage down returned %d objects", len(infos))
		}
	})
	t.Run("Delete", func(t *testing.T) {
		check(t, "Delete", b.Delete(ctx, "down/object"), "down/object")
	})
	t.Run("ReadVersion", func(t *testing.T) {
		data, v, err := b.ReadVersion(ctx, "down/object", storage.MaxReplaceSize)
		check(t, "ReadVersion", err, "down/object")
		if data != nil || v != "" {
			t.Errorf("ReadVersion with the storage down returned %d bytes, version %q", len(data), v)
		}
	})
	t.Run("Replace", func(t *testing.T) {
		for _, ifVersion := range []string{"", "0123456789abcdef0123456789abcdef"} {
			v, err := b.Replace(ctx, "down/pointer", []byte("x"), ifVersion)
			check(t, fmt.Sprintf("Replace with version %q", ifVersion), err, "down/pointer")
			if v != "" {
				t.Errorf("Replace with the storage down returned version %q", v)
			}
		}
	})
	t.Run("CallerErrors", func(t *testing.T) {
		for _, key := range InvalidKeys[:5] {
			err := b.Create(ctx, key, unreadable{t}, 0)
			if !errors.Is(err, storage.ErrInvalidKey) {
				t.Errorf("Create(%q) = %v, want ErrInvalidKey", key, err)
			}
			checkNotDown(t, err)
			_, err = b.Stat(ctx, key)
			if !errors.Is(err, storage.ErrInvalidKey) {
				t.Errorf("Stat(%q) = %v, want ErrInvalidKey", key, err)
			}
			checkNotDown(t, err)
		}
		err := b.Create(ctx, "down/huge", unreadable{t}, storage.MaxObjectSize+1)
		if !errors.Is(err, storage.ErrTooLarge) {
			t.Errorf("Create of MaxObjectSize+1 bytes = %v, want ErrTooLarge", err)
		}
		checkNotDown(t, err)
		_, err = b.Replace(ctx, "down/huge", make([]byte, storage.MaxReplaceSize+1), "")
		if !errors.Is(err, storage.ErrTooLarge) {
			t.Errorf("Replace of MaxReplaceSize+1 bytes = %v, want ErrTooLarge", err)
		}
		checkNotDown(t, err)
		_, _, err = b.ReadVersion(ctx, "down/object", -1)
		if err == nil {
			t.Errorf("ReadVersion with limit -1 succeeded")
		}
		checkNotDown(t, err)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		for _, err := range cancelledCalls(cctx, b, "down/new", "down/object") {
			if !errors.Is(err.err, context.Canceled) {
				t.Errorf("%s with a cancelled context = %v, want context.Canceled", err.call, err.err)
			}
			checkNotDown(t, err.err)
		}
	})
}

// checkNotDown checks that an error the caller caused is reported as such,
// although the storage is down.
func checkNotDown(t *testing.T, err error) {
	t.Helper()
	if errors.Is(err, storage.ErrUnavailable) {
		t.Errorf("error %q wraps ErrUnavailable, but the caller caused it", err)
	}
}
