package storage_test

import (
	"crypto/rand"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/lifecycle"

	"evx/storage"
	"evx/storage/storagetest"
)

// newBucketName returns a fresh bucket name that does not exist yet, and
// removes the bucket, if made, when t ends.
func newBucketName(t *testing.T, cfg storage.S3Config, prefix string) string {
	t.Helper()
	c := storagetest.AdminClient(t, cfg)
	b := prefix + strings.ToLower(rand.Text()[:16])
	t.Cleanup(func() { storagetest.RemoveBucket(t, c, b) })
	return b
}

// ensureLifecycle runs EnsureBucket and reports whether the server took
// the rule that aborts uploads: EnsureBucket then returns nil; if the
// server refuses that rule (MinIO does), the error wraps
// ErrLifecycleUnsupported and names the bucket and the rule. Any other
// error fails t.
func ensureLifecycle(t *testing.T, s *storage.S3, bucket string) (abort bool) {
	t.Helper()
	err := s.EnsureBucket(t.Context())
	switch {
	case err == nil:
		return true
	case errors.Is(err, storage.ErrLifecycleUnsupported):
		if !strings.Contains(err.Error(), `"`+bucket+`"`) || !strings.Contains(err.Error(), storage.LifecycleRuleAbort) {
			t.Errorf("EnsureBucket = %v, want an error naming the bucket and the rule %s", err, storage.LifecycleRuleAbort)
		}
		return false
	}
	t.Fatalf("EnsureBucket: %v", err)
	return false
}

// lifecycleRules returns the bucket's lifecycle rules by ID, and when the
// configuration last changed (MinIO says; zero from other servers).
func lifecycleRules(t *testing.T, c *minio.Client, bucket string) (map[string]lifecycle.Rule, []string, time.Time) {
	t.Helper()
	lc, at, err := c.GetBucketLifecycleWithInfo(t.Context(), bucket)
	if err != nil {
		t.Fatalf("reading the lifecycle of %s: %v", bucket, err)
	}
	rules := map[string]lifecycle.Rule{}
	var ids []string
	for _, r := range lc.Rules {
		rules[r.ID] = r
		ids = append(ids, r.ID)
	}
	return rules, ids, at
}

// checkBackstop checks that rules hold the backstop as configured: each
// rule enabled, for the whole bucket, with its one action.
func checkBackstop(t *testing.T, rules map[string]lifecycle.Rule, days int, abort bool) {
	t.Helper()
	want := lifecycle.Rule{
		ID:                          storage.LifecycleRuleNoncurrent,
		Status:                      "Enabled",
		NoncurrentVersionExpiration: lifecycle.NoncurrentVersionExpiration{NoncurrentDays: lifecycle.ExpirationDays(days)},
	}
	if r, ok := rules[want.ID]; !ok {
		t.Errorf("no rule %s", want.ID)
	} else if got, want := ruleXML(t, r), ruleXML(t, want); got != want {
		t.Errorf("rule %s =\n%s\nwant\n%s", storage.LifecycleRuleNoncurrent, got, want)
	}
	r, ok := rules[storage.LifecycleRuleAbort]
	if !abort {
		if ok {
			t.Errorf("rule %s present, but EnsureBucket said that the server refused it", storage.LifecycleRuleAbort)
		}
		return
	}
	want = lifecycle.Rule{
		ID:                             storage.LifecycleRuleAbort,
		Status:                         "Enabled",
		AbortIncompleteMultipartUpload: lifecycle.AbortIncompleteMultipartUpload{DaysAfterInitiation: 1},
	}
	if !ok {
		t.Errorf("no rule %s", want.ID)
	} else if got, want := ruleXML(t, r), ruleXML(t, want); got != want {
		t.Errorf("rule %s =\n%s\nwant\n%s", storage.LifecycleRuleAbort, got, want)
	}
}

