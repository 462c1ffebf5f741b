// Package storage keeps a gateway's objects (bundle payloads, envelopes,
// receipts) in a flat namespace of immutable objects, on local disk ([Disk])
// or in an S3-compatible bucket ([S3]).
//
// Objects are never modified in place: an object is created once, complete
// and durable, and later read or deleted. That is almost all a gateway
// needs, and it is what every S3 implementation and every POSIX file system
// can do atomically, so the two backends keep exactly the same contract,
// written on [Backend] and checked by the conformance suite in package
// storagetest.
//
// The one exception is a compare-and-swap for small objects: Replace swaps
// the whole object stored under a key for another if it is still the
// version the caller read, as a pointer to the latest state (a transfer
// log's checkpoint) needs when two processes may write it. Such keys are
// written only with Replace, never with Create.
//
// Objects can also be locked against deletion until a date, with a legal
// hold on top: both backends implement the optional [Locker] interface,
// whose contract adds to Backend's (docs/retention.md, "Storage locks").
// Code that only needs Backend sees no difference, except that Delete
// (and Create, of a key whose locked object was removed past the backend)
// fails with [ErrLocked] on a locked key.
//
// A record made of several objects (a bundle is a payload and an envelope)
// becomes atomic by ordering: create the large objects first and one small
// object last as the commit point, and treat a record as present only when
// its commit object exists. A crash at any point then leaves, at worst,
// unreferenced objects that were never visible as a record.
package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// MaxObjectSize is the largest object a [Backend] stores: 64 GiB.
//
// It bounds the S3 multipart arithmetic: at the default 16 MiB part size, 64
// GiB is 4,096 parts, well inside S3's limit of 10,000 parts per upload, so
// an upload can never be cut short by running out of part numbers. Bundles
// are expected to be at most a few GiB.
const MaxObjectSize = 64 << 30

// MaxReplaceSize is the largest object that Replace stores, and the
// largest limit of ReadVersion: 1 MiB. Replace is for small pointers to
// the latest state, which it holds in memory; one S3 PUT stores them.
const MaxReplaceSize = 1 << 20

// maxVersionLength bounds the versions of ReadVersion and Replace: S3
// ETags are 32 to 40 characters, Disk's versions 64.
const maxVersionLength = 256

// MaxKeyLength is the longest key, in bytes. It is S3's limit.
const MaxKeyLength = 1024

// maxSegmentLength is the longest segment of a key: the usual file name
// limit (NAME_MAX), so that every key is also a valid path on [Disk].
const maxSegmentLength = 255

// Errors returned by [Backend] methods, wrapped with the key or size they
// concern: test for them with [errors.Is].
var (
	// ErrExist means Create found an object already stored under the key.
	ErrExist = errors.New("object already exists")
	// ErrNotExist means no object is stored under the key.
	ErrNotExist = errors.New("object does not exist")
	// ErrInvalidKey means the key (or List prefix) breaks the key syntax
	// documented on [Backend].
	ErrInvalidKey = errors.New("invalid object key")
	// ErrTooLarge means Create was asked to store more than [MaxObjectSize]
	// bytes, Replace more than [MaxReplaceSize], or ReadVersion found an
	// object larger than its limit.
	ErrTooLarge = errors.New("object too large")
	// ErrVersionMismatch means Replace found another version of the object
	// than the one it was given, or an object where it was told there was
	// none, or none where it was given a version.
	ErrVersionMismatch = errors.New("object version does not match")
	// ErrSizeMismatch means the reader given to Create ended before the
	// declared size, or had more data after it.
	ErrSizeMismatch = errors.New("input size does not match the declared size")
	// ErrUnavailable means the storage could not serve the call for now,
	// through no fault of the caller: see "Unavailable storage" on
	// [Backend].
	ErrUnavailable = errors.New("storage unavailable")
)

