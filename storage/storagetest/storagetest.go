// Package storagetest checks that a storage.Backend keeps the contract
// documented on it, and provides Faulty, a Backend wrapper that fails on
// command, for testing what callers do when storage fails.
//
// Every backend runs the same suite, [Run], so that code written against
// the local-disk backend behaves the same on S3.
package storagetest

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"evx/storage"
)

// LargeSize is the size of the large-object tests. It crosses several part
// boundaries of S3 multipart uploads (16 MiB by default, 5 MiB at least).
const LargeSize = 40 << 20

// multipartSize is just over the default S3 part size, so that an object
// of this size is a multipart upload on S3 whatever the part size.
const multipartSize = storage.DefaultPartSize + 1<<20

// Run runs the conformance suite. newBackend must return a new, empty
// backend for each call; the subtest it is given can register its
// cleanup.
func Run(t *testing.T, newBackend func(t *testing.T) storage.Backend) {
	tests := []struct {
		name string
		f    func(*testing.T, storage.Backend)
	}{
		{"RoundTrip", testRoundTrip},
		{"CreateExisting", testCreateExisting},
		{"ShortInput", testShortInput},
		{"LongInput", testLongInput},
		{"InputError", testInputError},
		{"Sizes", testSizes},
		{"InvalidKeys", testInvalidKeys},
		{"ValidKeys", testValidKeys},
		{"NotExist", testNotExist},
		{"ReadAt", testReadAt},
		{"ReadAfterClose", testReadAfterClose},
		{"List", testList},
		{"InFlightInvisible", testInFlightInvisible},
		{"Delete", testDelete},
		{"ConcurrentCreate", testConcurrentCreate},
		{"Large", testLarge},
		{"CancelDuringCreate", testCancelDuringCreate},
		{"CancelledContext", testCancelledContext},
	}
	tests = append(tests, replaceTests...)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.f(t, newBackend(t))
		})
	}
}

// Data returns n bytes of reproducible pseudo-random data.
func Data(seed uint64, n int) []byte {
	b := make([]byte, n)
	io.ReadFull(DataReader(seed, int64(n)), b)
	return b
}

// DataReader returns a reader of n bytes: the same bytes as Data(seed, n),
// without holding them in memory. They are an AES-CTR key stream, which
// never repeats (so misplaced parts of an upload are caught) and is fast
// even under the race detector.
func DataReader(seed uint64, n int64) io.Reader {
	key := sha256.Sum256([]byte(strconv.FormatUint(seed, 10)))
	block, err := aes.NewCipher(key[:16])
	if err != nil {
		panic(err)
	}
	return &dataReader{stream: cipher.NewCTR(block, make([]byte, aes.BlockSize)), n: n}
}

type dataReader struct {
	stream cipher.Stream
	n      int64
}

func (d *dataReader) Read(p []byte) (int, error) {
	if d.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > d.n {
		p = p[:d.n]
	}
	clear(p)
	d.stream.XORKeyStream(p, p)
	d.n -= int64(len(p))
	return len(p), nil
}

func mustCreate(t *testing.T, b storage.Backend, key string, data []byte) {
	t.Helper()
	if err := b.Create(t.Context(), key, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatalf("Create(%q, %d bytes): %v", key, len(data), err)
	}
}

func readAll(t *testing.T, b storage.Backend, key string) []byte {
	t.Helper()
	o, err := b.Open(t.Context(), key)
	if err != nil {
		t.Fatalf("Open(%q): %v", key, err)
	}
	defer o.Close()
	got := make([]byte, o.Size())
	if _, err := io.ReadFull(o, got); err != nil {
		t.Fatalf("reading %q: %v", key, err)
	}
	if n, err := o.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("%q: Read after Size() bytes = %d, %v; want io.EOF", key, n, err)
	}
	return got
}