func ruleXML(t *testing.T, r lifecycle.Rule) string {
	t.Helper()
	b, err := xml.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// EnsureBucket installs the backstop on the bucket it creates, with the
// default of one day; a second EnsureBucket changes nothing.
func TestS3LifecycleNewBucket(t *testing.T) {
	cfg := storagetest.S3Env(t)
	cfg.Bucket = newBucketName(t, cfg, "evx-lc-new-")
	cfg.ObjectLock = true
	c := storagetest.AdminClient(t, cfg)
	var puts atomic.Int64
	p := newS3Proxy(t, cfg.Endpoint, func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodPut && r.URL.Query().Has("lifecycle") {
			puts.Add(1)
		}
		return false
	})
	cfg.Endpoint = p.addr
	s, err := storage.NewS3(cfg)
	if err != nil {
		t.Fatal(err)
	}
	abort := ensureLifecycle(t, s, cfg.Bucket)
	rules, ids, at := lifecycleRules(t, c, cfg.Bucket)
	checkBackstop(t, rules, storage.DefaultNoncurrentExpiryDays, abort)
	if len(rules) != len(ids) || abort && len(ids) != 2 || !abort && len(ids) != 1 {
		t.Errorf("rules %q, want the backstop's only", ids)
	}

	before := puts.Load()
	if again := ensureLifecycle(t, s, cfg.Bucket); again != abort {
		t.Errorf("second EnsureBucket: abort rule taken %t, first %t", again, abort)
	}
	rules2, ids2, at2 := lifecycleRules(t, c, cfg.Bucket)
	if !at2.Equal(at) || strings.Join(ids2, " ") != strings.Join(ids, " ") {
		t.Errorf("second EnsureBucket changed the configuration: rules %q at %v, were %q at %v", ids2, at2, ids, at)
	}
	for id, r := range rules {
		if ruleXML(t, rules2[id]) != ruleXML(t, r) {
			t.Errorf("second EnsureBucket changed rule %s", id)
		}
	}
	// Where the server refuses the abort rule, each EnsureBucket tries it
	// once, and the refused request changes nothing.
	want := int64(0)
	if !abort {
		want = 1
	}
	if n := puts.Load() - before; n != want {
		t.Errorf("second EnsureBucket sent %d lifecycle configurations, want %d", n, want)
	}
}

