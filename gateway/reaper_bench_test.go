package gateway

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"evx/crypto"
	"evx/internal/evxtest"
	"evx/storage"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sync/errgroup"
)

// BenchmarkReap is one full run of the reaper (reap: list the index, then
// for each bundle record bundle-expired, destroy its key, record
// key-shredded, purge every version of its objects, record bundle-purged,
// remove its index entry) over EVX_BENCH_BUNDLES received bundles (1,000
// unless set) whose retention has ended, on a running gateway (FR) on disk
// and on MinIO. It reports bundles/s; the seconds 10,000 bundles would take
// at that rate; the CPU time per bundle of this process (the gateway, and
// on disk the storage too) and, when EVX_MINIO_PID names the MinIO server
// (scripts/minio.sh start prints it), of that server; and the calls per
// bundle to the gateway's storage (storage.Backend and storage.Locker
// methods, each one or more requests to the server), by method.
//
// The bundles are stored as the receiving gateway stores them, with its
// own functions: the outer layer (storeOuterLayer: the payload locked, its
// index entry, its wrapped key), the record locked (putJSONLocked) and
// one acknowledgement by the recipient, locked too, each with a copy of a
// real 64 KiB bundle's envelope under a new id. Their retain-until is a few
// seconds after each is stored, so that the storage really locks them; the
// reaper runs once the storage's clock has passed the last one, as an
// object written to it shows. Preparing is not timed.
func BenchmarkReap(b *testing.B) {
	n := benchBundles(b, 1000)
	for _, be := range benchBackends {
		b.Run(fmt.Sprintf("%s/%d", be.name, n), func(b *testing.B) {
			var counting *countingStore
			started := make(chan struct{})
			var once sync.Once
			tw := newTestWorld(b, func(tb testing.TB, country string) storage.Backend {
				st := be.newStore(tb, country)
				if country != "FR" {
					return st
				}
				counting = &countingStore{lockingStore: locking(tb, st)}
				return counting
			}, func(id string, o *Options) {
				// A gateway's log lines as it writes them (JSON, Info),
				// into nothing: the reaper writes two per bundle.
				o.Logger = zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()),
					zapcore.AddSync(io.Discard), zap.InfoLevel))
				// The benchmark runs the reaper itself: the gateway's
				// own runs come at start, then not for an hour.
				o.ReaperInterval = time.Hour
				o.onReaped = func(reapResult) { once.Do(func() { close(started) }) }
			})
			tw.Start(b, "FR")
			select {
			case <-started:
			case <-time.After(time.Minute):
				b.Fatal("the gateway's reaper did not run at start")
			}
			g := tw.gw("FR")
			ctx := b.Context()
			tmpl := evxtest.Seal(b, tw.Dev.Country("DE").User("forensics").Key,
				[]crypto.PublicKey{tw.recipientKey("FR", "prosecutor")}, 64<<10)
			var took, cpu, minioCPU time.Duration
			minio, minioOK := minioMeter()
			calls := map[string]int64{}
			b.ResetTimer()
			b.StopTimer()
			for range b.N {
				last := prepareExpired(b, g, tmpl, n)
				waitStorageClock(b, counting, last)
				counting.reset()
				m0, c0 := minio(), processCPU(b)
				b.StartTimer()
				start := time.Now()
				r := g.reap(ctx)
				took += time.Since(start)
				b.StopTimer()
				cpu += processCPU(b) - c0
				minioCPU += minio() - m0
				for m, c := range counting.snapshot() {
					calls[m] += c
				}
				if r.Err != nil || r.Done[dueInbox] != n || sum(r.Failed)+sum(r.Waiting)+sum(r.Held) > 0 {
					b.Fatalf("reaper run: done %v, failed %v, waiting %v, held %v, error %v; want %d done", r.Done, r.Failed, r.Waiting, r.Held, r.Err, n)
				}
				for _, prefix := range []string{inboxPrefix, duePrefix} {
					if left, err := counting.List(ctx, prefix); err != nil || len(left) > 0 {
						b.Fatalf("after the reaper, %d objects under %s (%v)", len(left), prefix, err)
					}
				}
			}
			rate := float64(n*b.N) / took.Seconds()
			b.ReportMetric(rate, "bundles/s")
			b.ReportMetric(10000/rate, "s/10k")
			perBundle := func(d time.Duration) float64 { return d.Seconds() * 1000 / float64(n*b.N) }
			b.ReportMetric(perBundle(cpu), "cpu-ms/bundle")
			if minioOK && be.name == "S3" {
				b.ReportMetric(perBundle(minioCPU), "minio-cpu-ms/bundle")
			}
			var methods []string
			for m := range calls {
				methods = append(methods, m)
			}
			slices.Sort(methods)
			var total int64
			for _, m := range methods {
				total += calls[m]
				b.ReportMetric(float64(calls[m])/float64(n*b.N), strings.ToLower(m)+"/bundle")
			}
			b.ReportMetric(float64(total)/float64(n*b.N), "calls/bundle")
		})
	}
}

