package storagetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"evx/storage"
)

// RunReplace runs the part of the conformance suite that checks
// ReadVersion and Replace, as [Run] does with the rest.
func RunReplace(t *testing.T, newBackend func(t *testing.T) storage.Backend) {
	for _, tt := range replaceTests {
		t.Run(tt.name, func(t *testing.T) {
			tt.f(t, newBackend(t))
		})
	}
}

// replaceTests check ReadVersion and Replace; [Run] runs them with the
// rest of the suite.
var replaceTests = []struct {
	name string
	f    func(*testing.T, storage.Backend)
}{
	{"ReplaceAbsent", testReplaceAbsent},
	{"ReplaceWrongVersion", testReplaceWrongVersion},
	{"ReplaceVersions", testReplaceVersions},
	{"ReplaceSizes", testReplaceSizes},
	{"ReadVersionLimit", testReadVersionLimit},
	{"ReplaceDeleted", testReplaceDeleted},
	{"ReplaceWhileOpen", testReplaceWhileOpen},
	{"ReplaceConcurrent", testReplaceConcurrent},
}

func mustReplace(t *testing.T, b storage.Backend, key string, data []byte, ifVersion string) string {
	t.Helper()
	v, err := b.Replace(t.Context(), key, data, ifVersion)
	if err != nil {
		t.Fatalf("Replace(%q, %d bytes, %q): %v", key, len(data), ifVersion, err)
	}
	checkVersionSyntax(t, v)
	return v
}

// checkVersionSyntax checks that v is 1 to 256 visible ASCII characters.
func checkVersionSyntax(t *testing.T, v string) {
	t.Helper()
	ok := len(v) >= 1 && len(v) <= 256
	for i := 0; i < len(v); i++ {
		ok = ok && v[i] > ' ' && v[i] < 0x7f
	}
	if !ok {
		t.Errorf("version %q is not 1 to 256 visible ASCII characters", v)
	}
}

