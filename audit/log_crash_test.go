package audit

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"

	"evx/storage"
	"evx/storage/storagetest"

	"filippo.io/torchwood"
	"golang.org/x/mod/sumdb/tlog"
)

// TestCrash fails every storage call of appending and integrating a
// batch, before and after it takes effect, and then either carries on
// with the same log or crashes it and opens the store anew. Either way the
// log verifies and holds every entry whose Append returned nil, at its
// index.
func TestCrash(t *testing.T) {
	const before, after = 200, 300 // the tree's size before and after the step
	type step struct {
		op  storagetest.Op
		key string
	}
	steps := []step{
		{storagetest.OpCreate, batchKey(before)},
		{storagetest.OpOpen, batchKey(before)},
		{storagetest.OpReadVersion, latestKey},
		{storagetest.OpCreate, historyKey(after)},
		{storagetest.OpReplace, latestKey},
	}
	for _, tile := range tlog.NewTiles(tileHeight, before, after) {
		steps = append(steps, step{storagetest.OpCreate, tilePrefix + torchwood.TilePath(tile)})
		if tile.L == 0 {
			tile.L = -1
			steps = append(steps, step{storagetest.OpCreate, tilePrefix + torchwood.TilePath(tile)})
		}
	}
	k := newKey(t, testOrigin)
	for _, s := range steps {
		for _, when := range []storagetest.When{storagetest.BeforePersist, storagetest.AfterPersist} {
			for _, crash := range []bool{false, true} {
				name := fmt.Sprintf("%s %s %s crash=%v", s.op, s.key, when, crash)
				t.Run(name, func(t *testing.T) {
					disk := newDisk(t)
					f := storagetest.NewFaulty(disk)
					l := openLog(t, f, config(k))
					es := entries(0, after)
					idx := appendAll(t, l, es[:before], 16)
					if err := l.integrateAll(t.Context()); err != nil {
						t.Fatal(err)
					}

					f.Inject(s.op, s.key, when)
					var mu sync.Mutex
					var acked [][]byte
					var ackedIdx []int64
					var wg sync.WaitGroup
					for w := range 8 {
						wg.Go(func() {
							for _, e := range es[before+w*(after-before)/8 : before+(w+1)*(after-before)/8] {
								if i, _, err := l.Append(t.Context(), e); err == nil {
									mu.Lock()
									acked = append(acked, e)
									ackedIdx = append(ackedIdx, i)
									mu.Unlock()
								}
							}
						})
					}
					wg.Wait()
					l.integrate(t.Context()) // may fail: that is the test
					if f.Pending() != 0 {
						t.Fatalf("the fault did not strike")
					}
					if crash {
						l = openLog(t, disk, config(k))
					}
					if err := l.integrateAll(t.Context()); err != nil {
						t.Fatal(err)
					}
					verifyLog(t, l, VerifyOptions{Log: k.verifier})
					got := readAll(t, l)
					for i, e := range append(es[:before:before], acked...) {
						n := append(idx, ackedIdx...)[i]
						if n >= int64(len(got)) || !bytes.Equal(got[n], e) {
							t.Fatalf("acknowledged entry %q is not at index %d", e, n)
						}
					}
					// Only entries whose Append failed are missing.
					if len(got) != before+len(acked) {
						t.Fatalf("log of %d entries, %d acknowledged", len(got), before+len(acked))
					}
				})
			}
		}
	}
}

// TestUnavailable checks that a log whose storage fails keeps failing
// Appends and integration rounds, and recovers when storage does.
func TestUnavailable(t *testing.T) {
	k := newKey(t, testOrigin)
	f := storagetest.NewFaulty(newDisk(t))
	l := openLog(t, f, config(k))
	f.InjectError(storagetest.OpCreate, "", storagetest.BeforePersist, storage.ErrUnavailable)
	f.InjectError(storagetest.OpOpen, "", storagetest.BeforePersist, storage.ErrUnavailable)
	for f.Pending() > 0 {
		if _, _, err := l.Append(t.Context(), entry(0)); err == nil {
			t.Fatal("Append succeeded on failing storage")
		}
	}
	f.InjectError(storagetest.OpReadVersion, "", storagetest.BeforePersist, storage.ErrUnavailable)
	if _, err := l.integrate(t.Context()); err == nil {
		t.Fatal("integration succeeded on failing storage")
	}
	es := entries(1, 10)
	idx := appendAll(t, l, es, 3)
	if err := l.integrateAll(t.Context()); err != nil {
		t.Fatal(err)
	}
	checkEntries(t, l, es, idx)
}

// TestIntegrateRefusesFork puts checkpoints of another history, signed
// with the log's key, where the latest one belongs: the integrator refuses
// to go on, whether the forged one is as large as its tree or smaller, and
// Open refuses a log whose checkpoint its tiles do not match.
func TestIntegrateRefusesFork(t *testing.T) {
	k := newKey(t, testOrigin)
	st := newDisk(t)
	l := openLog(t, st, config(k))
	appendAll(t, l, entries(0, 20), 4)
	if err := l.integrateAll(t.Context()); err != nil {
		t.Fatal(err)
	}
	forge := func(n int64) {
		signed, err := signCheckpoint(testOrigin, tlog.Tree{N: n, Hash: tlog.RecordHash([]byte("forged"))}, k.signer)
		if err != nil {
			t.Fatal(err)
		}
		_, v, err := st.ReadVersion(t.Context(), latestKey, maxCheckpointSize)
		if err == nil {
			_, err = st.Replace(t.Context(), latestKey, signed, v)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []int64{20, 10} {
		forge(n)
		if _, err := l.integrate(t.Context()); err == nil || !strings.Contains(err.Error(), "fork") {
			t.Errorf("integration over a forged checkpoint of size %d: %v", n, err)
		}
	}
	if _, err := Open(t.Context(), st, config(k)); err == nil {
		t.Error("Open of a log whose checkpoint does not match its tiles succeeded")
	}
}