// benchBundles returns EVX_BENCH_BUNDLES if set, else def.
func benchBundles(tb testing.TB, def int) int {
	tb.Helper()
	s := os.Getenv("EVX_BENCH_BUNDLES")
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 || n > 1_000_000 {
		tb.Fatalf("EVX_BENCH_BUNDLES=%q: want a number of bundles from 1 to 1,000,000", s)
	}
	return n
}

// prepareExpired stores n received bundles in g's storage as g stores
// them (see BenchmarkReap), each with a retain-until a few seconds after
// it is stored, and returns the latest retain-until.
func prepareExpired(tb testing.TB, g *Gateway, tmpl *evxtest.Bundle, n int) time.Time {
	tb.Helper()
	// Far enough ahead that the record and the acknowledgement, written
	// after the payload, are still locked (putJSONLocked stores an object
	// unlocked within lockMargin of its date).
	const ahead = lockMargin + 3*time.Second
	ctx := tb.Context()
	var mu sync.Mutex
	var last time.Time
	eg, ectx := errgroup.WithContext(ctx)
	eg.SetLimit(reaperWorkers)
	for range n {
		eg.Go(func() error {
			env := *tmpl.Env
			env.BundleID = crypto.NewBundleID()
			env.RetainUntil = ceilTime(g.now().Add(ahead))
			envJSON, err := env.MarshalCanonical()
			if err != nil {
				return err
			}
			id := env.BundleID
			outer, err := g.storeOuterLayer(ectx, id, bytes.NewReader(tmpl.Payload), int64(len(tmpl.Payload)), env.RetainUntil)
			if err != nil {
				return err
			}
			now := time.Now()
			rc, err := crypto.NewReceipt(&env, "DE", g.opts.ID, now, crypto.ReceiptLog{
				LeafHash: hex.EncodeToString(make([]byte, 32)), LeafIndex: 0, TreeSize: 1})
			if err != nil {
				return err
			}
			receipt, err := g.opts.SigningKey.SignReceipt(rc)
			if err != nil {
				return err
			}
			rec := inboxRecord{Envelope: envJSON, Signature: tmpl.Sig, From: "DE", ReceivedAt: now.UTC(), Receipt: receipt,
				SenderCheck: "benchmark", Outer: &outer}
			if err := g.putJSONLocked(ectx, key(inboxPrefix, id, recordFile), rec, env.RetainUntil); err != nil {
				return err
			}
			unit := "FR/prosecutor"
			if err := g.putJSONLocked(ectx, key(inboxPrefix, id, "ack-"+ackName(unit)+".json"),
				ackRecord{Unit: unit, At: now.UTC()}, env.RetainUntil); err != nil {
				return err
			}
			mu.Lock()
			if env.RetainUntil.After(last) {
				last = env.RetainUntil
			}
			mu.Unlock()
			return nil
		})
	}
	if err := eg.Wait(); err != nil {
		tb.Fatal(err)
	}
	return last
}

// waitStorageClock waits until st's clock has passed t: until an object
// written to st has a later modification time. The locks until t are
// then over, by the clock that enforces them.
func waitStorageClock(tb testing.TB, st lockingStore, t time.Time) {
	tb.Helper()
	ctx := tb.Context()
	const probe = "benchmark/clock"
	wait := time.Until(t)
	for {
		if wait > 0 {
			timer := time.NewTimer(wait)
			select {
			case <-timer.C:
			case <-ctx.Done():
				timer.Stop()
				tb.Fatal(ctx.Err())
			}
		}
		if err := st.Create(ctx, probe, bytes.NewReader(nil), 0); err != nil {
			tb.Fatal(err)
		}
		info, err := st.Stat(ctx, probe)
		if err != nil {
			tb.Fatal(err)
		}
		if err := st.Purge(ctx, probe); err != nil {
			tb.Fatal(err)
		}
		if info.Modified.After(t) {
			return
		}
		// Not yet (an S3 server keeps whole seconds): look again soon.
		wait = 100 * time.Millisecond
	}
}