// Backend stores immutable objects under keys.
//
// # Keys
//
// A key is a non-empty slash-separated object name of at most
// [MaxKeyLength] bytes, such as "bundles/0af3…/payload.age". Each segment
// between slashes is 1 to 255 characters from A-Z, a-z, 0-9, '-', '_' and
// '.', and does not start with '.'. So a key has no leading, trailing or
// doubled slash, no "." or ".." segment and no hidden file name. The
// character set is deliberately small: it means the same thing as a file
// path, in an S3 request and in a log line, and it can be widened later
// without invalidating a stored key. Every method returns an error wrapping
// [ErrInvalidKey] that quotes the key if it is not valid, before doing
// anything else.
//
// A key must not also be a directory of other keys: "a" and "a/b" cannot
// both be stored. [Disk] refuses the second; other backends may accept it,
// so callers must lay out their keys to avoid it.
//
// # Methods
//
// Create stores the size bytes read from r as a new object under key. It is
// create-only and atomic:
//   - When it returns nil, the object is complete and durable: it survives a
//     crash or power loss of the process and of the machine (for S3, as far
//     as the server's own durability guarantees go).
//   - No partial object is ever visible to Open, Stat or List, whether
//     Create is still running, failed, or was interrupted by a crash or a
//     cancelled ctx.
//   - If an object is already stored under key, Create fails with an error
//     wrapping [ErrExist] and leaves that object untouched. Of concurrent
//     Creates of one key, from this process or another, at most one
//     succeeds; the others fail with [ErrExist].
//   - r must yield exactly size bytes and then io.EOF. If it ends early or
//     has more data, Create fails with an error wrapping [ErrSizeMismatch];
//     if reading r fails, the error wraps r's error. In each case nothing is
//     stored. Create may read one byte past size to check for the end, so a
//     caller that must not over-read a shared stream wraps it in an
//     [io.LimitedReader] first.
//   - size must be between 0 and [MaxObjectSize]; a larger size fails with
//     [ErrTooLarge] before r is read. Memory use is bounded whatever the
//     size.
//   - A failed Create can have stored the complete object only if the
//     failure came after the backend committed it (say, the response of a
//     remote server was lost). A caller that retries Create after an error
//     must therefore expect [ErrExist] from its own earlier attempt, and
//     compare contents if it needs to tell the two apart.
//
// Open returns the object stored under key for reading, with random access;
// it fails with [ErrNotExist] if there is none. The object's contents do not
// change while it is open, since objects are immutable; deleting it while
// open may make later reads fail on some backends. Reads may use the ctx
// given to Open (S3's do), so it must stay live until the Object is closed.
//
// Stat returns the key, size and modification time of the object stored
// under key, or an error wrapping [ErrNotExist].
//
// List returns every object whose key starts with prefix, sorted by key in
// byte order. prefix is "" (everything), a valid key (which also matches
// longer keys: "bundles/0a" matches "bundles/0af3/payload.age"), or a
// valid key followed by "/". List builds the whole answer in memory, so it
// is meant for modest listings (thousands of objects, not millions): use
// prefixes to keep them so. It reflects every Create and Delete that
// returned before it started; those running meanwhile may or may not be
// included.
//
// Delete removes the object stored under key. It is idempotent: deleting a
// key that has no object returns nil. It refuses a locked object with
// [ErrLocked] (see [Locker]). When it returns nil the object is no
// longer visible and a new object may be created under key. (On a versioned
// S3 bucket the data is kept as a noncurrent version, as the bucket's
// policy decides.)
//
// # Replacing small objects
//
// ReadVersion returns the whole object stored under key and its version,
// an opaque token of 1 to 256 visible ASCII characters ('!' to '~') to
// give to Replace. The two belong together: the version is that of the
// bytes returned, even while Replaces of the key run. ReadVersion fails with an error wrapping [ErrNotExist] if no
// object is stored under key, and with one wrapping [ErrTooLarge] if the
// object is longer than limit bytes, which must be between 0 and
// [MaxReplaceSize]; it never holds more than limit bytes of the object.
//
// Replace stores data as the object under key if the version stored there
// now is ifVersion, and returns the version of data; ifVersion "" means
// "only if no object is stored under key". It is a compare-and-swap:
//   - When it returns nil, data is the object stored under key, complete
//     and durable as after Create.
//   - It is atomic: Open, ReadVersion, Stat and List see the old object or
//     the new one, each complete, never a mix and never no object. An
//     Object opened before keeps reading the old contents, or fails to
//     read (S3 backends); it never returns the new ones.
//   - Replaces of one key, from this process or others, take effect one at
//     a time, each comparing against what the previous one stored: of
//     concurrent Replaces given the same ifVersion, at most one succeeds.
//   - If the version stored is not ifVersion (an object is stored and
//     ifVersion is "", or none is and ifVersion is not ""), Replace fails
//     with an error wrapping [ErrVersionMismatch] that quotes the key, and
//     changes nothing. The caller reads the object again and decides anew.
//     Any string is a valid ifVersion: one that is not the stored
//     object's version, whatever it is, fails so too.
//   - data must be at most [MaxReplaceSize] bytes; more fails with
//     [ErrTooLarge] before anything is stored. Replace does not keep data.
//   - A failed Replace whose error does not wrap ErrVersionMismatch (it
//     wraps [ErrUnavailable], or ctx.Err(), or the process crashed) may or
//     may not have stored data; ReadVersion tells. Unlike Create, Replace
//     never retries a request itself, so that a mismatch can never be its
//     own earlier attempt that succeeded.
//
// A version stands for the object's contents, not for one write: storing
// the same bytes again may give the same version as before (on [Disk] it
// always does; on S3 it usually does), so a version cannot tell that an
// object changed and changed back. Versions mean something only for the
// key and backend that returned them.
//
// A key is written either with Create, once, or with Replace, never with
// both: Create's guarantees above hold for the keys that only Create
// writes, and Replace's for the keys that only Replace writes. ReadVersion
// may read any object. Delete removes an object stored with Replace like
// any other, in order with the Replaces of its key; a Replace with
// ifVersion "" then stores the key anew.
//
// # Cancellation and concurrency
//
// Every method honours ctx: once ctx is done, a running call fails with an
// error wrapping ctx.Err() as soon as it notices, with the guarantees above
// (a cancelled Create leaves no partial object). All methods are safe for
// concurrent use.
//
// # Unavailable storage
//
// When the storage itself fails, the error wraps [ErrUnavailable] as well
// as the backend's own error, and quotes the key (or List prefix): for S3,
// the server could not be reached, did not answer in time, or answered
// that it is failing or overloaded (a 5xx status other than 501, 429,
// SlowDown and other throttling codes); for disk, the file system reported
// an I/O error, is full or over quota, is read-only, or the process is out
// of file descriptors. Reads from an open Object that fail so wrap it too.
// Such a failure is nobody's doing but the storage's, and a retry later may
// succeed. As with any failed Create or Replace, the object may or may not
// have been stored.
//
// ErrUnavailable is never wrapped together with [ErrNotExist], [ErrExist],
// [ErrInvalidKey], [ErrTooLarge], [ErrSizeMismatch] or
// [ErrVersionMismatch], nor by the error of a reader given to Create
// (whatever that error is), nor when ctx is done: those are the caller's
// to act on. Failures that retrying will not cure,
// such as refused credentials, a missing bucket or an untrusted server
// certificate, wrap none of these errors.
type Backend interface {
	Create(ctx context.Context, key string, r io.Reader, size int64) error
	Open(ctx context.Context, key string) (Object, error)
	Stat(ctx context.Context, key string) (Info, error)
	List(ctx context.Context, prefix string) ([]Info, error)
	Delete(ctx context.Context, key string) error
	ReadVersion(ctx context.Context, key string, limit int64) (data []byte, version string, err error)
	Replace(ctx context.Context, key string, data []byte, ifVersion string) (version string, err error)
}