// checkVersion checks that key holds want, with version, through
// ReadVersion and the other readers.
func checkVersion(t *testing.T, b storage.Backend, key string, want []byte, version string) {
	t.Helper()
	got, v, err := b.ReadVersion(t.Context(), key, storage.MaxReplaceSize)
	if err != nil {
		t.Fatalf("ReadVersion(%q): %v", key, err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("ReadVersion(%q) = %q, want %q", key, trim(got), trim(want))
	}
	if v != version {
		t.Errorf("ReadVersion(%q) gives version %q, want %q", key, v, version)
	}
	checkVersionSyntax(t, v)
	checkContent(t, b, key, want)
}

// trim shortens data for an error message.
func trim(data []byte) string {
	if len(data) > 40 {
		return fmt.Sprintf("%s… (%d bytes)", data[:40], len(data))
	}
	return string(data)
}

// checkMismatch checks that err is Replace's refusal of a version.
func checkMismatch(t *testing.T, err error, call, key string) {
	t.Helper()
	if !errors.Is(err, storage.ErrVersionMismatch) {
		t.Errorf("%s = %v, want ErrVersionMismatch", call, err)
	}
	checkQuoted(t, err, key)
	checkNotUnavailable(t, err)
}

// A key without an object is stored once by Replace with version "".
func testReplaceAbsent(t *testing.T, b storage.Backend) {
	ctx := t.Context()
	for _, key := range []string{"pointer", "log/sub/checkpoint", "empty"} {
		_, _, err := b.ReadVersion(ctx, key, storage.MaxReplaceSize)
		if !errors.Is(err, storage.ErrNotExist) {
			t.Errorf("ReadVersion(%q) of an absent key = %v, want ErrNotExist", key, err)
		}
		checkQuoted(t, err, key)
		checkNotUnavailable(t, err)

		first := []byte("first " + key)
		if key == "empty" {
			first = []byte{}
		}
		v1 := mustReplace(t, b, key, first, "")
		checkVersion(t, b, key, first, v1)

		_, err = b.Replace(ctx, key, []byte("second"), "")
		checkMismatch(t, err, fmt.Sprintf("second Replace(%q) with no version", key), key)
		checkVersion(t, b, key, first, v1)
	}
	infos, err := b.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if got := infoKeys(infos); !slices.Equal(got, []string{"empty", "log/sub/checkpoint", "pointer"}) {
		t.Errorf("List = %q", got)
	}
}

// A wrong version is refused and changes nothing, whatever it is.
func testReplaceWrongVersion(t *testing.T, b storage.Backend) {
	ctx := t.Context()
	const key = "wrong/pointer"
	first := []byte("first")
	v1 := mustReplace(t, b, key, first, "")
	v2, err := b.Replace(ctx, "wrong/other", []byte("other"), "")
	if err != nil {
		t.Fatal(err)
	}
	wrong := []string{
		v2,
		v1 + "0",
		v1[:len(v1)-1],
		strings.ToUpper(v1),
		`"` + v1 + `"`,
		"W/" + v1,
		"*",
		" ",
		v1 + " ",
		`a"b`,
		"a\r\nX-Injected: 1",
		"\x00",
		strings.Repeat("f", 64),
		strings.Repeat("x", 10000),
		"caf\u00e9",
	}
	for _, w := range wrong {
		if w == v1 {
			continue // a backend whose versions are upper case, say
		}
		_, err := b.Replace(ctx, key, []byte("second"), w)
		checkMismatch(t, err, fmt.Sprintf("Replace(%q) with version %q (stored: %q)", key, trim([]byte(w)), v1), key)
	}
	checkVersion(t, b, key, first, v1)

	// A version where there is no object.
	for _, w := range []string{v1, v2, "garbage", "*"} {
		_, err := b.Replace(ctx, "wrong/absent", []byte("new"), w)
		checkMismatch(t, err, fmt.Sprintf("Replace of an absent key with version %q", w), "wrong/absent")
		checkAbsent(t, b, "wrong/absent")
	}
}

// The right version replaces, once; the versions returned and read agree.
func testReplaceVersions(t *testing.T, b storage.Backend) {
	ctx := t.Context()
	const key = "versions/pointer"
	datas := [][]byte{[]byte("one"), []byte("two"), Data(1, 1000), Data(2, 64<<10+1), []byte("")}
	var versions []string
	v := ""
	for i, data := range datas {
		nv := mustReplace(t, b, key, data, v)
		checkVersion(t, b, key, data, nv)
		if slices.Contains(versions, nv) {
			t.Errorf("Replace %d of different contents returned version %q again", i, nv)
		}
		// Every earlier version is now refused.
		for _, old := range append(versions, "") {
			if old == nv {
				continue
			}
			_, err := b.Replace(ctx, key, []byte("stale"), old)
			checkMismatch(t, err, fmt.Sprintf("Replace with the stale version %q", old), key)
		}
		checkVersion(t, b, key, data, nv)
		versions = append(versions, nv)
		v = nv
	}
	// The version that ReadVersion gives serves as well.
	_, rv, err := b.ReadVersion(ctx, key, storage.MaxReplaceSize)
	if err != nil {
		t.Fatal(err)
	}
	last := mustReplace(t, b, key, []byte("read"), rv)
	// Storing the same bytes again is a replacement like any other; the
	// version may or may not stay the same.
	same := mustReplace(t, b, key, []byte("read"), last)
	checkVersion(t, b, key, []byte("read"), same)
}

func testReplaceSizes(t *testing.T, b storage.Backend) {
	ctx := t.Context()
	big := Data(3, storage.MaxReplaceSize)
	v := mustReplace(t, b, "sizes/max", big, "")
	checkVersion(t, b, "sizes/max", big, v)

	over := Data(4, storage.MaxReplaceSize+1)
	_, err := b.Replace(ctx, "sizes/max", over, v)
	if !errors.Is(err, storage.ErrTooLarge) {
		t.Errorf("Replace of MaxReplaceSize+1 bytes = %v, want ErrTooLarge", err)
	}
	checkQuoted(t, err, "sizes/max")
	checkNotUnavailable(t, err)
	checkVersion(t, b, "sizes/max", big, v)
	_, err = b.Replace(ctx, "sizes/absent", over, "")
	if !errors.Is(err, storage.ErrTooLarge) {
		t.Errorf("Replace of MaxReplaceSize+1 bytes = %v, want ErrTooLarge", err)
	}
	checkAbsent(t, b, "sizes/absent")
}

func testReadVersionLimit(t *testing.T, b storage.Backend) {
	ctx := t.Context()
	data := Data(5, 100)
	v := mustReplace(t, b, "limit/pointer", data, "")
	for _, limit := range []int64{100, 101, storage.MaxReplaceSize} {
		got, gv, err := b.ReadVersion(ctx, "limit/pointer", limit)
		if err != nil || !bytes.Equal(got, data) || gv != v {
			t.Errorf("ReadVersion of 100 bytes with limit %d = %d bytes, %q, %v", limit, len(got), gv, err)
		}
	}
	for _, limit := range []int64{99, 1, 0} {
		got, gv, err := b.ReadVersion(ctx, "limit/pointer", limit)
		if !errors.Is(err, storage.ErrTooLarge) || got != nil || gv != "" {
			t.Errorf("ReadVersion of 100 bytes with limit %d = %d bytes, %q, %v; want ErrTooLarge", limit, len(got), gv, err)
		}
		checkQuoted(t, err, "limit/pointer")
		checkNotUnavailable(t, err)
	}
	for _, limit := range []int64{-1, storage.MaxReplaceSize + 1} {
		_, _, err := b.ReadVersion(ctx, "limit/pointer", limit)
		if err == nil {
			t.Errorf("ReadVersion with limit %d succeeded", limit)
		}
		checkNotUnavailable(t, err)
	}
	ev := mustReplace(t, b, "limit/empty", nil, "")
	got, gv, err := b.ReadVersion(ctx, "limit/empty", 0)
	if err != nil || len(got) != 0 || gv != ev {
		t.Errorf("ReadVersion of an empty object with limit 0 = %q, %q, %v", got, gv, err)
	}
	// ReadVersion reads any object, also one stored by Create.
	created := Data(6, 1000)
	mustCreate(t, b, "limit/created", created)
	got, gv, err = b.ReadVersion(ctx, "limit/created", 1000)
	if err != nil || !bytes.Equal(got, created) || gv == "" {
		t.Errorf("ReadVersion of an object stored by Create = %d bytes, %q, %v", len(got), gv, err)
	}
	if _, _, err := b.ReadVersion(ctx, "limit/created", 999); !errors.Is(err, storage.ErrTooLarge) {
		t.Errorf("ReadVersion of 1000 bytes with limit 999 = %v, want ErrTooLarge", err)
	}
}

// A deleted key is stored anew with version "", and its old version is
// refused.
func testReplaceDeleted(t *testing.T, b storage.Backend) {
	ctx := t.Context()
	const key = "deleted/pointer"
	v1 := mustReplace(t, b, key, []byte("before"), "")
	if err := b.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	checkAbsent(t, b, key)
	if _, _, err := b.ReadVersion(ctx, key, 100); !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("ReadVersion after Delete = %v, want ErrNotExist", err)
	}
	_, err := b.Replace(ctx, key, []byte("after"), v1)
	checkMismatch(t, err, "Replace of a deleted key with its old version", key)
	checkAbsent(t, b, key)
	v2 := mustReplace(t, b, key, []byte("after"), "")
	checkVersion(t, b, key, []byte("after"), v2)
}