// processCPU is the CPU time (user and system, all threads) this process
// has used: the gateway's, and on disk the storage's too.
func processCPU(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// minioMeter returns a function that reads the CPU time used so far by the
// MinIO server that scripts/minio.sh started (EVX_MINIO_PID), from Linux's
// /proc, and whether there is one to read.
func minioMeter() (func() time.Duration, bool) {
	pid := os.Getenv("EVX_MINIO_PID")
	read := func() (time.Duration, bool) {
		if pid == "" {
			return 0, false
		}
		data, err := os.ReadFile("/proc/" + pid + "/stat")
		if err != nil {
			return 0, false
		}
		// utime and stime are the 12th and 13th fields after the
		// command, which may hold spaces, in clock ticks: 100 a
		// second on Linux, whatever the kernel's HZ.
		i := bytes.LastIndexByte(data, ')')
		if i < 0 {
			return 0, false
		}
		f := strings.Fields(string(data[i+1:]))
		if len(f) < 13 {
			return 0, false
		}
		u, err1 := strconv.ParseInt(f[11], 10, 64)
		s, err2 := strconv.ParseInt(f[12], 10, 64)
		if err1 != nil || err2 != nil {
			return 0, false
		}
		return time.Duration(u+s) * 10 * time.Millisecond, true
	}
	_, ok := read()
	return func() time.Duration { d, _ := read(); return d }, ok
}

func sum(m map[string]int) int {
	s := 0
	for _, v := range m {
		s += v
	}
	return s
}

// countingStore counts the calls to a gateway's storage, by method.
type countingStore struct {
	lockingStore
	mu    sync.Mutex
	calls map[string]*atomic.Int64
}

func (c *countingStore) count(method string) {
	c.mu.Lock()
	if c.calls == nil {
		c.calls = map[string]*atomic.Int64{}
	}
	n := c.calls[method]
	if n == nil {
		n = new(atomic.Int64)
		c.calls[method] = n
	}
	c.mu.Unlock()
	n.Add(1)
}

func (c *countingStore) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = nil
}

func (c *countingStore) snapshot() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := map[string]int64{}
	for k, v := range c.calls {
		m[k] = v.Load()
	}
	return m
}

func (c *countingStore) Create(ctx context.Context, key string, r io.Reader, size int64) error {
	c.count("Create")
	return c.lockingStore.Create(ctx, key, r, size)
}

func (c *countingStore) Open(ctx context.Context, key string) (storage.Object, error) {
	c.count("Open")
	return c.lockingStore.Open(ctx, key)
}

func (c *countingStore) Stat(ctx context.Context, key string) (storage.Info, error) {
	c.count("Stat")
	return c.lockingStore.Stat(ctx, key)
}

func (c *countingStore) List(ctx context.Context, prefix string) ([]storage.Info, error) {
	c.count("List")
	return c.lockingStore.List(ctx, prefix)
}

func (c *countingStore) Delete(ctx context.Context, key string) error {
	c.count("Delete")
	return c.lockingStore.Delete(ctx, key)
}

func (c *countingStore) ReadVersion(ctx context.Context, key string, limit int64) ([]byte, string, error) {
	c.count("ReadVersion")
	return c.lockingStore.ReadVersion(ctx, key, limit)
}

func (c *countingStore) Replace(ctx context.Context, key string, data []byte, ifVersion string) (string, error) {
	c.count("Replace")
	return c.lockingStore.Replace(ctx, key, data, ifVersion)
}

func (c *countingStore) CreateLocked(ctx context.Context, key string, r io.Reader, size int64, until time.Time) error {
	c.count("CreateLocked")
	return c.lockingStore.CreateLocked(ctx, key, r, size, until)
}

func (c *countingStore) Purge(ctx context.Context, key string) error {
	c.count("Purge")
	return c.lockingStore.Purge(ctx, key)
}