// An existing bucket keeps its operator's rules, in place, and gains the
// backstop's; a rule with one of the backstop's IDs is the backstop's,
// and is put back as configured. NoncurrentExpiryDays sets the days.
func TestS3LifecycleKeepsOperatorRules(t *testing.T) {
	cfg := storagetest.S3Env(t)
	cfg.Bucket = storagetest.NewLockBucket(t, cfg, "evx-lc-ops-")
	cfg.ObjectLock = true
	cfg.NoncurrentExpiryDays = 7
	c := storagetest.AdminClient(t, cfg)
	ops := []lifecycle.Rule{
		{
			ID:         "ops-logs",
			Status:     "Enabled",
			RuleFilter: lifecycle.Filter{Prefix: "logs/"},
			Expiration: lifecycle.Expiration{Days: 30},
		},
		{
			// A backstop rule changed by hand: disabled, other days.
			ID:                          storage.LifecycleRuleNoncurrent,
			Status:                      "Disabled",
			NoncurrentVersionExpiration: lifecycle.NoncurrentVersionExpiration{NoncurrentDays: 90},
		},
		{
			ID:                          "ops-tmp",
			Status:                      "Disabled",
			RuleFilter:                  lifecycle.Filter{And: lifecycle.And{Prefix: "tmp/", Tags: []lifecycle.Tag{{Key: "kind", Value: "scratch"}}}},
			NoncurrentVersionExpiration: lifecycle.NoncurrentVersionExpiration{NoncurrentDays: 2, NewerNoncurrentVersions: 3},
		},
	}
	if err := c.SetBucketLifecycle(t.Context(), cfg.Bucket, &lifecycle.Configuration{Rules: ops}); err != nil {
		t.Fatal(err)
	}
	before, _, _ := lifecycleRules(t, c, cfg.Bucket)

	s, err := storage.NewS3(cfg)
	if err != nil {
		t.Fatal(err)
	}
	abort := ensureLifecycle(t, s, cfg.Bucket)
	rules, ids, _ := lifecycleRules(t, c, cfg.Bucket)
	checkBackstop(t, rules, 7, abort)
	want := []string{"ops-logs", storage.LifecycleRuleNoncurrent, "ops-tmp"}
	if abort {
		want = append(want, storage.LifecycleRuleAbort)
	}
	if strings.Join(ids, " ") != strings.Join(want, " ") {
		t.Errorf("rules %q, want %q", ids, want)
	}
	for _, id := range []string{"ops-logs", "ops-tmp"} {
		if got, was := ruleXML(t, rules[id]), ruleXML(t, before[id]); got != was {
			t.Errorf("operator's rule %s changed:\n%s\nwas\n%s", id, got, was)
		}
	}

	// Another number of days replaces the rule, and only it.
	cfg.NoncurrentExpiryDays = 3
	s, err = storage.NewS3(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if again := ensureLifecycle(t, s, cfg.Bucket); again != abort {
		t.Errorf("EnsureBucket with 3 days: abort rule taken %t, before %t", again, abort)
	}
	rules2, ids2, _ := lifecycleRules(t, c, cfg.Bucket)
	checkBackstop(t, rules2, 3, abort)
	if strings.Join(ids2, " ") != strings.Join(want, " ") {
		t.Errorf("rules %q, want %q", ids2, want)
	}
	for _, id := range []string{"ops-logs", "ops-tmp", storage.LifecycleRuleAbort} {
		if ruleXML(t, rules2[id]) != ruleXML(t, rules[id]) {
			t.Errorf("rule %s changed with the noncurrent days", id)
		}
	}
}

// The backstop cannot remove evidence early. A day cannot be waited for:
// this checks that the rule is in place, that a locked version made
// noncurrent (by a DELETE without a version id) is still there, and that
// the server refuses to remove it, which is the check that S3 and MinIO
// apply to lifecycle expiry too (docs/retention.md, "Lifecycle backstop").
func TestS3LifecycleKeepsLockedNoncurrent(t *testing.T) {
	for _, mode := range []string{"COMPLIANCE", "GOVERNANCE"} {
		t.Run(mode, func(t *testing.T) {
			cfg := storagetest.S3Env(t)
			cfg.Bucket = newBucketName(t, cfg, "evx-lc-lock-")
			cfg.ObjectLock = true
			cfg.LockMode = mode
			c := storagetest.AdminClient(t, cfg)
			s, err := storage.NewS3(cfg)
			if err != nil {
				t.Fatal(err)
			}
			abort := ensureLifecycle(t, s, cfg.Bucket)
			rules, _, _ := lifecycleRules(t, c, cfg.Bucket)
			checkBackstop(t, rules, 1, abort)

			ctx := t.Context()
			until := time.Now().Add(time.Hour)
			if err := s.CreateLocked(ctx, "k", strings.NewReader("evidence"), 8, until); err != nil {
				t.Fatal(err)
			}
			id := currentVersion(t, c, cfg.Bucket, "k")
			if err := c.RemoveObject(ctx, cfg.Bucket, "k", minio.RemoveObjectOptions{}); err != nil {
				t.Fatalf("adding a delete marker: %v", err)
			}
			vs := storagetest.ObjectVersions(t, c, cfg.Bucket, "k")
			if len(vs) != 2 || !vs[0].IsDeleteMarker || vs[1].VersionID != id || vs[1].IsLatest {
				t.Fatalf("versions %+v, want a delete marker over the locked version %s, now noncurrent", vs, id)
			}
			if err := c.RemoveObject(ctx, cfg.Bucket, "k", minio.RemoveObjectOptions{VersionID: id}); err == nil {
				t.Fatalf("the server removed a locked noncurrent version")
			}
			m, date, err := c.GetObjectRetention(ctx, cfg.Bucket, "k", id)
			if err != nil {
				t.Fatal(err)
			}
			if string(*m) != mode || date.Before(until) {
				t.Errorf("retention = %s until %v, want %s until %v", *m, date, mode, until)
			}
		})
	}
}

// A server without lifecycle support (501) makes EnsureBucket fail with
// ErrLifecycleUnsupported, after the bucket is made and checked; other
// refusals are errors of their own, naming the bucket.
func TestS3LifecycleRefused(t *testing.T) {
	for _, tc := range []struct {
		name        string
		get, put    int // status of the injected answer, 0 for none
		code        string
		unsupported bool
	}{
		{"GetNotImplemented", http.StatusNotImplemented, 0, "NotImplemented", true},
		{"PutNotImplemented", 0, http.StatusNotImplemented, "NotImplemented", true},
		{"PutMalformed", 0, http.StatusBadRequest, "MalformedXML", false},
		{"PutDenied", 0, http.StatusForbidden, "AccessDenied", false},
		{"GetDenied", http.StatusForbidden, 0, "AccessDenied", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := storagetest.S3Env(t)
			cfg.Bucket = newBucketName(t, cfg, "evx-lc-refused-")
			cfg.ObjectLock = true
			c := storagetest.AdminClient(t, cfg)
			p := newS3Proxy(t, cfg.Endpoint, func(w http.ResponseWriter, r *http.Request) bool {
				if !r.URL.Query().Has("lifecycle") {
					return false
				}
				switch {
				case r.Method == http.MethodGet && tc.get != 0:
					s3Error(w, r, tc.get, tc.code)
				case r.Method == http.MethodPut && tc.put != 0:
					s3Error(w, r, tc.put, tc.code)
				default:
					return false
				}
				return true
			})
			cfg.Endpoint = p.addr
			s, err := storage.NewS3(cfg)
			if err != nil {
				t.Fatal(err)
			}
			err = s.EnsureBucket(t.Context())
			if err == nil || errors.Is(err, storage.ErrLifecycleUnsupported) != tc.unsupported ||
				!strings.Contains(err.Error(), `"`+cfg.Bucket+`"`) || !strings.Contains(err.Error(), "injected by the test proxy") {
				t.Errorf("EnsureBucket = %v, want an error naming the bucket, with the server's, and ErrLifecycleUnsupported %t", err, tc.unsupported)
			}
			if errors.Is(err, storage.ErrUnavailable) {
				t.Errorf("EnsureBucket = %v: a refusal is not unavailability", err)
			}
			// The bucket is made, with Object Lock, whatever the
			// lifecycle.
			if enabled, _, _, _, err := c.GetObjectLockConfig(t.Context(), cfg.Bucket); err != nil || enabled != "Enabled" {
				t.Errorf("object lock of the bucket: %q, %v", enabled, err)
			}
		})
	}
}