// checkData checks that key holds DataReader(seed, n), comparing hashes
// so that large objects need not be held in memory.
func checkData(t *testing.T, b storage.Backend, key string, seed uint64, n int64) {
	t.Helper()
	o, err := b.Open(t.Context(), key)
	if err != nil {
		t.Fatalf("Open(%q): %v", key, err)
	}
	defer o.Close()
	if o.Size() != n {
		t.Fatalf("%q: Size() = %d, want %d", key, o.Size(), n)
	}
	got, want := sha256.New(), sha256.New()
	if m, err := io.Copy(got, o); err != nil || m != n {
		t.Fatalf("reading %q: %d bytes, %v", key, m, err)
	}
	io.Copy(want, DataReader(seed, n))
	if !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Errorf("%q holds the wrong bytes", key)
	}
}

func checkContent(t *testing.T, b storage.Backend, key string, want []byte) {
	t.Helper()
	got := readAll(t, b, key)
	if !bytes.Equal(got, want) {
		t.Errorf("%q holds %d bytes (sha256 %x), want %d bytes (sha256 %x)", key, len(got), sha256.Sum256(got), len(want), sha256.Sum256(want))
	}
	info, err := b.Stat(t.Context(), key)
	if err != nil {
		t.Fatalf("Stat(%q): %v", key, err)
	}
	if info.Key != key || info.Size != int64(len(want)) {
		t.Errorf("Stat(%q) = %q, %d bytes; want %q, %d bytes", key, info.Key, info.Size, key, len(want))
	}
}

// checkAbsent checks that nothing is visible under key, by any method.
func checkAbsent(t *testing.T, b storage.Backend, key string) {
	t.Helper()
	ctx := t.Context()
	_, err := b.Stat(ctx, key)
	if !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("Stat(%q) = %v, want ErrNotExist", key, err)
	}
	checkNotUnavailable(t, err)
	o, err := b.Open(ctx, key)
	if !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("Open(%q) = %v, want ErrNotExist", key, err)
		if err == nil {
			o.Close()
		}
	}
	checkNotUnavailable(t, err)
	infos, err := b.List(ctx, "")
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	for _, info := range infos {
		if info.Key == key {
			t.Errorf("List includes %q (%d bytes)", key, info.Size)
		}
	}
}

func checkQuoted(t *testing.T, err error, s string) {
	t.Helper()
	if err != nil && !strings.Contains(err.Error(), strconv.Quote(s)) {
		t.Errorf("error %q does not quote %q", err, s)
	}
}

// checkNotUnavailable checks that an error the caller caused does not
// claim that the storage is unavailable.
func checkNotUnavailable(t *testing.T, err error) {
	t.Helper()
	if errors.Is(err, storage.ErrUnavailable) {
		t.Errorf("error %q wraps ErrUnavailable, but the storage is up", err)
	}
}

func testRoundTrip(t *testing.T, b storage.Backend) {
	start := time.Now()
	for i, n := range []int{0, 1, 100, 64<<10 - 1, 64 << 10, 64<<10 + 1, 1 << 20} {
		key := fmt.Sprintf("roundtrip/%d", n)
		data := Data(uint64(i), n)
		mustCreate(t, b, key, data)
		checkContent(t, b, key, data)
		info, err := b.Stat(t.Context(), key)
		if err != nil {
			t.Fatal(err)
		}
		// Generous: S3 servers keep whole seconds and have their own clock.
		if info.Modified.Before(start.Add(-time.Minute)) || info.Modified.After(time.Now().Add(time.Minute)) {
			t.Errorf("Stat(%q).Modified = %v, not near now (%v)", key, info.Modified, start)
		}
	}
}

func testCreateExisting(t *testing.T, b storage.Backend) {
	for _, n := range []int{0, 10, multipartSize} {
		key := fmt.Sprintf("existing/%d", n)
		first := Data(1, n)
		mustCreate(t, b, key, first)
		second := Data(2, n+1)
		err := b.Create(t.Context(), key, bytes.NewReader(second), int64(len(second)))
		if !errors.Is(err, storage.ErrExist) {
			t.Fatalf("second Create(%q) = %v, want ErrExist", key, err)
		}
		checkQuoted(t, err, key)
		checkNotUnavailable(t, err)
		checkContent(t, b, key, first)
	}
}

