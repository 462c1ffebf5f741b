package storage_test

import (
	"testing"

	"evx/storage"
	"evx/storage/storagetest"
)

// BenchmarkReplace measures one step of a checkpoint writer: ReadVersion
// of a 300-byte object, then Replace with that version.
func BenchmarkReplace(b *testing.B) {
	run := func(b *testing.B, st storage.Backend) {
		ctx := b.Context()
		data := storagetest.Data(1, 300)
		if _, err := st.Replace(ctx, "log/checkpoint", data, ""); err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			_, v, err := st.ReadVersion(ctx, "log/checkpoint", 4096)
			if err != nil {
				b.Fatal(err)
			}
			data[0]++
			if _, err := st.Replace(ctx, "log/checkpoint", data, v); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("Disk", func(b *testing.B) {
		d, err := storage.NewDisk(b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		run(b, d)
	})
	b.Run("S3", func(b *testing.B) {
		cfg, _ := benchS3(b)
		s, err := storage.NewS3(cfg)
		if err != nil {
			b.Fatal(err)
		}
		run(b, s)
	})
}