// A configuration that minio-go's types would change in rewriting it (an
// operator's rule with two transitions, or an element they do not know)
// is not rewritten: EnsureBucket fails, naming the bucket and the rule,
// and says which rules to add by hand. An answer too long to be a
// lifecycle configuration is refused unread.
func TestS3LifecycleUnwritable(t *testing.T) {
	const head = `<?xml version="1.0" encoding="UTF-8"?><LifecycleConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">`
	for _, tc := range []struct {
		name, doc, want string
	}{
		{"Transitions", head + `<Rule><ID>ops-archive</ID><Status>Enabled</Status><Filter><Prefix>logs/</Prefix></Filter>` +
			`<Transition><Days>30</Days><StorageClass>STANDARD_IA</StorageClass></Transition>` +
			`<Transition><Days>90</Days><StorageClass>GLACIER</StorageClass></Transition></Rule></LifecycleConfiguration>`,
			`"ops-archive" has 2 transitions`},
		{"Unknown", head + `<Rule><ID>ops-new</ID><Status>Enabled</Status><Filter></Filter>` +
			`<FutureAction><Days>3</Days></FutureAction></Rule></LifecycleConfiguration>`,
			`"ops-new" has an element "FutureAction"`},
		{"TooLong", head + strings.Repeat(" ", 4<<20) + `</LifecycleConfiguration>`, "longer than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := storagetest.S3Env(t)
			cfg.Bucket = newBucketName(t, cfg, "evx-lc-unwritable-")
			cfg.ObjectLock = true
			var puts atomic.Int64
			p := newS3Proxy(t, cfg.Endpoint, func(w http.ResponseWriter, r *http.Request) bool {
				if !r.URL.Query().Has("lifecycle") {
					return false
				}
				if r.Method == http.MethodGet {
					w.Header().Set("Content-Type", "application/xml")
					io.WriteString(w, tc.doc)
					return true
				}
				puts.Add(1)
				return false
			})
			cfg.Endpoint = p.addr
			s, err := storage.NewS3(cfg)
			if err != nil {
				t.Fatal(err)
			}
			err = s.EnsureBucket(t.Context())
			if err == nil || errors.Is(err, storage.ErrLifecycleUnsupported) ||
				!strings.Contains(err.Error(), `"`+cfg.Bucket+`"`) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("EnsureBucket = %v, want an error naming the bucket, with %q", err, tc.want)
			}
			if tc.name != "TooLong" && !strings.Contains(fmt.Sprint(err), "by hand") {
				t.Errorf("EnsureBucket = %v, want it to say which rules to add by hand", err)
			}
			if n := puts.Load(); n != 0 {
				t.Errorf("%d lifecycle configurations sent", n)
			}
		})
	}
}

// Without Object Lock, EnsureBucket installs no lifecycle rules.
func TestS3LifecycleNeedsObjectLock(t *testing.T) {
	cfg := storagetest.S3Env(t)
	cfg.Bucket = newBucketName(t, cfg, "evx-lc-plain-")
	s, err := storage.NewS3(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.EnsureBucket(t.Context()); err != nil {
		t.Fatal(err)
	}
	_, err = storagetest.AdminClient(t, cfg).GetBucketLifecycle(t.Context(), cfg.Bucket)
	if code := minio.ToErrorResponse(err).Code; code != "NoSuchLifecycleConfiguration" {
		t.Errorf("lifecycle of a bucket without Object Lock: %v, want none", err)
	}
}

func TestS3LifecycleConfig(t *testing.T) {
	ok := storage.S3Config{Endpoint: "127.0.0.1:9000", Bucket: "b", AccessKey: "a", SecretKey: "s", ObjectLock: true}
	for _, days := range []int{0, 1, 30, 36500} {
		cfg := ok
		cfg.NoncurrentExpiryDays = days
		if _, err := storage.NewS3(cfg); err != nil {
			t.Errorf("NewS3 with %d noncurrent days: %v", days, err)
		}
	}
	for _, tc := range []struct {
		days int
		lock bool
		want string
	}{
		{-1, true, "-1 days"},
		{36501, true, "36501 days"},
		{7, false, "object lock is off"},
	} {
		cfg := ok
		cfg.NoncurrentExpiryDays, cfg.ObjectLock = tc.days, tc.lock
		if _, err := storage.NewS3(cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewS3 with %d noncurrent days, object lock %t = %v, want an error mentioning %q", tc.days, tc.lock, err, tc.want)
		}
	}
}
