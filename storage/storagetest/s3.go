package storagetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"evx/storage"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3Env returns the configuration, without a bucket, of the S3 test server
// that `eval "$(scripts/minio.sh start)"` names in the environment. Without
// one, tb skips, except under CI, which must run every S3 test.
func S3Env(tb testing.TB) storage.S3Config {
	tb.Helper()
	cfg := storage.S3Config{
		Endpoint:  os.Getenv("EVX_TEST_S3_ENDPOINT"),
		AccessKey: os.Getenv("EVX_TEST_S3_ACCESS_KEY"),
		SecretKey: os.Getenv("EVX_TEST_S3_SECRET_KEY"),
	}
	if cfg.Endpoint == "" || cfg.AccessKey == "" || cfg.SecretKey == "" {
		msg := "no S3 test server: set EVX_TEST_S3_ENDPOINT, EVX_TEST_S3_ACCESS_KEY and EVX_TEST_S3_SECRET_KEY (eval \"$(scripts/minio.sh start)\")"
		if os.Getenv("CI") != "" {
			tb.Fatal(msg)
		}
		tb.Skip(msg)
	}
	return cfg
}

// AdminClient returns a minio-go client of the server in cfg, for test
// set-up that the Backend interface does not offer.
func AdminClient(tb testing.TB, cfg storage.S3Config) *minio.Client {
	tb.Helper()
	c, err := minio.New(cfg.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, "")})
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// NewBucket creates a bucket named prefix followed by random hex on the
// server in cfg, and removes it with its contents when tb ends.
func NewBucket(tb testing.TB, cfg storage.S3Config, prefix string) string {
	tb.Helper()
	var b [8]byte
	rand.Read(b[:])
	bucket := prefix + hex.EncodeToString(b[:])
	c := AdminClient(tb, cfg)
	if err := c.MakeBucket(context.Background(), bucket, minio.MakeBucketOptions{}); err != nil {
		tb.Fatalf("creating bucket %s: %v", bucket, err)
	}
	tb.Cleanup(func() { RemoveBucket(tb, c, bucket) })
	return bucket
}

// NewLockBucket is NewBucket for a bucket with Object Lock enabled (and
// so versioning).
func NewLockBucket(tb testing.TB, cfg storage.S3Config, prefix string) string {
	tb.Helper()
	var b [8]byte
	rand.Read(b[:])
	bucket := prefix + hex.EncodeToString(b[:])
	c := AdminClient(tb, cfg)
	if err := c.MakeBucket(context.Background(), bucket, minio.MakeBucketOptions{ObjectLocking: true}); err != nil {
		tb.Fatalf("creating bucket %s: %v", bucket, err)
	}
	tb.Cleanup(func() { RemoveBucket(tb, c, bucket) })
	return bucket
}

// S3LockEnv returns the LockEnv of s, whose bucket, named in cfg, has
// Object Lock enabled. Its versions are listed with minio-go.
func S3LockEnv(tb testing.TB, cfg storage.S3Config, s *storage.S3) LockEnv {
	c := AdminClient(tb, cfg)
	return LockEnv{
		Backend: s,
		Now:     time.Now,
		Versions: func(t *testing.T, key string) int {
			t.Helper()
			return len(ObjectVersions(t, c, cfg.Bucket, key))
		},
		Hide: func(t *testing.T, key string) {
			t.Helper()
			if err := c.RemoveObject(t.Context(), cfg.Bucket, key, minio.RemoveObjectOptions{}); err != nil {
				t.Fatalf("hiding %q behind a delete marker: %v", key, err)
			}
		},
	}
}

// ObjectVersions lists the versions and delete markers of key in bucket.
func ObjectVersions(tb testing.TB, c *minio.Client, bucket, key string) []minio.ObjectInfo {
	tb.Helper()
	var vs []minio.ObjectInfo
	for o := range c.ListObjects(context.Background(), bucket, minio.ListObjectsOptions{Prefix: key, WithVersions: true, Recursive: true}) {
		if o.Err != nil {
			tb.Fatalf("listing the versions of %q: %v", key, o.Err)
		}
		if o.Key == key {
			vs = append(vs, o)
		}
	}
	return vs
}

// RemoveBucket removes a test bucket with its objects, their versions and
// unfinished uploads, logging what it cannot remove. Versions locked in
// GOVERNANCE mode are removed by bypassing the lock; those locked in
// COMPLIANCE mode stay until their date, and so does the bucket.
func RemoveBucket(tb testing.TB, c *minio.Client, bucket string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for u := range c.ListIncompleteUploads(ctx, bucket, "", true) {
		if u.Err == nil {
			c.RemoveIncompleteUpload(ctx, bucket, u.Key)
		}
	}
	for o := range c.ListObjects(ctx, bucket, minio.ListObjectsOptions{Recursive: true, WithVersions: true}) {
		if o.Err == nil {
			c.RemoveObject(ctx, bucket, o.Key, minio.RemoveObjectOptions{VersionID: o.VersionID, GovernanceBypass: true})
		}
	}
	if err := c.RemoveBucket(ctx, bucket); err != nil {
		tb.Logf("removing bucket %s: %v", bucket, err)
	}
}
