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

// RemoveBucket removes a test bucket with its objects and unfinished
// uploads, logging what it cannot remove.
func RemoveBucket(tb testing.TB, c *minio.Client, bucket string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for u := range c.ListIncompleteUploads(ctx, bucket, "", true) {
		if u.Err == nil {
			c.RemoveIncompleteUpload(ctx, bucket, u.Key)
		}
	}
	for o := range c.ListObjects(ctx, bucket, minio.ListObjectsOptions{Recursive: true}) {
		if o.Err == nil {
			c.RemoveObject(ctx, bucket, o.Key, minio.RemoveObjectOptions{})
		}
	}
	if err := c.RemoveBucket(ctx, bucket); err != nil {
		tb.Logf("removing bucket %s: %v", bucket, err)
	}
}
