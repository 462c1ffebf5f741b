package gateway

import (
	"context"
	"os"
	"testing"
	"time"

	"evx/crypto"
)

func BenchmarkZZPhases(b *testing.B) {
	for _, be := range benchBackends {
		b.Run(be.name, func(b *testing.B) {
			bw := startBenchWorld(b, be.newStore)
			files := benchFiles(b, 64<<10)
			tmp := b.TempDir()
			for range 3 {
				bw.push(b, files, tmp)
			}
			var tl, ts, tu, td time.Duration
			ctx := context.Background()
			for range b.N {
				t0 := time.Now()
				e, err := bw.client.Lookup(ctx, "FR/prosecutor")
				if err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				opts := crypto.SealOptions{Purpose: "mutual-legal-assistance", Handling: "H2", TLP: "TLP:RED",
					LegalBasis: "EIO 2026/17", Retain: 24 * time.Hour, Sender: bw.key,
					Recipients: []crypto.PublicKey{{Unit: e.Unit, AgeRecipient: e.AgeRecipient}}}
				f, _ := os.CreateTemp(tmp, "x")
				env, err := crypto.Seal(ctx, f, files, opts)
				if err != nil {
					b.Fatal(err)
				}
				info, _ := f.Stat()
				bd, _ := crypto.ReadBundle(f, info.Size())
				t2 := time.Now()
				if _, err := bw.client.Upload(ctx, bd.EnvelopeJSON, bd.Signature, bd.Payload(), env.PayloadSize); err != nil {
					b.Fatal(err)
				}
				t3 := time.Now()
				for {
					st, err := bw.client.OutboxStatus(ctx, env.BundleID)
					if err != nil {
						b.Fatal(err)
					}
					if st.State == "delivered" {
						break
					}
					time.Sleep(time.Millisecond)
				}
				t4 := time.Now()
				f.Close()
				os.Remove(f.Name())
				tl += t1.Sub(t0); ts += t2.Sub(t1); tu += t3.Sub(t2); td += t4.Sub(t3)
			}
			n := time.Duration(b.N)
			b.Logf("lookup %v seal %v upload %v deliver %v", tl/n, ts/n, tu/n, td/n)
		})
	}
}