func testShortInput(t *testing.T, b storage.Backend) {
	for _, n := range []int{1, 2, 64 << 10, multipartSize} {
		for _, short := range slices.Compact([]int{n - 1, 0}) {
			key := fmt.Sprintf("short/%d-%d", n, short)
			data := Data(3, n)
			err := b.Create(t.Context(), key, bytes.NewReader(data[:short]), int64(n))
			if !errors.Is(err, storage.ErrSizeMismatch) {
				t.Fatalf("Create(%q) of %d bytes declared %d = %v, want ErrSizeMismatch", key, short, n, err)
			}
			checkQuoted(t, err, key)
			checkNotUnavailable(t, err)
			checkAbsent(t, b, key)
			// A failed Create does not block the key.
			mustCreate(t, b, key, data)
			checkContent(t, b, key, data)
		}
	}
}

func testLongInput(t *testing.T, b storage.Backend) {
	for _, n := range []int{0, 1, 64 << 10, multipartSize} {
		for _, extra := range []int{1, 1000} {
			key := fmt.Sprintf("long/%d-%d", n, extra)
			data := Data(4, n+extra)
			err := b.Create(t.Context(), key, bytes.NewReader(data), int64(n))
			if !errors.Is(err, storage.ErrSizeMismatch) {
				t.Fatalf("Create(%q) of %d bytes declared %d = %v, want ErrSizeMismatch", key, n+extra, n, err)
			}
			checkQuoted(t, err, key)
			checkNotUnavailable(t, err)
			checkAbsent(t, b, key)
		}
	}
	// The end is found even when the input only says so after the last
	// byte, as network streams do.
	key := "long/split-eof"
	data := Data(5, 1000)
	if err := b.Create(t.Context(), key, &oneByteReader{data: data}, int64(len(data))); err != nil {
		t.Fatalf("Create(%q) from a byte-at-a-time reader: %v", key, err)
	}
	checkContent(t, b, key, data)
}

// oneByteReader returns one byte per Read, and io.EOF only on the Read
// after the last byte.
type oneByteReader struct{ data []byte }

func (r *oneByteReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	p[0] = r.data[0]
	r.data = r.data[1:]
	return 1, nil
}

// failingReader returns n bytes of data and then err.
type failingReader struct {
	r   io.Reader
	n   int64
	err error
}

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, r.err
	}
	if int64(len(p)) > r.n {
		p = p[:r.n]
	}
	n, err := r.r.Read(p)
	r.n -= int64(n)
	return n, err
}

var errBrokenInput = errors.New("broken input")

// Inputs fail in ways that look like storage failures, such as an
// uploading client's connection or a source file's disk failing: those are
// the input's failures, and Create does not call them the storage's.
var inputErrors = []error{
	errBrokenInput,
	&fs.PathError{Op: "read", Path: "/evidence/disk.img", Err: syscall.EIO},
	&net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET},
	fmt.Errorf("upload stalled: %w", os.ErrDeadlineExceeded),
}

func testInputError(t *testing.T, b storage.Backend) {
	for _, n := range []int64{10, multipartSize} {
		for _, at := range []int64{0, n / 2, n - 1, n} {
			for i, inputErr := range inputErrors {
				if n == multipartSize && i > 0 && at != n/2 {
					continue // enough large uploads
				}
				key := fmt.Sprintf("inputerror/%d-%d-%d", n, at, i)
				r := &failingReader{r: DataReader(6, n), n: at, err: inputErr}
				err := b.Create(t.Context(), key, r, n)
				if !errors.Is(err, inputErr) {
					t.Fatalf("Create(%q) with input failing at %d of %d = %v, want the input's error", key, at, n, err)
				}
				checkNotUnavailable(t, err)
				checkAbsent(t, b, key)
			}
		}
	}
}

