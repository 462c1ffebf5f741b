package storage_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"evx/storage"
	"evx/storage/storagetest"
)

func newLockS3(t *testing.T, mode string) (*storage.S3, storage.S3Config) {
	t.Helper()
	cfg := storagetest.S3Env(t)
	cfg.PartSize = storage.MinPartSize
	cfg.Bucket = storagetest.NewLockBucket(t, cfg, "evx-lock-")
	cfg.ObjectLock = true
	cfg.LockMode = mode
	s, err := storage.NewS3(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s, cfg
}

func TestS3Locker(t *testing.T) {
	for _, mode := range []string{"COMPLIANCE", "GOVERNANCE"} {
		t.Run(mode, func(t *testing.T) {
			storagetest.RunLocker(t, func(t *testing.T) storagetest.LockEnv {
				s, cfg := newLockS3(t, mode)
				return storagetest.S3LockEnv(t, cfg, s)
			})
		})
	}
}

// The plain Backend contract holds on a bucket with Object Lock, which is
// versioned: Delete adds a delete marker, which Create writes over and
// List does not show; Replace leaves noncurrent versions.
func TestS3ConformanceObjectLock(t *testing.T) {
	storagetest.S3Env(t)
	storagetest.Run(t, func(t *testing.T) storage.Backend {
		s, _ := newLockS3(t, "")
		return s
	})
}

// currentVersion returns the version id of key's current version.
func currentVersion(t *testing.T, c *minio.Client, bucket, key string) string {
	t.Helper()
	oi, err := c.StatObject(t.Context(), bucket, key, minio.StatObjectOptions{})
	if err != nil {
		t.Fatalf("StatObject(%q): %v", key, err)
	}
	if oi.VersionID == "" || oi.VersionID == "null" {
		t.Fatalf("%q has no version id (%q): is the bucket versioned?", key, oi.VersionID)
	}
	return oi.VersionID
}

// A locked version cannot be removed by its id, by anyone, before its
// date: the server refuses it, whatever the client. In COMPLIANCE mode
// not even a governance bypass helps; in GOVERNANCE mode it does (which
// the backend never asks for).
func TestS3LockRefusedByServer(t *testing.T) {
	for _, mode := range []string{"COMPLIANCE", "GOVERNANCE"} {
		t.Run(mode, func(t *testing.T) {
			s, cfg := newLockS3(t, mode)
			c := storagetest.AdminClient(t, cfg)
			ctx := t.Context()
			until := time.Now().Add(time.Hour)
			if err := s.CreateLocked(ctx, "k", strings.NewReader("evidence"), 8, until); err != nil {
				t.Fatal(err)
			}
			id := currentVersion(t, c, cfg.Bucket, "k")
			m, date, err := c.GetObjectRetention(ctx, cfg.Bucket, "k", id)
			if err != nil {
				t.Fatal(err)
			}
			if string(*m) != mode || date.Before(until) || !date.Before(until.Add(time.Second)) {
				t.Errorf("retention = %s until %v, want %s until %v", *m, date, mode, until)
			}
			if err := c.RemoveObject(ctx, cfg.Bucket, "k", minio.RemoveObjectOptions{VersionID: id}); err == nil {
				t.Fatalf("the server removed a locked version")
			}
			shorter := time.Now().Add(time.Minute)
			err = c.PutObjectRetention(ctx, cfg.Bucket, "k", minio.PutObjectRetentionOptions{
				Mode: m, RetainUntilDate: &shorter, VersionID: id,
			})
			if err == nil {
				t.Errorf("the server shortened a retention without a bypass")
			}
			err = c.RemoveObject(ctx, cfg.Bucket, "k", minio.RemoveObjectOptions{VersionID: id, GovernanceBypass: true})
			switch {
			case mode == "COMPLIANCE" && err == nil:
				t.Fatalf("the server removed a version locked in COMPLIANCE mode with a governance bypass")
			case mode == "GOVERNANCE" && err != nil:
				t.Fatalf("removing a GOVERNANCE version with a bypass: %v", err)
			}
			want := 1
			if mode == "GOVERNANCE" {
				want = 0
			}
			if n := len(storagetest.ObjectVersions(t, c, cfg.Bucket, "k")); n != want {
				t.Errorf("%d versions left, want %d", n, want)
			}
		})
	}
}

// The lock and the hold of an object uploaded in parts are the server's
// too, on the object it committed.
func TestS3LockMultipart(t *testing.T) {
	s, cfg := newLockS3(t, "")
	c := storagetest.AdminClient(t, cfg)
	ctx := t.Context()
	until := time.Now().Add(time.Hour)
	const n = 2*storage.MinPartSize + 1
	if err := s.CreateLocked(ctx, "large", storagetest.DataReader(1, n), n, until); err != nil {
		t.Fatal(err)
	}
	if err := s.Hold(ctx, "large", true); err != nil {
		t.Fatal(err)
	}
	id := currentVersion(t, c, cfg.Bucket, "large")
	oi, err := c.StatObject(ctx, cfg.Bucket, "large", minio.StatObjectOptions{VersionID: id})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(oi.ETag, "-") {
		t.Errorf("ETag %q is not a multipart upload's", oi.ETag)
	}
	m, date, err := c.GetObjectRetention(ctx, cfg.Bucket, "large", id)
	if err != nil {
		t.Fatal(err)
	}
	if *m != minio.Compliance || date.Before(until) {
		t.Errorf("retention = %s until %v, want COMPLIANCE until %v", *m, date, until)
	}
	hold, err := c.GetObjectLegalHold(ctx, cfg.Bucket, "large", minio.GetObjectLegalHoldOptions{VersionID: id})
	if err != nil {
		t.Fatal(err)
	}
	if *hold != minio.LegalHoldEnabled {
		t.Errorf("legal hold = %s, want ON", *hold)
	}
	if err := c.RemoveObject(ctx, cfg.Bucket, "large", minio.RemoveObjectOptions{VersionID: id, GovernanceBypass: true}); err == nil {
		t.Fatal("the server removed a locked multipart object")
	}
	if err := s.Hold(ctx, "large", false); err != nil {
		t.Fatal(err)
	}
}

// EnsureBucket creates a bucket with Object Lock when configured so, and
// refuses an existing bucket without it, naming it; unconfigured, it
// creates a plain bucket as before.
func TestS3EnsureBucketObjectLock(t *testing.T) {
	cfg := storagetest.S3Env(t)
	c := storagetest.AdminClient(t, cfg)
	ctx := t.Context()
	lockEnabled := func(bucket string) bool {
		t.Helper()
		enabled, _, _, _, err := c.GetObjectLockConfig(ctx, bucket)
		if err != nil && minio.ToErrorResponse(err).Code != "ObjectLockConfigurationNotFoundError" {
			t.Fatal(err)
		}
		return enabled == "Enabled"
	}
	ensure := func(cfg storage.S3Config) error {
		t.Helper()
		s, err := storage.NewS3(cfg)
		if err != nil {
			t.Fatal(err)
		}
		err = s.EnsureBucket(ctx)
		if errors.Is(err, storage.ErrLifecycleUnsupported) {
			// The bucket is ready; the server lacks (part of) the
			// lifecycle backstop, which s3_lifecycle_test.go tests.
			return nil
		}
		return err
	}
	name := func(prefix string) string {
		b := storagetest.NewBucket(t, cfg, prefix)
		if err := c.RemoveBucket(ctx, b); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { storagetest.RemoveBucket(t, c, b) })
		return b
	}

	locked := cfg
	locked.Bucket = name("evx-ensure-lock-")
	locked.ObjectLock = true
	if err := ensure(locked); err != nil {
		t.Fatalf("EnsureBucket with ObjectLock: %v", err)
	}
	if !lockEnabled(locked.Bucket) {
		t.Errorf("EnsureBucket with ObjectLock made a bucket without Object Lock")
	}
	if err := ensure(locked); err != nil {
		t.Errorf("EnsureBucket of an existing bucket with Object Lock: %v", err)
	}

	plain := cfg
	plain.Bucket = name("evx-ensure-plain-")
	if err := ensure(plain); err != nil {
		t.Fatalf("EnsureBucket: %v", err)
	}
	if lockEnabled(plain.Bucket) {
		t.Errorf("EnsureBucket without ObjectLock made a bucket with Object Lock")
	}
	plain.ObjectLock = true
	err := ensure(plain)
	if err == nil || !strings.Contains(err.Error(), `"`+plain.Bucket+`"`) || !strings.Contains(err.Error(), "Object Lock") {
		t.Errorf("EnsureBucket with ObjectLock of a bucket without it = %v, want an error naming the bucket and Object Lock", err)
	}
}

