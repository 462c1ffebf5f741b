package crypto

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"filippo.io/age"
)

// Benchmarks of sealing and opening, each next to a baseline that does only
// what age does with the same bytes (plain age.Encrypt or age.Decrypt, same
// source, same kind of destination), so that the ratio evx/age comes from one
// run on one machine. Record figures in docs/benchmarks.md.
//
//	go test ./crypto -run '^$' -bench . -benchtime 5x

// benchSizes are the sizes of the large file in each benchmark bundle.
var benchSizes = []int64{4 << 20, 256 << 20}

// Besides the large file, every benchmark bundle holds benchSmallFiles files
// of benchSmallSize bytes, as evidence sets mix big images and small logs.
const (
	benchSmallFiles = 16
	benchSmallSize  = 4 << 10
)

// benchData writes the benchmark files into a new directory and returns the
// directory, the files as Seal takes them, and their total size.
func benchData(b *testing.B, large int64) (string, []SourceFile, int64) {
	b.Helper()
	dir := filepath.Join(b.TempDir(), "evidence")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	f, err := os.Create(filepath.Join(dir, "disk.img"))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.CopyN(f, rand.Reader, large); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	small := make([]byte, benchSmallSize)
	for i := range benchSmallFiles {
		rand.Read(small)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("log-%02d.txt", i)), small, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	files, err := CollectFiles([]string{dir})
	if err != nil {
		b.Fatal(err)
	}
	var total int64
	for _, sf := range files {
		total += sf.Size
	}
	return dir, files, total
}

func benchKey(b *testing.B) *UnitKey {
	b.Helper()
	k, err := GenerateUnitKey("XX/bench")
	if err != nil {
		b.Fatal(err)
	}
	return k
}

func benchSealOptions(sender, recipient *UnitKey) SealOptions {
	return SealOptions{
		Sender:     sender,
		Recipients: []PublicKey{recipient.Public()},
		Purpose:    "criminal-investigation",
		Handling:   DefaultHandling,
		TLP:        DefaultTLP,
		LegalBasis: "bench",
		Retain:     24 * time.Hour,
	}
}

func sizeName(n int64) string { return fmt.Sprintf("%dMiB", n>>20) }

// cpuMeter measures the CPU time (user and system, all threads) spent in a
// benchmark's timed part. On a shared machine wall time swings with the
// neighbours' load; CPU time per byte shows the work done more steadily.
type cpuMeter struct {
	start, excluded time.Duration
	pausedAt        time.Duration
}

func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// startCPU resets the timer and starts measuring.
func startCPU(b *testing.B) *cpuMeter {
	b.ResetTimer()
	return &cpuMeter{start: processCPU(b)}
}

// pause stops the timer and the CPU meter; resume starts both again.
func (m *cpuMeter) pause(b *testing.B) {
	b.StopTimer()
	m.pausedAt = processCPU(b)
}

func (m *cpuMeter) resume(b *testing.B) {
	m.excluded += processCPU(b) - m.pausedAt
	b.StartTimer()
}

// report adds the CPU nanoseconds per byte processed to the results.
func (m *cpuMeter) report(b *testing.B, bytesPerOp int64) {
	b.StopTimer()
	cpu := processCPU(b) - m.start - m.excluded
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(bytesPerOp)/float64(b.N), "cpu-ns/B")
}

// BenchmarkSeal seals the files into io.Discard.
func BenchmarkSeal(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(sizeName(size), func(b *testing.B) {
			_, files, total := benchData(b, size)
			key := benchKey(b)
			opts := benchSealOptions(key, key)
			b.SetBytes(total)
			cpu := startCPU(b)
			for range b.N {
				if _, err := Seal(context.Background(), io.Discard, files, opts); err != nil {
					b.Fatal(err)
				}
			}
			cpu.report(b, total)
		})
	}
}