// unreadable fails the test if it is read.
type unreadable struct{ t *testing.T }

func (u unreadable) Read(p []byte) (int, error) {
	u.t.Error("input read although the size was refused")
	return 0, io.EOF
}

func testSizes(t *testing.T, b storage.Backend) {
	ctx := t.Context()
	err := b.Create(ctx, "size/huge", unreadable{t}, storage.MaxObjectSize+1)
	if !errors.Is(err, storage.ErrTooLarge) {
		t.Errorf("Create of MaxObjectSize+1 bytes = %v, want ErrTooLarge", err)
	}
	checkNotUnavailable(t, err)
	checkAbsent(t, b, "size/huge")
	err = b.Create(ctx, "size/negative", unreadable{t}, -1)
	if err == nil {
		t.Errorf("Create of size -1 succeeded")
	}
	checkNotUnavailable(t, err)
	checkAbsent(t, b, "size/negative")
}

// InvalidKeys are keys that every Backend refuses.
var InvalidKeys = []string{
	"",
	"/",
	"/a",
	"a/",
	"a//b",
	".",
	"..",
	"../a",
	"a/../b",
	"a/./b",
	"a/..",
	".tmp",
	".tmp/x",
	"a/.hidden",
	"a b",
	"a\x00b",
	"a\nb",
	"a\\b",
	"caf\u00e9",
	"a:b",
	"a*",
	"a?b",
	"a%2Fb",
	"a+b",
	strings.Repeat("a", 256),
	"x/" + strings.Repeat("a", 256),
	strings.Repeat("a/", 512) + "a",
}

func testInvalidKeys(t *testing.T, b storage.Backend) {
	ctx := t.Context()
	for _, key := range InvalidKeys {
		err := b.Create(ctx, key, unreadable{t}, 0)
		if !errors.Is(err, storage.ErrInvalidKey) {
			t.Errorf("Create(%q) = %v, want ErrInvalidKey", key, err)
		}
		checkQuoted(t, err, key)
		o, err := b.Open(ctx, key)
		if !errors.Is(err, storage.ErrInvalidKey) {
			t.Errorf("Open(%q) = %v, want ErrInvalidKey", key, err)
			if err == nil {
				o.Close()
			}
		}
		checkQuoted(t, err, key)
		if _, err := b.Stat(ctx, key); !errors.Is(err, storage.ErrInvalidKey) {
			t.Errorf("Stat(%q) = %v, want ErrInvalidKey", key, err)
		}
		if err := b.Delete(ctx, key); !errors.Is(err, storage.ErrInvalidKey) {
			t.Errorf("Delete(%q) = %v, want ErrInvalidKey", key, err)
		}
		_, _, err = b.ReadVersion(ctx, key, 100)
		if !errors.Is(err, storage.ErrInvalidKey) {
			t.Errorf("ReadVersion(%q) = %v, want ErrInvalidKey", key, err)
		}
		checkQuoted(t, err, key)
		_, err = b.Replace(ctx, key, []byte("x"), "")
		if !errors.Is(err, storage.ErrInvalidKey) {
			t.Errorf("Replace(%q) = %v, want ErrInvalidKey", key, err)
		}
		checkQuoted(t, err, key)
		if key == "" || key == "a/" {
			continue // valid prefixes
		}
		if _, err := b.List(ctx, key); !errors.Is(err, storage.ErrInvalidKey) {
			t.Errorf("List(%q) = %v, want ErrInvalidKey", key, err)
		}
	}
	infos, err := b.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 0 {
		t.Errorf("List after refused Creates = %v, want nothing", infos)
	}
}