// Object is an open stored object. Read reads it sequentially from the
// start; ReadAt reads anywhere in it, as io.ReaderAt specifies (parallel
// ReadAt calls are allowed, and a short read returns an error, io.EOF at
// the end). Read and ReadAt are independent. Close releases it.
type Object interface {
	io.Reader
	io.ReaderAt
	io.Closer
	// Size returns the object's length in bytes.
	Size() int64
}

// Info describes a stored object.
type Info struct {
	Key  string
	Size int64
	// Modified is when the object was stored, by the backend's clock, at
	// whatever precision it keeps (one second for some S3 servers).
	Modified time.Time
}

// ValidKey reports whether key is a valid object key, and if not, returns
// an error wrapping [ErrInvalidKey] that quotes it and says why.
func ValidKey(key string) error {
	if why := keyProblem(key); why != "" {
		return fmt.Errorf("%w %q: %s", ErrInvalidKey, key, why)
	}
	return nil
}

// validPrefix checks a List prefix: "", a key, or a key and a slash.
func validPrefix(prefix string) error {
	k := prefix
	if len(k) > 0 && k[len(k)-1] == '/' {
		k = k[:len(k)-1]
	}
	if prefix == "" {
		return nil
	}
	if why := keyProblem(k); why != "" {
		return fmt.Errorf("%w: prefix %q: %s", ErrInvalidKey, prefix, why)
	}
	return nil
}

func keyProblem(key string) string {
	switch {
	case key == "":
		return "empty key"
	case len(key) > MaxKeyLength:
		return fmt.Sprintf("longer than %d bytes", MaxKeyLength)
	}
	start := 0
	for i := 0; i <= len(key); i++ {
		if i < len(key) && key[i] != '/' {
			c := key[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
				return fmt.Sprintf("character %q at offset %d is not allowed (only A-Z a-z 0-9 - _ . and /)", c, i)
			}
			continue
		}
		seg := key[start:i]
		switch {
		case seg == "" && start == 0:
			return "leading slash"
		case seg == "" && i == len(key):
			return "trailing slash"
		case seg == "":
			return "empty segment (double slash)"
		case seg[0] == '.':
			return fmt.Sprintf("segment %q starts with a dot", seg)
		case len(seg) > maxSegmentLength:
			return fmt.Sprintf("segment longer than %d bytes", maxSegmentLength)
		}
		start = i + 1
	}
	return ""
}

func checkSize(key string, size int64) error {
	if size < 0 {
		return fmt.Errorf("create %q: negative size %d", key, size)
	}
	if size > MaxObjectSize {
		return fmt.Errorf("create %q: %w: %d bytes, the limit is %d", key, ErrTooLarge, size, int64(MaxObjectSize))
	}
	return nil
}

