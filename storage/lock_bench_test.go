package storage_test

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"evx/storage"
	"evx/storage/storagetest"
)

// BenchmarkS3CreateLocked compares, in one run, creating a small object
// (a record's size) with Create on a plain bucket (the baseline), with
// Create on a bucket with Object Lock (which first checks for hidden
// locked versions), and with CreateLocked there (the retention travels
// with the PUT). Each iteration makes one object of each kind, in an order
// that rotates, so that the load of a shared machine weighs on all three
// alike; it reports the mean time of each and the ratios to the baseline.
// The locks are GOVERNANCE, an hour long, so that the benchmark's objects
// can be removed.
func BenchmarkS3CreateLocked(b *testing.B) {
	env := storagetest.S3Env(b)
	plainCfg := env
	plainCfg.Bucket = storagetest.NewBucket(b, env, "evx-bench-")
	plain, err := storage.NewS3(plainCfg)
	if err != nil {
		b.Fatal(err)
	}
	lockCfg := env
	lockCfg.Bucket = storagetest.NewLockBucket(b, env, "evx-bench-lock-")
	lockCfg.ObjectLock = true
	lockCfg.LockMode = "GOVERNANCE"
	locked, err := storage.NewS3(lockCfg)
	if err != nil {
		b.Fatal(err)
	}
	data := storagetest.Data(1, 4<<10)
	until := time.Now().Add(time.Hour)
	ctx := b.Context()
	cases := []func(key string) error{
		func(key string) error { return plain.Create(ctx, key, bytes.NewReader(data), int64(len(data))) },
		func(key string) error { return locked.Create(ctx, key, bytes.NewReader(data), int64(len(data))) },
		func(key string) error {
			return locked.CreateLocked(ctx, "locked/"+key, bytes.NewReader(data), int64(len(data)), until)
		},
	}
	var spent [3]time.Duration
	n := 0
	for b.Loop() {
		for j := range cases {
			c := (n + j) % len(cases)
			start := time.Now()
			if err := cases[c](fmt.Sprintf("obj/%d", n)); err != nil {
				b.Fatal(err)
			}
			spent[c] += time.Since(start)
		}
		n++
	}
	for i, name := range []string{"create-ns", "create-lockbucket-ns", "createlocked-ns"} {
		b.ReportMetric(float64(spent[i].Nanoseconds())/float64(n), name)
	}
	b.ReportMetric(float64(spent[1])/float64(spent[0]), "create-lockbucket/create")
	b.ReportMetric(float64(spent[2])/float64(spent[0]), "createlocked/create")
}