func testValidKeys(t *testing.T, b storage.Backend) {
	long := strings.Repeat(strings.Repeat("b", 204)+"/", 5)
	long = long[:len(long)-1]
	keys := []string{
		"a",
		"A.b-c_d",
		"x/y/z",
		"a.",
		"a..b",
		"dir/b.",
		"0123456789abcdef0123456789abcdef/payload.age",
		strings.Repeat("s", 255),
		long,
	}
	if len(long) != storage.MaxKeyLength {
		t.Fatalf("test key is %d bytes, want %d", len(long), storage.MaxKeyLength)
	}
	for i, key := range keys {
		if err := storage.ValidKey(key); err != nil {
			t.Errorf("ValidKey(%q) = %v", key, err)
		}
		data := Data(uint64(i), 10+i)
		mustCreate(t, b, key, data)
		checkContent(t, b, key, data)
	}
	infos, err := b.List(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	want := slices.Clone(keys)
	slices.Sort(want)
	if got := infoKeys(infos); !slices.Equal(got, want) {
		t.Errorf("List = %q, want %q", got, want)
	}
}

func infoKeys(infos []storage.Info) []string {
	keys := make([]string, len(infos))
	for i, info := range infos {
		keys[i] = info.Key
	}
	return keys
}

func testNotExist(t *testing.T, b storage.Backend) {
	mustCreate(t, b, "present/x", []byte("x"))
	for _, key := range []string{"absent", "present/y", "present/x/y", "no/such/dir/key", "present"} {
		_, err := b.Stat(t.Context(), key)
		if !errors.Is(err, storage.ErrNotExist) {
			t.Errorf("Stat(%q) = %v, want ErrNotExist", key, err)
		}
		checkQuoted(t, err, key)
		checkNotUnavailable(t, err)
		o, err := b.Open(t.Context(), key)
		if !errors.Is(err, storage.ErrNotExist) {
			t.Errorf("Open(%q) = %v, want ErrNotExist", key, err)
			if err == nil {
				o.Close()
			}
		}
		checkQuoted(t, err, key)
	}
}

func testReadAt(t *testing.T, b storage.Backend) {
	const chunk = 64 << 10
	n := int64(3*chunk + 17)
	data := Data(7, int(n))
	mustCreate(t, b, "readat", data)
	o, err := b.Open(t.Context(), "readat")
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if o.Size() != n {
		t.Fatalf("Size() = %d, want %d", o.Size(), n)
	}
	for _, tc := range []struct{ off, len int64 }{
		{0, 0}, {0, 1}, {0, n}, {0, n + 1}, {1, n - 1}, {1, n},
		{chunk - 1, 2}, {chunk, 1}, {chunk + 1, chunk}, {2*chunk - 1, chunk + 2},
		{n - 1, 1}, {n - 1, 2}, {n, 0}, {n, 1}, {n + 1, 1}, {n + chunk, 10},
	} {
		p := make([]byte, tc.len)
		got, err := o.ReadAt(p, tc.off)
		want := max(0, min(tc.len, n-tc.off))
		if int64(got) != want {
			t.Errorf("ReadAt(%d bytes at %d) read %d bytes, want %d (err %v)", tc.len, tc.off, got, want, err)
			continue
		}
		if want < tc.len && err != io.EOF {
			t.Errorf("ReadAt(%d bytes at %d) short read with error %v, want io.EOF", tc.len, tc.off, err)
		}
		if want == tc.len && err != nil && err != io.EOF {
			t.Errorf("ReadAt(%d bytes at %d): %v", tc.len, tc.off, err)
		}
		if want > 0 && !bytes.Equal(p[:got], data[tc.off:tc.off+want]) {
			t.Errorf("ReadAt(%d bytes at %d) returned the wrong bytes", tc.len, tc.off)
		}
	}

	// ReadAt neither moves nor is moved by Read.
	first := make([]byte, chunk+5)
	if _, err := io.ReadFull(o, first); err != nil {
		t.Fatal(err)
	}
	if _, err := o.ReadAt(make([]byte, 100), 7); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(o)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(append(first, rest...), data) {
		t.Errorf("Read interleaved with ReadAt returned the wrong bytes")
	}

	// Parallel ReadAt calls are allowed.
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			off := int64(i) * (n / 8)
			p := make([]byte, n/8+3)
			got, err := o.ReadAt(p, off)
			if err != nil && err != io.EOF {
				t.Errorf("parallel ReadAt at %d: %v", off, err)
				return
			}
			if !bytes.Equal(p[:got], data[off:off+int64(got)]) || int64(got) != min(int64(len(p)), n-off) {
				t.Errorf("parallel ReadAt at %d returned the wrong bytes", off)
			}
		})
	}
	wg.Wait()
}

