package audit

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"

	"evx/storage"
)

// TestAppendAll checks that the entries of an AppendAll are stored one
// after the other in one batch, while other appends come in at the same
// time and batches are smaller than the group.
func TestAppendAll(t *testing.T) {
	backends(t, func(t *testing.T, newStore func(testing.TB) storage.Backend) {
		k := newKey(t, testOrigin)
		st := newStore(t)
		cfg := config(k)
		cfg.MaxBatch = 4
		l := openLog(t, st, cfg)
		run(t, l)

		type group struct {
			entries [][]byte
			first   int64
		}
		var groups []*group
		for g := range 12 {
			n := g%maxAppendAll + 1 // 1 to 12 entries, most over MaxBatch
			var es [][]byte
			for i := range n {
				es = append(es, fmt.Appendf(nil, `{"event":"group","g":%d,"i":%d}`, g, i))
			}
			groups = append(groups, &group{entries: es})
		}
		singles := entries(0, 100)
		var wg sync.WaitGroup
		errs := make(chan error, len(groups)+1)
		for _, g := range groups {
			wg.Go(func() {
				first, err := l.AppendAll(t.Context(), g.entries)
				if err != nil {
					errs <- err
				}
				g.first = first
			})
		}
		var idx []int64
		wg.Go(func() {
			var err error
			if idx, err = appendConcurrently(t.Context(), l, singles, 8); err != nil {
				errs <- err
			}
		})
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		sync1(t, l)

		all := singles
		allIdx := idx
		for _, g := range groups {
			for i, e := range g.entries {
				all = append(all, e)
				allIdx = append(allIdx, g.first+int64(i))
			}
		}
		checkEntries(t, l, all, allIdx)

		// No batch starts inside a group: each group is one write.
		infos, err := st.List(t.Context(), batchPrefix)
		if err != nil {
			t.Fatal(err)
		}
		starts := map[int64]bool{}
		for _, info := range infos {
			n, err := strconv.ParseInt(strings.TrimPrefix(info.Key, batchPrefix), 10, 64)
			if err != nil {
				t.Fatalf("batch key %q: %v", info.Key, err)
			}
			starts[n] = true
		}
		for _, g := range groups {
			for i := int64(1); i < int64(len(g.entries)); i++ {
				if starts[g.first+i] {
					t.Errorf("a batch starts at %d, inside the group of %d entries at %d", g.first+i, len(g.entries), g.first)
				}
			}
		}
	})
}

func TestAppendAllRefuses(t *testing.T) {
	k := newKey(t, testOrigin)
	l := openLog(t, newDisk(t), config(k))
	run(t, l)
	for _, tc := range []struct {
		entries [][]byte
		want    string
	}{
		{nil, "0 entries appended at once: want 1 to 16"},
		{entries(0, maxAppendAll+1), "17 entries appended at once: want 1 to 16"},
		{[][]byte{entry(1), nil}, "entry of 0 bytes"},
		{[][]byte{entry(1), make([]byte, MaxEntrySize+1)}, "entry of 65536 bytes"},
	} {
		_, err := l.AppendAll(t.Context(), tc.entries)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("AppendAll of %d entries: %v, want %q", len(tc.entries), err, tc.want)
		}
	}
	// Nothing of a refused group was stored.
	if _, _, err := l.Append(t.Context(), entry(7)); err != nil {
		t.Fatal(err)
	}
	sync1(t, l)
	if got := readAll(t, l); len(got) != 1 || !bytes.Equal(got[0], entry(7)) {
		t.Errorf("log holds %q, want only %q", got, entry(7))
	}
}
