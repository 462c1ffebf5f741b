package audit

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"

	"evx/storage"

	"golang.org/x/mod/sumdb/tlog"
)

// benchEntry is an entry of a typical size (an event of a bundle with its
// legal metadata is a few hundred bytes).
var benchEntry = bytes.Repeat([]byte("x"), 400)

// BenchmarkAppend appends from many goroutines at once, and waits for the
// last entries to be in a checkpoint, so that integration keeps up:
// entries/s is the sustained rate. EVX_BENCH_APPENDERS sets the number of
// appenders (default 64).
//
// Its baseline, BenchmarkAppend/*/Create, is what the same appenders get
// from the backend without the log: each stores its entry as an object of
// its own (a Create of a new key), unordered and in no tree.
func BenchmarkAppend(b *testing.B) {
	b.Run("Disk", func(b *testing.B) { benchAppend(b, newDisk(b)) })
	b.Run("Disk/Create", func(b *testing.B) { benchCreate(b, newDisk(b)) })
	b.Run("S3", func(b *testing.B) { benchAppend(b, newS3(b)) })
	b.Run("S3/Create", func(b *testing.B) { benchCreate(b, newS3(b)) })
}

func benchAppenders(b *testing.B) int {
	appenders := 64
	if s := os.Getenv("EVX_BENCH_APPENDERS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			b.Fatalf("EVX_BENCH_APPENDERS=%q", s)
		}
		appenders = n
	}
	return appenders
}

func benchCreate(b *testing.B, st storage.Backend) {
	ctx := b.Context()
	var next atomic.Int64
	b.SetParallelism((benchAppenders(b) + 1) / 2)
	b.SetBytes(int64(len(benchEntry)))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			k := fmt.Sprintf("bench/%020d", next.Add(1))
			if err := st.Create(ctx, k, bytes.NewReader(benchEntry), int64(len(benchEntry))); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "entries/s")
}

func benchAppend(b *testing.B, st storage.Backend) {
	appenders := benchAppenders(b)
	k := newKey(b, testOrigin)
	l := openLog(b, st, config(k))
	run(b, l)
	ctx := b.Context()
	b.SetParallelism((appenders + 1) / 2) // of GOMAXPROCS, 2 here
	b.SetBytes(int64(len(benchEntry)))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, _, err := l.Append(ctx, benchEntry); err != nil {
				b.Error(err)
				return
			}
		}
	})
	if err := l.Sync(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "entries/s")
}

// buildBig builds a log of n entries in a new directory quickly: it
// stores batches of 4096 entries itself rather than through Append.
func buildBig(b *testing.B, n int) (*Log, testKey) {
	k := newKey(b, testOrigin)
	st := newDisk(b)
	l := openLog(b, st, config(k))
	batch := make([][]byte, 0, maxMaxBatch)
	for i := 0; i < n; {
		batch = batch[:0]
		for ; len(batch) < maxMaxBatch && i < n; i++ {
			batch = append(batch, fmt.Appendf(nil, `{"event":"bench","n":%d,"pad":"%0300d"}`, i, i))
		}
		if _, err := l.writeBatch(batch); err != nil {
			b.Fatal(err)
		}
	}
	if err := l.integrateAll(b.Context()); err != nil {
		b.Fatal(err)
	}
	return l, k
}

// BenchmarkLog1M measures, on a log of 1,000,000 entries on Disk:
// generating an inclusion proof of a random entry (InclusionProof, through
// the tile cache, as a gateway serves them), checking one
// (CheckInclusionProof: the Merkle path only; VerifyProof: with the
// checkpoint's signature), and verifying an export of the whole log
// (VerifyExport). Set EVX_BENCH_LOG_SIZE
// for another size.
func BenchmarkLog1M(b *testing.B) {
	size := 1_000_000
	if s := os.Getenv("EVX_BENCH_LOG_SIZE"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			b.Fatalf("EVX_BENCH_LOG_SIZE=%q", s)
		}
		size = n
	}
	l, k := buildBig(b, size)
	ctx := b.Context()
	_, c, _ := l.Checkpoint(ctx)
	if c.N != int64(size) {
		b.Fatalf("log of %d entries", c.N)
	}

	b.Run("InclusionProof", func(b *testing.B) {
		for b.Loop() {
			if _, err := l.InclusionProof(ctx, rand.Int64N(c.N), c.N); err != nil {
				b.Fatal(err)
			}
		}
	})

	// Proofs and entries of random indexes, made beforehand.
	type proved struct {
		i     int64
		entry []byte
		leaf  tlog.Hash
		proof tlog.RecordProof
	}
	var ps []proved
	for range 64 {
		i := rand.Int64N(c.N)
		p, err := l.InclusionProof(ctx, i, c.N)
		if err != nil {
			b.Fatal(err)
		}
		es, err := l.Entries(ctx, i, i+1)
		if err != nil {
			b.Fatal(err)
		}
		ps = append(ps, proved{i, es[0], tlog.RecordHash(es[0]), p})
	}
	b.Run("CheckInclusionProof", func(b *testing.B) {
		n := 0
		for b.Loop() {
			p := ps[n%len(ps)]
			n++
			if err := tlog.CheckRecord(p.proof, c.N, c.Hash, p.i, p.leaf); err != nil {
				b.Fatal(err)
			}
		}
	})

	// The same, with the checkpoint's signature: a tlog-proof as an
	// auditor or a peer checks it.
	signed, _, _ := l.Checkpoint(ctx)
	opts := VerifyOptions{Log: k.verifier}
	b.Run("VerifyProof", func(b *testing.B) {
		n := 0
		for b.Loop() {
			p := ps[n%len(ps)]
			n++
			proof := Proof{Index: p.i, Hashes: p.proof, Checkpoint: signed}
			if _, err := VerifyProof(proof, p.entry, opts); err != nil {
				b.Fatal(err)
			}
		}
	})

	dir := filepath.Join(b.TempDir(), "export")
	if _, err := Export(ctx, l, dir, ExportOptions{LogKey: k.vkey}); err != nil {
		b.Fatal(err)
	}
	b.Run("VerifyExport", func(b *testing.B) {
		for b.Loop() {
			r, err := Verify(ctx, Dir(dir), VerifyOptions{Log: k.verifier})
			if err != nil || r.N != c.N {
				b.Fatalf("Verify: %v, %v", r, err)
			}
		}
	})
}