func testReadAfterClose(t *testing.T, b storage.Backend) {
	mustCreate(t, b, "closed", []byte("data"))
	o, err := b.Open(t.Context(), "closed")
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	if n, err := o.Read(make([]byte, 4)); err == nil || n != 0 {
		t.Errorf("Read after Close = %d, %v; want an error", n, err)
	}
	if n, err := o.ReadAt(make([]byte, 4), 0); err == nil || n != 0 {
		t.Errorf("ReadAt after Close = %d, %v; want an error", n, err)
	}
}

func testList(t *testing.T, b storage.Backend) {
	ctx := t.Context()
	infos, err := b.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if infos == nil || len(infos) != 0 {
		t.Errorf("List of an empty backend = %#v, want an empty non-nil slice", infos)
	}
	sizes := map[string]int{"x/1": 1, "x/2": 2, "x-y": 3, "xx": 4, "y/z/w": 5, "x/sub/3": 6, "y1": 0}
	// Created out of order, so that sorting is the backend's doing.
	for _, key := range []string{"y1", "x/sub/3", "xx", "x/2", "y/z/w", "x-y", "x/1"} {
		mustCreate(t, b, key, Data(8, sizes[key]))
	}
	for _, tc := range []struct {
		prefix string
		want   []string
	}{
		{"", []string{"x-y", "x/1", "x/2", "x/sub/3", "xx", "y/z/w", "y1"}},
		{"x", []string{"x-y", "x/1", "x/2", "x/sub/3", "xx"}},
		{"x/", []string{"x/1", "x/2", "x/sub/3"}},
		{"x/s", []string{"x/sub/3"}},
		{"x/sub/", []string{"x/sub/3"}},
		{"x/1", []string{"x/1"}},
		{"y", []string{"y/z/w", "y1"}},
		{"y/z/w", []string{"y/z/w"}},
		{"y/z/w/", nil},
		{"z", nil},
		{"z/", nil},
		{"xy", nil},
	} {
		infos, err := b.List(ctx, tc.prefix)
		if err != nil {
			t.Errorf("List(%q): %v", tc.prefix, err)
			continue
		}
		if got := infoKeys(infos); !slices.Equal(got, tc.want) && !(len(got) == 0 && len(tc.want) == 0) {
			t.Errorf("List(%q) = %q, want %q", tc.prefix, got, tc.want)
		}
		for _, info := range infos {
			if info.Size != int64(sizes[info.Key]) {
				t.Errorf("List(%q): %q has size %d, want %d", tc.prefix, info.Key, info.Size, sizes[info.Key])
			}
			if info.Modified.IsZero() {
				t.Errorf("List(%q): %q has no modification time", tc.prefix, info.Key)
			}
		}
	}
}

// stallingReader passes on r, but before reading past at it signals
// reached and waits for release.
type stallingReader struct {
	r       io.Reader
	at      int64
	read    int64
	reached chan struct{}
	release chan struct{}
	once    sync.Once
}

func newStallingReader(r io.Reader, at int64) *stallingReader {
	return &stallingReader{r: r, at: at, reached: make(chan struct{}), release: make(chan struct{})}
}