// BenchmarkAgeEncrypt is BenchmarkSeal's baseline: the same files, read in
// the same order, encrypted with age.Encrypt to the same recipient into
// io.Discard; no hashing, archiving or signing.
func BenchmarkAgeEncrypt(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(sizeName(size), func(b *testing.B) {
			_, files, total := benchData(b, size)
			key := benchKey(b)
			b.SetBytes(total)
			cpu := startCPU(b)
			for range b.N {
				w, err := age.Encrypt(io.Discard, key.Recipient())
				if err != nil {
					b.Fatal(err)
				}
				for _, sf := range files {
					f, err := os.Open(sf.OSPath)
					if err != nil {
						b.Fatal(err)
					}
					_, err = io.Copy(w, f)
					f.Close()
					if err != nil {
						b.Fatal(err)
					}
				}
				if err := w.Close(); err != nil {
					b.Fatal(err)
				}
			}
			cpu.report(b, total)
		})
	}
}

// BenchmarkOpen opens a bundle file and extracts it into a new directory:
// signature, payload hash, decryption, manifest and every file's hash.
func BenchmarkOpen(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(sizeName(size), func(b *testing.B) {
			_, files, total := benchData(b, size)
			key := benchKey(b)
			work := b.TempDir()
			bundlePath := filepath.Join(work, "bundle.evx")
			out, err := os.Create(bundlePath)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := Seal(context.Background(), out, files, benchSealOptions(key, key)); err != nil {
				b.Fatal(err)
			}
			if err := out.Close(); err != nil {
				b.Fatal(err)
			}
			bundle, f, err := OpenBundleFile(bundlePath)
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			b.SetBytes(total)
			cpu := startCPU(b)
			for i := range b.N {
				dir := filepath.Join(work, fmt.Sprintf("out-%d", i))
				res, err := bundle.Open(context.Background(), key, dir, OpenOptions{})
				if err != nil {
					b.Fatal(err)
				}
				if !res.PayloadVerified || len(res.Files) != len(files) {
					b.Fatalf("opened %d of %d files, payload verified: %v", len(res.Files), len(files), res.PayloadVerified)
				}
				cpu.pause(b)
				if err := os.RemoveAll(dir); err != nil {
					b.Fatal(err)
				}
				cpu.resume(b)
			}
			cpu.report(b, total)
		})
	}
}

// BenchmarkAgeDecrypt is BenchmarkOpen's baseline: the same files, encrypted
// with age into one file beforehand, decrypted with age.Decrypt into one new
// file per iteration in the same kind of directory; no hashing or checks
// beyond age's own authentication.
func BenchmarkAgeDecrypt(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(sizeName(size), func(b *testing.B) {
			_, files, total := benchData(b, size)
			key := benchKey(b)
			work := b.TempDir()
			encPath := filepath.Join(work, "data.age")
			enc, err := os.Create(encPath)
			if err != nil {
				b.Fatal(err)
			}
			w, err := age.Encrypt(enc, key.Recipient())
			if err != nil {
				b.Fatal(err)
			}
			for _, sf := range files {
				data, err := os.ReadFile(sf.OSPath)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := w.Write(data); err != nil {
					b.Fatal(err)
				}
			}
			if err := w.Close(); err != nil {
				b.Fatal(err)
			}
			if err := enc.Close(); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(total)
			cpu := startCPU(b)
			for i := range b.N {
				in, err := os.Open(encPath)
				if err != nil {
					b.Fatal(err)
				}
				r, err := age.Decrypt(in, key.Identity())
				if err != nil {
					b.Fatal(err)
				}
				outPath := filepath.Join(work, fmt.Sprintf("out-%d", i))
				out, err := os.Create(outPath)
				if err != nil {
					b.Fatal(err)
				}
				n, err := io.Copy(out, r)
				if err != nil {
					b.Fatal(err)
				}
				if n != total {
					b.Fatalf("decrypted %d bytes, want %d", n, total)
				}
				if err := out.Close(); err != nil {
					b.Fatal(err)
				}
				in.Close()
				cpu.pause(b)
				if err := os.Remove(outPath); err != nil {
					b.Fatal(err)
				}
				cpu.resume(b)
			}
			cpu.report(b, total)
		})
	}
}
