package storage_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"testing"

	"filippo.io/age"
	"github.com/minio/minio-go/v7"

	"evx/internal/evxtest"
	"evx/storage"
	"evx/storage/storagetest"
)

// benchS3 returns the configuration of the server that scripts/minio.sh
// start describes and a fresh bucket on it, emptied and removed when b
// ends; the benchmark is skipped without a server.
func benchS3(b *testing.B) (storage.S3Config, *minio.Client) {
	b.Helper()
	cfg := storagetest.S3Env(b)
	cfg.Bucket = storagetest.NewBucket(b, cfg, "evx-bench-")
	return cfg, storagetest.AdminClient(b, cfg)
}

// benchFile returns the file named by EVX_BENCH_FILE, or else a temporary
// file of evxtest.BenchSize (256 MiB unless set) random bytes.
func benchFile(b *testing.B) (string, int64) {
	b.Helper()
	if p := os.Getenv("EVX_BENCH_FILE"); p != "" {
		info, err := os.Stat(p)
		if err != nil {
			b.Fatal(err)
		}
		return p, info.Size()
	}
	f := evxtest.Evidence(b, evxtest.BenchSize(b, 256))[0]
	return f.OSPath, f.Size
}

// BenchmarkBaselineAgePutObject is what a user could script instead of
// evx: encrypt a file with age to a post-quantum recipient (as evx seals)
// and pipe the ciphertext into one minio-go PutObject of unknown size, in
// one process. It gets evx's part size and, like evx's uploads, no payload
// signature (which over plain HTTP costs a SHA-256 pass on each side), so
// that it is not slowed by settings evx avoids. Throughput counts the
// file's bytes, as scripts/bench.sh does for evx push.
func BenchmarkBaselineAgePutObject(b *testing.B) {
	cfg, c := benchS3(b)
	path, size := benchFile(b)
	id, err := age.GenerateHybridIdentity()
	if err != nil {
		b.Fatal(err)
	}
	recipient := id.Recipient()
	ctx := context.Background()
	b.SetBytes(size)
	b.ResetTimer()
	for i := range b.N {
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		pr, pw := io.Pipe()
		go func() {
			w, err := age.Encrypt(pw, recipient)
			if err == nil {
				_, err = io.Copy(w, f)
			}
			if err == nil {
				err = w.Close()
			}
			pw.CloseWithError(err)
		}()
		_, err = c.PutObject(ctx, cfg.Bucket, fmt.Sprintf("baseline-%d.age", i), pr, -1,
			minio.PutObjectOptions{PartSize: storage.DefaultPartSize, DisableContentSha256: true})
		pr.Close()
		f.Close()
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkS3Create is evx's own upload path: S3.Create of a file with its
// exact size, multipart with the default part size and concurrency. The
// baseline is minio-go's PutObject of the same file and size.
func BenchmarkS3Create(b *testing.B) {
	cfg, c := benchS3(b)
	path, size := benchFile(b)
	st, err := storage.NewS3(cfg)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	// Keys are numbered across runs: -count runs sub-benchmarks again on
	// the same bucket.
	seq := 0
	run := func(b *testing.B, put func(i int, f *os.File) error) {
		b.SetBytes(size)
		for range b.N {
			f, err := os.Open(path)
			if err != nil {
				b.Fatal(err)
			}
			seq++
			err = put(seq, f)
			f.Close()
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("evx", func(b *testing.B) {
		run(b, func(i int, f *os.File) error {
			return st.Create(ctx, fmt.Sprintf("create-%d", i), f, size)
		})
	})
	b.Run("PutObject", func(b *testing.B) {
		run(b, func(i int, f *os.File) error {
			_, err := c.PutObject(ctx, cfg.Bucket, fmt.Sprintf("put-%d", i), f, size,
				minio.PutObjectOptions{PartSize: storage.DefaultPartSize, DisableContentSha256: true})
			return err
		})
	})
}

// BenchmarkS3Read reads one object through an S3 Object as the gateway
// does: sequentially with Read, and through an io.SectionReader, whose
// 32 KiB ReadAt calls are what io.Copy makes of delivery and download.
func BenchmarkS3Read(b *testing.B) {
	cfg, _ := benchS3(b)
	path, size := benchFile(b)
	st, err := storage.NewS3(cfg)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	err = st.Create(ctx, "object", f, size)
	f.Close()
	if err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		reader func(storage.Object) io.Reader
	}{
		{"Read", func(o storage.Object) io.Reader { return o }},
		{"SectionReader", func(o storage.Object) io.Reader { return io.NewSectionReader(o, 0, o.Size()) }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.SetBytes(size)
			for range b.N {
				obj, err := st.Open(ctx, "object")
				if err != nil {
					b.Fatal(err)
				}
				// 32 KiB reads, as io.Copy makes into a QUIC stream or
				// an HTTP response (io.Discard would read 8 KiB at a time).
				n, err := io.CopyBuffer(struct{ io.Writer }{io.Discard}, tc.reader(obj), make([]byte, 32<<10))
				obj.Close()
				if err != nil || n != size {
					b.Fatalf("read %d of %d bytes: %v", n, size, err)
				}
			}
		})
	}
}