func (s *stallingReader) Read(p []byte) (int, error) {
	if s.read >= s.at {
		s.once.Do(func() { close(s.reached) })
		<-s.release
	} else if int64(len(p)) > s.at-s.read {
		p = p[:s.at-s.read]
	}
	n, err := s.r.Read(p)
	s.read += int64(n)
	return n, err
}

func testInFlightInvisible(t *testing.T, b storage.Backend) {
	for _, n := range []int64{1, 64 << 10, multipartSize} {
		for _, at := range slices.Compact([]int64{0, n - 1, n}) {
			key := fmt.Sprintf("inflight/%d-%d", n, at)
			r := newStallingReader(DataReader(9, n), at)
			done := make(chan error, 1)
			go func() { done <- b.Create(t.Context(), key, r, n) }()
			select {
			case <-r.reached:
			case err := <-done:
				t.Fatalf("Create(%q) returned %v before reading all its input", key, err)
			}
			checkAbsent(t, b, key)
			close(r.release)
			if err := <-done; err != nil {
				t.Fatalf("Create(%q): %v", key, err)
			}
			checkData(t, b, key, 9, n)
		}
	}
}

func testDelete(t *testing.T, b storage.Backend) {
	ctx := t.Context()
	mustCreate(t, b, "del/a", []byte("first"))
	mustCreate(t, b, "del/b", []byte("other"))
	if err := b.Delete(ctx, "del/a"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	checkAbsent(t, b, "del/a")
	checkContent(t, b, "del/b", []byte("other"))
	// Idempotent.
	if err := b.Delete(ctx, "del/a"); err != nil {
		t.Errorf("second Delete = %v, want nil", err)
	}
	if err := b.Delete(ctx, "never/created"); err != nil {
		t.Errorf("Delete of a key never created = %v, want nil", err)
	}
	// The key can be used again.
	mustCreate(t, b, "del/a", []byte("second"))
	checkContent(t, b, "del/a", []byte("second"))
	infos, err := b.List(ctx, "del/")
	if err != nil {
		t.Fatal(err)
	}
	if got := infoKeys(infos); !slices.Equal(got, []string{"del/a", "del/b"}) {
		t.Errorf("List after re-creation = %q", got)
	}
	// An open object stays readable or fails cleanly once deleted; it never
	// returns other data.
	o, err := b.Open(ctx, "del/b")
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if err := b.Delete(ctx, "del/b"); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, b, "del/b", []byte("newer"))
	p := make([]byte, 5)
	if n, err := o.ReadAt(p, 0); err == nil && string(p[:n]) != "other" {
		t.Errorf("an object opened before its key was deleted and re-created read %q", p[:n])
	}
}

func testConcurrentCreate(t *testing.T, b storage.Backend) {
	for _, n := range []int{1, 4 << 10, multipartSize} {
		rounds := 3
		if n == multipartSize {
			rounds = 1
		}
		for round := range rounds {
			key := fmt.Sprintf("race/%d-%d", n, round)
			contenders := 2
			if n < multipartSize {
				contenders = 4
			}
			datas := make([][]byte, contenders)
			readers := make([]*stallingReader, contenders)
			errs := make([]error, contenders)
			var wg sync.WaitGroup
			for i := range contenders {
				datas[i] = Data(uint64(100+i), n)
				// Every Create has read all but the last byte before any
				// may finish, so they overlap as much as they can.
				readers[i] = newStallingReader(bytes.NewReader(datas[i]), int64(n-1))
				wg.Go(func() { errs[i] = b.Create(t.Context(), key, readers[i], int64(n)) })
			}
			for _, r := range readers {
				<-r.reached
			}
			for _, r := range readers {
				close(r.release)
			}
			wg.Wait()
			winner := -1
			for i, err := range errs {
				switch {
				case err == nil && winner >= 0:
					t.Fatalf("Create(%q): contenders %d and %d both succeeded", key, winner, i)
				case err == nil:
					winner = i
				case !errors.Is(err, storage.ErrExist):
					t.Errorf("Create(%q) contender %d = %v, want nil or ErrExist", key, i, err)
				}
				checkNotUnavailable(t, err)
			}
			if winner < 0 {
				t.Fatalf("Create(%q): no contender succeeded: %v", key, errs)
			}
			checkContent(t, b, key, datas[winner])
		}
	}
}