// Without ObjectLock in its configuration, the backend's Locker methods
// fail and store nothing, and its Delete and Create are as before.
func TestS3LockerNeedsObjectLock(t *testing.T) {
	s := newS3(t, storagetest.S3Env(t))
	ctx := t.Context()
	until := time.Now().Add(time.Hour)
	errs := map[string]error{"CreateLocked": s.CreateLocked(ctx, "k", strings.NewReader("x"), 1, until)}
	if err := s.Create(ctx, "plain", strings.NewReader("x"), 1); err != nil {
		t.Fatal(err)
	}
	_, errs["Lock"] = s.Lock(ctx, "plain")
	errs["Extend"] = s.Extend(ctx, "plain", until)
	errs["Hold"] = s.Hold(ctx, "plain", true)
	errs["Purge"] = s.Purge(ctx, "plain")
	for call, err := range errs {
		if err == nil || !strings.Contains(err.Error(), "object lock is not configured") {
			t.Errorf("%s without object lock = %v, want an error saying so", call, err)
		}
	}
	if _, err := s.Stat(ctx, "k"); !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("Stat after a refused CreateLocked = %v, want ErrNotExist", err)
	}
	if err := s.Delete(ctx, "plain"); err != nil {
		t.Errorf("Delete: %v", err)
	}
}

func TestS3LockConfig(t *testing.T) {
	ok := storage.S3Config{Endpoint: "127.0.0.1:9000", Bucket: "b", AccessKey: "a", SecretKey: "s", ObjectLock: true}
	for _, mode := range []string{"", "COMPLIANCE", "GOVERNANCE"} {
		cfg := ok
		cfg.LockMode = mode
		if _, err := storage.NewS3(cfg); err != nil {
			t.Errorf("NewS3 with lock mode %q: %v", mode, err)
		}
	}
	for _, tc := range []struct {
		mode string
		lock bool
		want string
	}{
		{"compliance", true, `"compliance"`},
		{"NONE", true, `"NONE"`},
		{"GOVERNANCE", false, "object lock is off"},
	} {
		cfg := ok
		cfg.LockMode, cfg.ObjectLock = tc.mode, tc.lock
		if _, err := storage.NewS3(cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewS3 with lock mode %q, object lock %t = %v, want an error mentioning %s", tc.mode, tc.lock, err, tc.want)
		}
	}
}