// An object open while it is replaced never returns the new contents.
func testReplaceWhileOpen(t *testing.T, b storage.Backend) {
	ctx := t.Context()
	const key = "open/pointer"
	old := Data(7, 1000)
	v1 := mustReplace(t, b, key, old, "")
	o, err := b.Open(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	mustReplace(t, b, key, Data(8, 1000), v1)
	p := make([]byte, 1000)
	if n, err := o.ReadAt(p, 0); err == nil && !bytes.Equal(p[:n], old[:n]) {
		t.Errorf("an object opened before it was replaced read other bytes")
	}
	if n, err := o.Read(p); err == nil && !bytes.Equal(p[:n], old[:n]) {
		t.Errorf("an object opened before it was replaced read other bytes")
	}
}

// counterWriters and counterRounds shape testReplaceConcurrent.
const (
	counterWriters = 8
	counterRounds  = 3
)

// Concurrent read-modify-Replace loops lose no update: each of
// counterWriters goroutines adds its mark counterRounds times to a counter
// object that starts absent, retrying on ErrVersionMismatch. All first
// read the absent key before any replaces it, so that they contend: of
// those first Replaces, exactly one succeeds.
func testReplaceConcurrent(t *testing.T, b storage.Backend) {
	const key = "counter/value"
	var read sync.WaitGroup
	read.Add(counterWriters)
	var firstWins, mismatches atomic.Int64
	var wg sync.WaitGroup
	for w := range counterWriters {
		wg.Go(func() {
			first := true
			for round := range counterRounds {
				mark := fmt.Sprintf("w%d.%d", w, round)
				err := increment(t.Context(), b, key, mark, func() {
					if first {
						read.Done()
						read.Wait()
					}
				}, func(err error) {
					if first && err == nil {
						firstWins.Add(1)
					}
					if errors.Is(err, storage.ErrVersionMismatch) {
						mismatches.Add(1)
					}
					first = false
				})
				if err != nil {
					t.Errorf("writer %d, round %d: %v", w, round, err)
					if first {
						read.Done()
					}
					return
				}
			}
		})
	}
	wg.Wait()
	if n := firstWins.Load(); n != 1 {
		t.Errorf("%d of %d Replaces of the absent key succeeded, want 1", n, counterWriters)
	}
	var want []string
	for w := range counterWriters {
		for round := range counterRounds {
			want = append(want, fmt.Sprintf("w%d.%d", w, round))
		}
	}
	CheckCounter(t, b, key, want)
	t.Logf("%d increments, %d refused versions", len(want), mismatches.Load())
}

// maxIncrementAttempts bounds Increment's retries, so that a backend that
// refuses every version fails the test instead of hanging it.
const maxIncrementAttempts = 1000

// Increment adds one to the counter object under key, as a caller of
// Replace does: it reads the object and its version, appends a line with
// mark, and replaces the object if it still has that version, starting
// over on [storage.ErrVersionMismatch]. The counter holds one line per
// increment; an absent key is zero. It returns how many Replaces were
// refused.
func Increment(ctx context.Context, b storage.Backend, key, mark string) (refused int, err error) {
	err = increment(ctx, b, key, mark, nil, func(err error) {
		if errors.Is(err, storage.ErrVersionMismatch) {
			refused++
		}
	})
	return refused, err
}

// increment is Increment; beforeReplace, if not nil, runs between each
// read and its Replace, and afterReplace sees the result of each Replace.
func increment(ctx context.Context, b storage.Backend, key, mark string, beforeReplace func(), afterReplace func(error)) error {
	for range maxIncrementAttempts {
		data, v, err := b.ReadVersion(ctx, key, storage.MaxReplaceSize)
		if errors.Is(err, storage.ErrNotExist) {
			data, v, err = nil, "", nil
		}
		if err != nil {
			return err
		}
		if beforeReplace != nil {
			beforeReplace()
		}
		_, err = b.Replace(ctx, key, append(data, mark+"\n"...), v)
		if afterReplace != nil {
			afterReplace(err)
		}
		if !errors.Is(err, storage.ErrVersionMismatch) {
			return err
		}
	}
	return fmt.Errorf("increment %q: every one of %d Replaces was refused", key, maxIncrementAttempts)
}

// CheckCounter checks that the counter object under key, which
// [Increment] wrote, holds exactly the marks in want, each once, in any
// order: no increment was lost or applied twice.
func CheckCounter(t testing.TB, b storage.Backend, key string, want []string) {
	t.Helper()
	data, _, err := b.ReadVersion(t.Context(), key, storage.MaxReplaceSize)
	if err != nil {
		t.Fatalf("reading the counter: %v", err)
	}
	got := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if len(data) == 0 {
		got = nil
	}
	if len(got) != len(want) {
		t.Errorf("the counter is %d after %d increments", len(got), len(want))
	}
	got, want = slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(want))
	if !slices.Equal(got, want) {
		for _, m := range want {
			if n := strings.Count("\n"+strings.Join(got, "\n")+"\n", "\n"+m+"\n"); n != 1 {
				t.Errorf("increment %q is in the counter %d times", m, n)
			}
		}
	}
}