func testLarge(t *testing.T, b storage.Backend) {
	const key = "large/object"
	if err := b.Create(t.Context(), key, DataReader(10, LargeSize), LargeSize); err != nil {
		t.Fatalf("Create of %d bytes: %v", LargeSize, err)
	}
	checkData(t, b, key, 10, LargeSize)
	o, err := b.Open(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	// Reads across the part boundaries of an S3 upload.
	all := Data(10, LargeSize)
	for _, part := range []int64{storage.MinPartSize, storage.DefaultPartSize, 7 << 20} {
		for off := part - 2; off < LargeSize; off += part {
			p := make([]byte, 4)
			n, err := o.ReadAt(p, off)
			if err != nil && err != io.EOF || !bytes.Equal(p[:n], all[off:off+int64(n)]) || n != int(min(4, LargeSize-off)) {
				t.Errorf("ReadAt(4 bytes at %d) = %d, %v, or the wrong bytes", off, n, err)
			}
		}
	}
}

// cancellingReader cancels its context after passing on n bytes, and
// carries on reading.
type cancellingReader struct {
	r      io.Reader
	n      int64
	cancel context.CancelFunc
}

func (c *cancellingReader) Read(p []byte) (int, error) {
	if c.n <= 0 {
		c.cancel()
	} else if int64(len(p)) > c.n {
		p = p[:c.n]
	}
	n, err := c.r.Read(p)
	c.n -= int64(n)
	return n, err
}

func testCancelDuringCreate(t *testing.T, b storage.Backend) {
	for _, n := range []int64{64 << 10, multipartSize} {
		for _, at := range []int64{0, n / 2, storage.MinPartSize + 1, n - 1} {
			if at >= n {
				continue
			}
			key := fmt.Sprintf("cancel/%d-%d", n, at)
			ctx, cancel := context.WithCancel(t.Context())
			err := b.Create(ctx, key, &cancellingReader{r: DataReader(11, n), n: at, cancel: cancel}, n)
			cancel()
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("Create(%q) cancelled after %d of %d bytes = %v, want context.Canceled", key, at, n, err)
			}
			checkNotUnavailable(t, err)
			checkAbsent(t, b, key)
		}
	}
}

func testCancelledContext(t *testing.T, b storage.Backend) {
	mustCreate(t, b, "cancelled/present", []byte("x"))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	for _, err := range cancelledCalls(ctx, b, "cancelled/new", "cancelled/present") {
		if !errors.Is(err.err, context.Canceled) {
			t.Errorf("%s = %v, want context.Canceled", err.call, err.err)
		}
		checkNotUnavailable(t, err.err)
	}
	checkAbsent(t, b, "cancelled/new")
	checkContent(t, b, "cancelled/present", []byte("x"))
}

type callError struct {
	call string
	err  error
}

// cancelledCalls calls each method of b with ctx: Create and Replace of
// absent, the others of present.
func cancelledCalls(ctx context.Context, b storage.Backend, absent, present string) []callError {
	var errs []callError
	add := func(call string, err error) { errs = append(errs, callError{call, err}) }
	add("Create", b.Create(ctx, absent, strings.NewReader("x"), 1))
	o, err := b.Open(ctx, present)
	if err == nil {
		o.Close()
	}
	add("Open", err)
	_, err = b.Stat(ctx, present)
	add("Stat", err)
	_, err = b.List(ctx, "")
	add("List", err)
	add("Delete", b.Delete(ctx, present))
	_, _, err = b.ReadVersion(ctx, present, 100)
	add("ReadVersion", err)
	_, err = b.Replace(ctx, absent, []byte("x"), "")
	add("Replace", err)
	return errs
}
