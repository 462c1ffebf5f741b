package audit

import (
	"context"
	"io"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"evx/storage"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// TestTwoWriters runs two logs on one store, as two gateway processes
// pointed at one bucket or directory, appending at once: every entry
// either acknowledged ends up in the log exactly once, at the index it was
// given, and the log verifies.
func TestTwoWriters(t *testing.T) {
	backends(t, func(t *testing.T, newStore func(testing.TB) storage.Backend) {
		k := newKey(t, testOrigin)
		st := newStore(t)
		// Both open the new log at once: one creates it.
		var a, b *Log
		var wg sync.WaitGroup
		var errA, errB error
		wg.Go(func() { a, errA = Open(t.Context(), st, config(k)) })
		wg.Go(func() { b, errB = Open(t.Context(), st, config(k)) })
		wg.Wait()
		if errA != nil || errB != nil {
			t.Fatal(errA, errB)
		}
		run(t, a)
		run(t, b)

		es := entries(0, 1200)
		var esA, esB [][]byte
		for i, e := range es {
			if i%2 == 0 {
				esA = append(esA, e)
			} else {
				esB = append(esB, e)
			}
		}
		var idxA, idxB []int64
		wg.Go(func() { idxA, errA = appendConcurrently(t.Context(), a, esA, 8) })
		wg.Go(func() { idxB, errB = appendConcurrently(t.Context(), b, esB, 8) })
		wg.Wait()
		if errA != nil || errB != nil {
			t.Fatal(errA, errB)
		}
		sync1(t, a)
		sync1(t, b)

		// On Disk the two race for indexes, and both win some. MinIO holds
		// a request for a key while another one for that key runs, so there
		// the writer that is ahead keeps winning and the other one follows
		// it, one batch behind, until it stops: no race to check.
		t.Logf("claims lost: %d and %d; entries of B among A's: %d", a.seq.conflicts, b.seq.conflicts, interleaved(idxA, idxB))
		if _, ok := st.(*storage.Disk); ok && (a.seq.conflicts+b.seq.conflicts == 0 || interleaved(idxA, idxB) == 0) {
			t.Error("the two writers did not race for indexes")
		}
		c := openLog(t, st, config(k))
		all := append(append([][]byte(nil), esA...), esB...)
		checkEntries(t, c, all, append(append([]int64(nil), idxA...), idxB...))
		verifyLog(t, c, VerifyOptions{Log: k.verifier})
	})
}

// interleaved counts the batches of b that lie between batches of a.
func interleaved(a, b []int64) int {
	minA, maxA := a[0], a[0]
	for _, i := range a {
		minA, maxA = min(minA, i), max(maxA, i)
	}
	n := 0
	for _, i := range b {
		if minA < i && i < maxA {
			n++
		}
	}
	return n
}

// gate holds the Creates of batches until released.
type gate struct {
	storage.Backend
	entered chan string
	release chan struct{}
}

func (g *gate) Create(ctx context.Context, key string, r io.Reader, size int64) error {
	if strings.HasPrefix(key, batchPrefix) {
		g.entered <- key
		<-g.release
	}
	return g.Backend.Create(ctx, key, r, size)
}

// TestAbandonedBatch checks that appenders who give up while their batch
// waits neither stall the log nor get their entries written.
func TestAbandonedBatch(t *testing.T) {
	k := newKey(t, testOrigin)
	g := &gate{Backend: newDisk(t), entered: make(chan string), release: make(chan struct{})}
	l := openLog(t, g, config(k))

	// A's batch is being written...
	doneA := make(chan error, 1)
	go func() {
		_, _, err := l.Append(t.Context(), entry(0))
		doneA <- err
	}()
	if key := <-g.entered; key != batchKey(0) {
		t.Fatalf("first batch at %s", key)
	}
	// ... while B's waits, until B gives up.
	ctx, cancel := context.WithCancel(t.Context())
	doneB := make(chan error, 1)
	go func() {
		_, _, err := l.Append(ctx, entry(1))
		doneB <- err
	}()
	for waiting(l) != 1 {
		runtime.Gosched()
	}
	cancel()
	if err := <-doneB; err == nil {
		t.Fatal("B's Append succeeded")
	}
	close(g.release)
	if err := <-doneA; err != nil {
		t.Fatal(err)
	}
	go func() {
		for range g.entered {
		}
	}()
	defer close(g.entered)
	// C's entry follows A's: B's was dropped.
	i, _, err := l.Append(t.Context(), entry(2))
	if err != nil || i != 1 {
		t.Fatalf("C's Append: index %d, %v; want 1", i, err)
	}
	if err := l.integrateAll(t.Context()); err != nil {
		t.Fatal(err)
	}
	checkEntries(t, l, [][]byte{entry(0), entry(2)}, []int64{0, 1})
}

// waiting returns how many appenders wait on the open batch.
func waiting(l *Log) int {
	l.seq.mu.Lock()
	defer l.seq.mu.Unlock()
	if l.seq.open == nil {
		return 0
	}
	return l.seq.open.waiters
}

// TestForeignBatch checks that Run integrates a batch that another
// process stored and did not integrate, as after it crashed.
func TestForeignBatch(t *testing.T) {
	k := newKey(t, testOrigin)
	st := newDisk(t)
	a := openLog(t, st, config(k)) // never runs its integrator
	b := openLog(t, st, config(k))
	run(t, b)
	i, _, err := a.Append(t.Context(), entry(0))
	if err != nil {
		t.Fatal(err)
	}
	waitSize(t, b, i+1)
	checkEntries(t, b, [][]byte{entry(0)}, []int64{i})
	if err := b.Run(t.Context()); err == nil {
		t.Error("a second Run of one log started")
	}
}

// waitSize waits until l knows of a checkpoint of at least n entries.
func waitSize(t *testing.T, l *Log, n int64) {
	t.Helper()
	for {
		l.mu.Lock()
		size, changed := l.cur.N, l.changed
		l.mu.Unlock()
		if size >= n {
			return
		}
		select {
		case <-changed:
		case <-t.Context().Done():
			t.Fatalf("no checkpoint of size %d", n)
		}
	}
}

// TestLateIntegration checks that a batch integrated more than a second
// after it was stored is reported, by the log's clock.
func TestLateIntegration(t *testing.T) {
	for _, late := range []bool{false, true} {
		k := newKey(t, testOrigin)
		core, logs := observer.New(zap.WarnLevel)
		now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
		cfg := config(k)
		cfg.Logger = zap.New(core)
		cfg.Now = func() time.Time { return now }
		l := openLog(t, newDisk(t), cfg)
		if _, _, err := l.Append(t.Context(), entry(0)); err != nil {
			t.Fatal(err)
		}
		if late {
			now = now.Add(maxIntegrationDelay + time.Millisecond)
		} else {
			now = now.Add(maxIntegrationDelay)
		}
		if err := l.integrateAll(t.Context()); err != nil {
			t.Fatal(err)
		}
		if got := logs.FilterMessageSnippet("later than promised").Len(); got != map[bool]int{false: 0, true: 1}[late] {
			t.Errorf("late=%v: %d warnings of late integration", late, got)
		}
	}
}