// checkReadVersion checks the arguments of ReadVersion, and that ctx is
// not done, before a backend reads anything.
func checkReadVersion(ctx context.Context, key string, limit int64) error {
	if err := ValidKey(key); err != nil {
		return err
	}
	if limit < 0 || limit > MaxReplaceSize {
		return fmt.Errorf("read %q: limit %d is outside 0 to %d", key, limit, MaxReplaceSize)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("read %q: %w", key, err)
	}
	return nil
}

// checkReplaceSize checks the size of the data given to Replace.
func checkReplaceSize(key string, data []byte) error {
	if len(data) > MaxReplaceSize {
		return fmt.Errorf("replace %q: %w: %d bytes, the limit is %d", key, ErrTooLarge, len(data), MaxReplaceSize)
	}
	return nil
}

// tooLarge is ReadVersion's error for an object of size bytes over limit.
func tooLarge(key string, size, limit int64) error {
	return fmt.Errorf("read %q: %w: %d bytes, the limit is %d", key, ErrTooLarge, size, limit)
}

// mismatch is Replace's error when the version stored under key, stored
// ("" if none), is not ifVersion.
func mismatch(key, stored, ifVersion string) error {
	switch {
	case ifVersion == "":
		return fmt.Errorf("replace %q: %w: an object is stored (version %q), and none was expected", key, ErrVersionMismatch, stored)
	case stored == "":
		return fmt.Errorf("replace %q: %w: no object is stored, version %q was expected", key, ErrVersionMismatch, ifVersion)
	}
	return fmt.Errorf("replace %q: %w: version %q is stored, %q was expected", key, ErrVersionMismatch, stored, ifVersion)
}

// exactReader passes on exactly size bytes of r. Its consumer must call
// finish before committing anything, to make sure r ends there: consumers
// that know the size (S3 uploads) stop reading at it. Reads also fail once
// ctx is done, because readers that block do not know about ctx.
type exactReader struct {
	ctx       context.Context
	r         io.Reader
	key       string
	size      int64
	remaining int64
	ended     bool  // r was seen to end at size
	err       error // sticky
}

func newExactReader(ctx context.Context, key string, r io.Reader, size int64) *exactReader {
	return &exactReader{ctx: ctx, r: r, key: key, size: size, remaining: size}
}

func (e *exactReader) Read(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	if err := e.ctx.Err(); err != nil {
		e.err = fmt.Errorf("create %q: %w", e.key, err)
		return 0, e.err
	}
	if e.remaining == 0 {
		if err := e.finish(); err != nil {
			return 0, err
		}
		return 0, io.EOF
	}
	if int64(len(p)) > e.remaining {
		p = p[:e.remaining]
	}
	n, err := e.r.Read(p)
	e.remaining -= int64(n)
	switch {
	case err == io.EOF && e.remaining > 0:
		e.err = fmt.Errorf("create %q: %w: input ended after %d of %d bytes", e.key, ErrSizeMismatch, e.size-e.remaining, e.size)
		return 0, e.err
	case err != nil && err != io.EOF:
		e.err = fmt.Errorf("create %q: reading input: %w", e.key, err)
		return 0, e.err
	}
	return n, nil
}

// finish makes sure that all size bytes were read and that r ends there.
func (e *exactReader) finish() error {
	if e.err != nil {
		return e.err
	}
	if e.remaining > 0 {
		return fmt.Errorf("create %q: internal error: %d bytes left unread", e.key, e.remaining)
	}
	if e.ended {
		return nil
	}
	return e.checkEnd()
}

// checkEnd reads one byte past the declared size, which must be io.EOF.
func (e *exactReader) checkEnd() error {
	var b [1]byte
	for {
		n, err := e.r.Read(b[:])
		if n > 0 {
			e.err = fmt.Errorf("create %q: %w: input is longer than %d bytes", e.key, ErrSizeMismatch, e.size)
			return e.err
		}
		if err == io.EOF {
			e.ended = true
			return nil
		}
		if err != nil {
			e.err = fmt.Errorf("create %q: reading input: %w", e.key, err)
			return e.err
		}
		if err := e.ctx.Err(); err != nil {
			e.err = fmt.Errorf("create %q: %w", e.key, err)
			return e.err
		}
	}
}

// readFull fills p from the exactReader. Unlike io.ReadFull, it returns
// the reader's own error, which says what was wrong with the input.
func (e *exactReader) readFull(p []byte) error {
	for n := 0; n < len(p); {
		m, err := e.Read(p[n:])
		n += m
		if err == io.EOF && n < len(p) {
			return fmt.Errorf("create %q: internal error: read past the declared size", e.key)
		}
		if err != nil && err != io.EOF {
			return err
		}
	}
	return nil
}
