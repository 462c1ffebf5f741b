package gateway

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"evx/client"
	"evx/crypto"
	"evx/internal/devenv"
	"evx/storage"
	"evx/storage/storagetest"

	"go.uber.org/zap"
)

// benchWorld is DE and FR gateways running in this process on loopback,
// and the API client of DE's forensic unit.
type benchWorld struct {
	client *client.Client
	key    *crypto.UnitKey
}

// startBenchWorld runs DE and FR with storage from newStore until b ends.
func startBenchWorld(b *testing.B, newStore func(b *testing.B, country string) storage.Backend) *benchWorld {
	b.Helper()
	w, err := devenv.New("DE", "FR")
	if err != nil {
		b.Fatal(err)
	}
	peerAddrs := map[string]string{}
	for _, id := range []string{"DE", "FR"} {
		if peerAddrs[id], err = freeAddr("udp"); err != nil {
			b.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var done []chan struct{}
	b.Cleanup(func() {
		cancel()
		for _, d := range done {
			<-d
		}
	})
	var de *Gateway
	for _, id := range []string{"DE", "FR"} {
		g, err := New(devOptions(w, id, peerAddrs, "127.0.0.1:0", newStore(b, id), zap.NewNop()))
		if err != nil {
			b.Fatal(err)
		}
		d := make(chan struct{})
		done = append(done, d)
		go func() { defer close(d); g.Run(ctx) }()
		if id == "DE" {
			de = g
		}
	}
	c := w.Country("DE")
	u := c.User("forensics")
	return &benchWorld{
		client: client.New("https://"+de.APIAddr(), u.Cert, &tls.Config{RootCAs: c.CAPool()}),
		key:    u.Key,
	}
}

func benchDiskStore(b *testing.B, _ string) storage.Backend {
	st, err := storage.NewDisk(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	return st
}

// benchS3Store returns an S3 backend on a fresh bucket of the server that
// scripts/minio.sh start describes, emptied and removed when b ends; the
// benchmark is skipped without one.
func benchS3Store(b *testing.B, _ string) storage.Backend {
	cfg := storagetest.S3Env(b)
	cfg.Bucket = storagetest.NewBucket(b, cfg, "evx-bench-")
	st, err := storage.NewS3(cfg)
	if err != nil {
		b.Fatal(err)
	}
	return st
}

// benchFiles writes size random bytes to a file and returns it as the
// files to push.
func benchFiles(b *testing.B, size int64) []crypto.SourceFile {
	b.Helper()
	dir := b.TempDir()
	f, err := os.Create(filepath.Join(dir, "image.raw"))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.CopyN(f, rand.Reader, size); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	files, err := crypto.CollectFiles([]string{f.Name()})
	if err != nil {
		b.Fatal(err)
	}
	return files
}

// push pushes files from DE's forensic unit to FR's prosecutor and waits
// until FR has receipted the bundle, that is, until it is in FR's inbox.
func (bw *benchWorld) push(b *testing.B, files []crypto.SourceFile, tmp string) {
	opts := crypto.SealOptions{Purpose: "mutual-legal-assistance", Handling: "H2", TLP: "TLP:RED",
		LegalBasis: "EIO 2026/17", Retain: 24 * time.Hour}
	res, err := client.Push(context.Background(), bw.client, client.PushRequest{Key: bw.key, To: []string{"FR/prosecutor"},
		Files: files, Seal: opts, TempDir: tmp, Wait: 10 * time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	if res.Status.State != "delivered" {
		b.Fatalf("bundle %s is %s after Push, want delivered", res.Envelope.BundleID, res.Status.State)
	}
}

var benchBackends = []struct {
	name     string
	newStore func(*testing.B, string) storage.Backend
}{
	{"disk", benchDiskStore},
	{"S3", benchS3Store},
}

// BenchmarkPushLatency is the latency of a small push, from Push (seal,
// upload to DE) until the bundle is in FR's inbox, with warm connections
// and caches: p50 and p90 over b.N pushes of 64 KiB.
func BenchmarkPushLatency(b *testing.B) {
	for _, be := range benchBackends {
		b.Run(be.name, func(b *testing.B) {
			bw := startBenchWorld(b, be.newStore)
			files := benchFiles(b, 64<<10)
			tmp := b.TempDir()
			// Warm up: connections between client, gateways, storage
			// and peer, and FR's copy of DE's directory.
			for range 3 {
				bw.push(b, files, tmp)
			}
			took := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for range b.N {
				start := time.Now()
				bw.push(b, files, tmp)
				took = append(took, time.Since(start))
			}
			b.StopTimer()
			slices.Sort(took)
			q := func(p float64) float64 {
				return float64(took[int(p*float64(len(took)-1)+0.5)]) / float64(time.Millisecond)
			}
			b.ReportMetric(q(0.5), "p50-ms")
			b.ReportMetric(q(0.9), "p90-ms")
		})
	}
}

// BenchmarkPush is the throughput of one large push through two gateways,
// EVX_BENCH_SIZE_MIB MiB (default 64): for profiling, since cmd/evx's
// processes are what scripts/bench.sh measures.
func BenchmarkPush(b *testing.B) {
	mib := int64(64)
	if s := os.Getenv("EVX_BENCH_SIZE_MIB"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n <= 0 {
			b.Fatalf("EVX_BENCH_SIZE_MIB=%q: want a positive number of MiB", s)
		}
		mib = n
	}
	for _, be := range benchBackends {
		b.Run(fmt.Sprintf("%s/%dMiB", be.name, mib), func(b *testing.B) {
			bw := startBenchWorld(b, be.newStore)
			files := benchFiles(b, mib<<20)
			tmp := b.TempDir()
			b.SetBytes(mib << 20)
			b.ResetTimer()
			for range b.N {
				bw.push(b, files, tmp)
			}
		})
	}
}
