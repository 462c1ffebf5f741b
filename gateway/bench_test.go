package gateway

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"evx/client"
	"evx/crypto"
	"evx/internal/evxtest"
	"evx/storage"
)

// benchWorld is DE and FR gateways running in this process on loopback,
// and the API client of DE's forensic unit.
type benchWorld struct {
	client *client.Client
	key    *crypto.UnitKey
}

// startBenchWorld runs DE and FR with storage from newStore until b ends.
func startBenchWorld(b *testing.B, newStore func(testing.TB, string) storage.Backend) *benchWorld {
	b.Helper()
	tw := newTestWorld(b, newStore, nil)
	tw.Start(b, "DE")
	tw.Start(b, "FR")
	c, k := tw.Client("DE", "forensics")
	return &benchWorld{client: c, key: k}
}

// push pushes files from DE's forensic unit to FR's prosecutor and waits
// until FR has receipted the bundle, that is, until it is in FR's inbox.
func (bw *benchWorld) push(b *testing.B, files []crypto.SourceFile, tmp string) {
	res, err := client.Push(context.Background(), bw.client, client.PushRequest{Key: bw.key, To: []string{"FR/prosecutor"},
		Files: files, Seal: evxtest.SealOptions(), TempDir: tmp, Wait: 10 * time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	if res.Status.State != "delivered" {
		b.Fatalf("bundle %s is %s after Push, want delivered", res.Envelope.BundleID, res.Status.State)
	}
}

var benchBackends = []struct {
	name     string
	newStore func(testing.TB, string) storage.Backend
}{
	{"disk", diskStore},
	{"S3", s3Store},
}

// BenchmarkPushLatency is the latency of a small push, from Push (seal,
// upload to DE) until the bundle is in FR's inbox, with warm connections
// and caches: p50 and p90 over b.N pushes of 64 KiB.
func BenchmarkPushLatency(b *testing.B) {
	for _, be := range benchBackends {
		b.Run(be.name, func(b *testing.B) {
			bw := startBenchWorld(b, be.newStore)
			files := evxtest.Evidence(b, 64<<10)
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
// of evxtest.BenchSize (64 MiB unless set): for profiling, since cmd/evx's
// processes are what scripts/bench.sh measures.
func BenchmarkPush(b *testing.B) {
	size := evxtest.BenchSize(b, 64)
	for _, be := range benchBackends {
		b.Run(fmt.Sprintf("%s/%dMiB", be.name, size>>20), func(b *testing.B) {
			bw := startBenchWorld(b, be.newStore)
			files := evxtest.Evidence(b, size)
			tmp := b.TempDir()
			b.SetBytes(size)
			b.ResetTimer()
			for range b.N {
				bw.push(b, files, tmp)
			}
		})
	}
}
