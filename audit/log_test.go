package audit

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"

	"evx/storage"
	"evx/storage/storagetest"

	"filippo.io/torchwood"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

const testOrigin = "evx.transfer-log/DE"

// testKey is a checkpoint key pair.
type testKey struct {
	signer   note.Signer
	verifier note.Verifier
	vkey     string
}

func newKey(t testing.TB, name string) testKey {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		t.Fatal(err)
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	return testKey{s, v, vkey}
}

func newDisk(t testing.TB) *storage.Disk {
	t.Helper()
	d, err := storage.NewDisk(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// newS3 returns a backend on a new bucket of the test MinIO server.
func newS3(t testing.TB) storage.Backend {
	t.Helper()
	cfg := storagetest.S3Env(t)
	cfg.Bucket = storagetest.NewBucket(t, cfg, "audit-")
	s, err := storage.NewS3(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// backends runs f on Disk and on S3.
func backends(t *testing.T, f func(t *testing.T, newStore func(testing.TB) storage.Backend)) {
	t.Run("Disk", func(t *testing.T) { f(t, func(t testing.TB) storage.Backend { return newDisk(t) }) })
	t.Run("S3", func(t *testing.T) { f(t, newS3) })
}

func config(k testKey) Config {
	return Config{Origin: k.signer.Name(), Signer: k.signer, Verifier: k.verifier}
}

func openLog(t testing.TB, st storage.Backend, cfg Config) *Log {
	t.Helper()
	l, err := Open(t.Context(), st, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// run runs l's integrator until the test ends.
func run(t testing.TB, l *Log) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

func entry(i int) []byte { return fmt.Appendf(nil, `{"event":"test","n":%d}`, i) }

// appendAll appends entries from n goroutines at once and returns their
// indexes.
func appendAll(t testing.TB, l *Log, entries [][]byte, n int) []int64 {
	t.Helper()
	idx, err := appendConcurrently(t.Context(), l, entries, n)
	if err != nil {
		t.Fatal(err)
	}
	return idx
}

func appendConcurrently(ctx context.Context, l *Log, entries [][]byte, n int) ([]int64, error) {
	idx := make([]int64, len(entries))
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := range n {
		wg.Go(func() {
			for i := w; i < len(entries); i += n {
				j, h, err := l.Append(ctx, entries[i])
				if err != nil {
					errs <- err
					return
				}
				if h != tlog.RecordHash(entries[i]) {
					errs <- fmt.Errorf("entry %d: leaf hash %s, want %s", i, h, tlog.RecordHash(entries[i]))
					return
				}
				idx[i] = j
			}
		})
	}
	wg.Wait()
	close(errs)
	return idx, <-errs
}

// checkEntries checks that the log holds exactly entries, at idx.
func checkEntries(t testing.TB, l *Log, entries [][]byte, idx []int64) {
	t.Helper()
	_, c, _ := l.Checkpoint(t.Context())
	if c.N != int64(len(entries)) {
		t.Fatalf("log of size %d, want %d", c.N, len(entries))
	}
	got := readAll(t, l)
	seen := make(map[int64]bool)
	for i, e := range entries {
		if seen[idx[i]] {
			t.Fatalf("index %d returned twice", idx[i])
		}
		seen[idx[i]] = true
		if !bytes.Equal(got[idx[i]], e) {
			t.Fatalf("entry %d is %q, want %q", idx[i], got[idx[i]], e)
		}
	}
}

func readAll(t testing.TB, l *Log) [][]byte {
	t.Helper()
	_, c, _ := l.Checkpoint(t.Context())
	var out [][]byte
	for start := int64(0); start < c.N; start += maxEntriesRead {
		es, err := l.Entries(t.Context(), start, min(c.N, start+maxEntriesRead))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, es...)
	}
	return out
}

func sync1(t testing.TB, l *Log) {
	t.Helper()
	if err := l.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func entries(from, to int) [][]byte {
	var es [][]byte
	for i := from; i < to; i++ {
		es = append(es, entry(i))
	}
	return es
}

func TestAppend(t *testing.T) {
	backends(t, func(t *testing.T, newStore func(testing.TB) storage.Backend) {
		k := newKey(t, testOrigin)
		st := newStore(t)
		l := openLog(t, st, config(k))
		run(t, l)

		signed, c, err := l.Checkpoint(t.Context())
		if err != nil || c.N != 0 || c.Hash != emptyTreeHash {
			t.Fatalf("new log: checkpoint %+v, %v", c, err)
		}
		if _, err := openCheckpoint(signed, testOrigin, k.verifier); err != nil {
			t.Fatal(err)
		}

		es := entries(0, 700)
		idx := appendAll(t, l, es[:300], 16)
		sync1(t, l)
		idx = append(idx, appendAll(t, l, es[300:], 16)...)
		sync1(t, l)
		checkEntries(t, l, es, idx)

		// Every tile of the tree is stored, and the checkpoint's root is
		// the root of the entries.
		_, c, _ = l.Checkpoint(t.Context())
		var leaves []tlog.Hash
		for _, e := range readAll(t, l) {
			leaves = append(leaves, tlog.RecordHash(e))
		}
		if root := rootOf(leaves); root != c.Hash {
			t.Fatalf("checkpoint root %s, entries hash to %s", c.Hash, root)
		}
		for _, tile := range tlog.NewTiles(tileHeight, 0, c.N) {
			if _, err := l.ReadTile(t.Context(), torchwood.TilePath(tile)); err != nil {
				t.Fatal(err)
			}
		}

		// Proofs of inclusion and consistency check out.
		for _, n := range []int64{0, 1, 255, 256, 299, 699} {
			p, err := l.InclusionProof(t.Context(), n, c.N)
			if err != nil {
				t.Fatal(err)
			}
			if err := tlog.CheckRecord(p, c.N, c.Hash, n, leaves[n]); err != nil {
				t.Fatalf("proof of entry %d: %v", n, err)
			}
		}
		for _, old := range []int64{0, 1, 300, 700} {
			p, err := l.ConsistencyProof(t.Context(), old, c.N)
			if err != nil {
				t.Fatal(err)
			}
			if old == 0 {
				if len(p) != 0 {
					t.Fatalf("consistency from 0: %d hashes", len(p))
				}
				continue
			}
			if err := tlog.CheckTree(p, c.N, c.Hash, old, rootOf(leaves[:old])); err != nil {
				t.Fatalf("consistency from %d: %v", old, err)
			}
		}
		// Proofs at an earlier, published size.
		sizes, err := l.CheckpointSizes(t.Context())
		if err != nil || len(sizes) < 2 || sizes[0] != 0 {
			t.Fatalf("history %v, %v", sizes, err)
		}
		old := sizes[len(sizes)-1]
		p, err := l.InclusionProof(t.Context(), 0, old)
		if err != nil {
			t.Fatal(err)
		}
		if err := tlog.CheckRecord(p, old, rootOf(leaves[:old]), 0, leaves[0]); err != nil {
			t.Fatal(err)
		}
		if _, err := l.InclusionProof(t.Context(), 0, old+1); err == nil {
			t.Error("proof at a size that was never published")
		}

		// A reopened log continues where this one stopped.
		l2 := openLog(t, st, config(k))
		signed2, c2, _ := l2.Checkpoint(t.Context())
		if c2 != c || !bytes.Equal(signed2, signed) && c2.N == 0 {
			t.Fatalf("reopened log at %+v, want %+v", c2, c)
		}
		checkEntries(t, l2, es, idx)
	})
}

// rootOf computes the RFC 6962 root of leaves the slow, obvious way.
func rootOf(leaves []tlog.Hash) tlog.Hash {
	switch len(leaves) {
	case 0:
		return emptyTreeHash
	case 1:
		return leaves[0]
	}
	k := 1
	for k*2 < len(leaves) {
		k *= 2
	}
	return tlog.NodeHash(rootOf(leaves[:k]), rootOf(leaves[k:]))
}

func TestAppendRefuses(t *testing.T) {
	k := newKey(t, testOrigin)
	l := openLog(t, newDisk(t), config(k))
	for _, e := range [][]byte{nil, make([]byte, MaxEntrySize+1)} {
		if _, _, err := l.Append(t.Context(), e); err == nil {
			t.Errorf("Append of %d bytes succeeded", len(e))
		}
	}
}

func TestOpenRefuses(t *testing.T) {
	k := newKey(t, testOrigin)
	other := newKey(t, testOrigin)
	st := newDisk(t)
	openLog(t, st, config(k))
	for name, cfg := range map[string]Config{
		"other key":      config(other),
		"other origin":   {Origin: "evx.transfer-log/FR", Signer: k.signer, Verifier: k.verifier},
		"wrong verifier": {Origin: testOrigin, Signer: k.signer, Verifier: other.verifier},
		"no signer":      {Origin: testOrigin, Verifier: k.verifier},
		"huge batches":   {Origin: testOrigin, Signer: k.signer, Verifier: k.verifier, MaxBatch: maxMaxBatch + 1},
	} {
		if _, err := Open(t.Context(), st, cfg); err == nil {
			t.Errorf("%s: Open succeeded", name)
		}
	}
	// A log whose latest checkpoint is signed by another key is refused.
	if _, err := Open(t.Context(), st, config(other)); err == nil || !strings.Contains(err.Error(), "not signed") {
		t.Errorf("Open with another key: %v", err)
	}
}

// TestEdge checks the tiles and roots the edge computes, batch after
// batch, against tlog's own functions over all the hashes.
func TestEdge(t *testing.T) {
	var all []tlog.Hash // every stored hash, by stored hash index
	reader := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			out[i] = all[x]
		}
		return out, nil
	})
	e := &edge{}
	var es [][]byte
	for _, n := range []int{1, 1, 254, 1, 255, 513, 3, 65536 - 1029, 1, 300} {
		old := e.n
		batch := entries(len(es), len(es)+n)
		for i, b := range batch {
			hs, err := tlog.StoredHashes(old+int64(i), b, reader)
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, hs...)
		}
		es = append(es, batch...)
		out, err := e.extend(batch)
		if err != nil {
			t.Fatal(err)
		}
		got := map[tlog.Tile][]byte{}
		for _, td := range out {
			got[td.tile] = td.data
		}
		want := tlog.NewTiles(tileHeight, old, e.n)
		bundles := 0
		for _, tile := range want {
			data, err := tlog.ReadTileData(tile, reader)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got[tile], data) {
				t.Fatalf("size %d → %d: tile %s differs", old, e.n, tile.Path())
			}
			if tile.L != 0 {
				continue
			}
			// Each level 0 tile has its entry bundle.
			tile.L = -1
			b, err := parseBundle(got[tile], tile.W)
			if err != nil {
				t.Fatalf("size %d → %d: bundle %s: %v", old, e.n, torchwood.TilePath(tile), err)
			}
			for i, x := range b {
				if !bytes.Equal(x, es[tile.N*tileWidth+int64(i)]) {
					t.Fatalf("bundle %s: entry %d differs", torchwood.TilePath(tile), i)
				}
			}
			bundles++
		}
		if len(out) != len(want)+bundles {
			t.Fatalf("size %d → %d: %d tiles and bundles, want %d", old, e.n, len(out), len(want)+bundles)
		}
		root, err := tlog.TreeHash(e.n, reader)
		if err != nil {
			t.Fatal(err)
		}
		if root != e.root {
			t.Fatalf("size %d: root %s, want %s", e.n, e.root, root)
		}
	}
}

// integrateAll runs integration rounds until nothing is left to do.
func (l *Log) integrateAll(ctx context.Context) error {
	for range 1000 {
		more, err := l.integrate(ctx)
		if err != nil {
			return err
		}
		if !more {
			return nil
		}
	}
	return fmt.Errorf("integration does not end")
}

// TestMemoryBounded checks that the log keeps only the edge of its tree
// and a bounded cache in memory, not its hashes or entries: after 100,000
// entries (35 MB) it holds less than 4 MiB more than when it was empty
// (its tile cache is 2 MiB at most), where its hashes alone would take
// 6.4 MB.
func TestMemoryBounded(t *testing.T) {
	k := newKey(t, testOrigin)
	l := openLog(t, newDisk(t), config(k))
	retained := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before := retained()
	batch := make([][]byte, 0, maxMaxBatch)
	for i := 0; i < 100_000; {
		batch = batch[:0]
		for ; len(batch) < maxMaxBatch && i < 100_000; i++ {
			batch = append(batch, fmt.Appendf(nil, `{"n":%d,"pad":"%0300d"}`, i, i))
		}
		if _, err := l.writeBatch(batch); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.integrateAll(t.Context()); err != nil {
		t.Fatal(err)
	}
	after := retained()
	if _, c, _ := l.Checkpoint(t.Context()); c.N != 100_000 {
		t.Fatalf("log of %d entries", c.N)
	}
	t.Logf("heap: %d bytes before, %d after", before, after)
	if after > before+4<<20 {
		t.Errorf("the log holds %d bytes more after 100,000 entries", after-before)
	}
	runtime.KeepAlive(l)
}
