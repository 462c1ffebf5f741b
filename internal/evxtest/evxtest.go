// Package evxtest holds the fixtures that tests and benchmarks of several
// evx packages share: evidence files, sealed bundles taken apart as the
// local API and the peer protocol carry them, the size a benchmark moves,
// and the tables of the docs that tests keep equal to the code.
//
// It imports crypto only, so that the tests of every package above crypto
// may use it; crypto's own tests cannot (that would be an import cycle).
package evxtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"evx/crypto"
)

// BenchSize returns the bytes a benchmark moves per operation:
// EVX_BENCH_SIZE_MIB MiB if that variable is set, else defaultMiB MiB.
// Each benchmark that reads it gives its own default, large enough for its
// figure to mean throughput; scripts and people set the variable to
// measure other sizes. A value that is not a positive whole number fails
// the benchmark.
func BenchSize(tb testing.TB, defaultMiB int) int64 {
	tb.Helper()
	mib := int64(defaultMiB)
	if s := os.Getenv("EVX_BENCH_SIZE_MIB"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n <= 0 || n > 1<<30 {
			tb.Fatalf("EVX_BENCH_SIZE_MIB=%q: want a positive number of MiB", s)
		}
		mib = n
	}
	return mib << 20
}

// Evidence writes a file of size random bytes, image.raw, into a new
// directory of tb and returns it ready to seal. The file's OSPath is
// there to compare what a test gets back with what it sealed.
func Evidence(tb testing.TB, size int64) []crypto.SourceFile {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "image.raw")
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	_, err = io.CopyN(f, rand.Reader, size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		tb.Fatal(err)
	}
	files, err := crypto.CollectFiles([]string{path})
	if err != nil {
		tb.Fatal(err)
	}
	return files
}

// SealOptions are the envelope fields of every bundle sealed in tests:
// add the sender and the recipients.
func SealOptions() crypto.SealOptions {
	return crypto.SealOptions{Purpose: "mutual-legal-assistance", Handling: "H2", TLP: "TLP:RED",
		LegalBasis: "EIO 2026/17", Retain: 24 * time.Hour}
}

// Bundle is a bundle sealed in a test, taken apart as the local API and
// the peer protocol carry it.
type Bundle struct {
	Env     *crypto.Envelope
	EnvJSON []byte // the signed envelope, as sealed
	Sig     []byte
	Payload []byte
}

// Seal seals size bytes of evidence (see Evidence) from sender to
// recipients with SealOptions, in memory.
func Seal(tb testing.TB, sender *crypto.UnitKey, recipients []crypto.PublicKey, size int) *Bundle {
	tb.Helper()
	opts := SealOptions()
	opts.Sender, opts.Recipients = sender, recipients
	var buf bytes.Buffer
	env, err := crypto.Seal(context.Background(), &buf, Evidence(tb, int64(size)), opts)
	if err != nil {
		tb.Fatal(err)
	}
	b, err := crypto.ReadBundle(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		tb.Fatal(err)
	}
	payload, err := io.ReadAll(b.Payload())
	if err != nil {
		tb.Fatal(err)
	}
	return &Bundle{Env: env, EnvJSON: b.EnvelopeJSON, Sig: b.Signature, Payload: payload}
}

// DocTable finds in doc, at or after offset from, the markdown table whose
// first line begins with head: its text, from that line to the last line
// that begins with "|", and where that text starts and ends in doc. The
// tests that keep a document's table equal to a table in the code use it,
// and write doc[:start] + want + doc[end:] to update the document.
func DocTable(doc string, from int, head string) (table string, start, end int, ok bool) {
	i := strings.Index(doc[from:], "\n"+head)
	if i < 0 {
		return "", 0, 0, false
	}
	start = from + i + 1
	end = start
	for end < len(doc) && doc[end] == '|' {
		nl := strings.IndexByte(doc[end:], '\n')
		if nl < 0 {
			end = len(doc)
			break
		}
		end += nl + 1
	}
	return doc[start:end], start, end, true
}
