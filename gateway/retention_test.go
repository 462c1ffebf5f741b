package gateway

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"evx/api"
	"evx/audit"
	"evx/client"
	"evx/crypto"
	"evx/internal/evxtest"
	"evx/storage"
	"evx/storage/storagetest"

	"filippo.io/age"
	"github.com/minio/minio-go/v7"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// reapHooks collects what the reapers of a world report.
type reapHooks struct {
	reaped   map[string]chan reapResult
	shredded map[string]chan string
}

func newReapHooks() *reapHooks {
	return &reapHooks{
		reaped:   map[string]chan reapResult{"DE": make(chan reapResult, 256), "FR": make(chan reapResult, 256)},
		shredded: map[string]chan string{"DE": make(chan string, 256), "FR": make(chan string, 256)},
	}
}

func (h *reapHooks) install(id string, o *Options) {
	o.onReaped = func(r reapResult) {
		select {
		case h.reaped[id] <- r:
		default:
		}
	}
	o.onShredded = func(bundle string) { h.shredded[id] <- bundle }
}

// runReaper wakes gw's reaper and returns what its next run did.
func (h *reapHooks) runReaper(t *testing.T, tw *testWorld, gw string) reapResult {
	t.Helper()
	for len(h.reaped[gw]) > 0 {
		<-h.reaped[gw]
	}
	tw.gw(gw).reaperWake()
	select {
	case r := <-h.reaped[gw]:
		return r
	case <-time.After(30 * time.Second):
		t.Fatalf("%s's reaper did not run", gw)
		return reapResult{}
	}
}

// waitReaped waits, run after run of gw's reaper, until done holds.
func (h *reapHooks) waitReaped(t *testing.T, gw, what string, done func(reapResult) bool) {
	t.Helper()
	deadline := time.After(60 * time.Second)
	for {
		select {
		case r := <-h.reaped[gw]:
			if done(r) {
				return
			}
		case <-deadline:
			t.Fatalf("%s's reaper: %s did not happen", gw, what)
		}
	}
}

// retainedBundle seals size bytes from DE/forensics to FR/prosecutor whose
// retention ends at until.
func retainedBundle(t *testing.T, tw *testWorld, until time.Time, size int) *evxtest.Bundle {
	t.Helper()
	_, deKey := tw.Client("DE", "forensics")
	b := evxtest.Seal(t, deKey, []crypto.PublicKey{tw.recipientKey("FR", "prosecutor")}, size)
	return resign(t, b, deKey, func(env *crypto.Envelope) { env.RetainUntil = until.Truncate(time.Second) })
}

// events returns the events of id's entries in g's log, in order.
func events(t *testing.T, g *Gateway, id string) []audit.Event {
	t.Helper()
	var evs []audit.Event
	for _, e := range logEntries(t, g) {
		if e.BundleID == id {
			evs = append(evs, e.Event)
		}
	}
	return evs
}

func hasEvents(have []audit.Event, want ...audit.Event) bool {
	i := 0
	for _, e := range have {
		if i < len(want) && e == want[i] {
			i++
		}
	}
	return i == len(want)
}

// retentionBackends are the backends of the tests of expiry in real time:
// on S3 in COMPLIANCE mode, as in production, with a way to see every
// version in the bucket past the backend.
type retentionBackend struct {
	name  string
	store func(tb testing.TB, id string) storage.Backend
	// versions lists the keys of every version under prefix, read past
	// the backend; nil for disk, where List tells.
	versions func(t *testing.T, id, prefix string) []minio.ObjectInfo
	admin    func(t *testing.T, id string) (*minio.Client, string)
}

func retentionBackends() []retentionBackend {
	cfgs := map[string]storage.S3Config{}
	s3 := retentionBackend{name: "S3"}
	s3.store = func(tb testing.TB, id string) storage.Backend {
		cfg := storagetest.S3Env(tb)
		cfg.Bucket = storagetest.NewLockBucket(tb, cfg, "evx-ret-")
		cfg.ObjectLock, cfg.LockMode = true, "COMPLIANCE"
		cfgs[id] = cfg
		s, err := storage.NewS3(cfg)
		if err != nil {
			tb.Fatal(err)
		}
		return s
	}
	s3.admin = func(t *testing.T, id string) (*minio.Client, string) {
		return storagetest.AdminClient(t, cfgs[id]), cfgs[id].Bucket
	}
	s3.versions = func(t *testing.T, id, prefix string) []minio.ObjectInfo {
		c, bucket := s3.admin(t, id)
		return storagetest.ObjectVersions(t, c, bucket, prefix)
	}
	return []retentionBackend{{name: "Disk", store: diskStore}, s3}
}

// TestRetentionExpiry follows a bundle whose retention ends a few seconds
// after it is sent, in real time, on disk and on S3 in COMPLIANCE mode:
// before, its locked objects cannot be deleted, even by a direct request
// to the storage; at retain-until, reads are refused as expired and the
// reaper destroys the payload's key, after which a copy of the payload
// taken before cannot be decrypted, even with the recipient's key; then
// every version of every object of the bundle is gone, at both gateways
// (the sender's copy of the payload went after its grace), and both logs
// hold each step.
func TestRetentionExpiry(t *testing.T) {
	for _, b := range retentionBackends() {
		t.Run(b.name, func(t *testing.T) { testRetentionExpiry(t, b) })
	}
}

func testRetentionExpiry(t *testing.T, rb retentionBackend) {
	hooks := newReapHooks()
	tw := newTestWorld(t, rb.store, func(id string, o *Options) {
		hooks.install(id, o)
		o.ReaperInterval = 200 * time.Millisecond
	})
	tw.Start(t, "DE")
	tw.Start(t, "FR")
	ctx := t.Context()
	de, _ := tw.Client("DE", "forensics")
	fr, frKey := tw.Client("FR", "prosecutor")
	until := time.Now().Add(8 * time.Second)
	b := retainedBundle(t, tw, until, 100_000)
	until = b.Env.RetainUntil
	id := b.Env.BundleID
	if _, err := upload(ctx, de, b); err != nil {
		t.Fatal(err)
	}
	if _, err := client.WaitDelivered(ctx, de, id, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	e, err := fr.InboxEntry(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if e.Retention.State != api.RetentionKept || !e.Retention.Until.Equal(until) {
		t.Errorf("retention before expiry: %+v, want kept until %v", e.Retention, until)
	}
	pulled(t, fr, frKey, b)

	// The stored payload is the outer layer: a copy of it opens for
	// nobody, the recipient included.
	var rec inboxRecord
	if err := getJSON(ctx, tw.Stores["FR"], key(inboxPrefix, id, recordFile), &rec); err != nil {
		t.Fatal(err)
	}
	payloadKey := key(inboxPrefix, id, rec.Outer.Payload)
	obj, err := tw.Stores["FR"].Open(ctx, payloadKey)
	if err != nil {
		t.Fatal(err)
	}
	stolen, err := io.ReadAll(obj)
	obj.Close()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(stolen, b.Payload[:64]) {
		t.Error("the stored payload holds the sealed bundle as sent")
	}
	if _, err := age.Decrypt(bytes.NewReader(stolen), frKey.Identity()); err == nil {
		t.Error("the recipient's key opens the stored outer layer")
	}

	// Before retain-until nothing can be deleted: not through the
	// gateway's storage, nor by a direct request for the version.
	if err := tw.Stores["FR"].Delete(ctx, payloadKey); !errors.Is(err, storage.ErrLocked) {
		t.Errorf("deleting the payload before its retain-until: %v, want locked", err)
	}
	if err := tw.Stores["FR"].Delete(ctx, key(inboxPrefix, id, recordFile)); !errors.Is(err, storage.ErrLocked) {
		t.Errorf("deleting the record before its retain-until: %v, want locked", err)
	}
	if rb.admin != nil {
		c, bucket := rb.admin(t, "FR")
		vs := rb.versions(t, "FR", payloadKey)
		if len(vs) != 1 {
			t.Fatalf("%d versions of the payload, want 1", len(vs))
		}
		if err := c.RemoveObject(ctx, bucket, payloadKey, minio.RemoveObjectOptions{VersionID: vs[0].VersionID}); err == nil {
			t.Error("the storage deleted a locked version of the payload before its retain-until")
		}
	}

	// The sender's copy of the payload goes after its grace (none
	// here); its record and the receipt stay.
	hooks.waitReaped(t, "DE", "the sender's copy removed", func(r reapResult) bool { return r.Done[dueSent] > 0 })
	for _, f := range []string{recordFile, receiptFile} {
		if _, err := tw.Stores["DE"].Stat(ctx, key(outboxPrefix, id, f)); err != nil {
			t.Errorf("DE's %s after the sender's copy went: %v", f, err)
		}
	}
	if _, err := tw.Stores["DE"].Stat(ctx, key(outboxPrefix, id, payloadFile)); !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("DE's copy of the payload after its grace: %v, want it gone", err)
	}
	if st, err := de.OutboxStatus(ctx, id); err != nil || st.State != api.StateDelivered {
		t.Errorf("outbox status after the sender's copy went: %+v, %v", st, err)
	}

	// At retain-until: the key is destroyed, reads are refused.
	select {
	case got := <-hooks.shredded["FR"]:
		if got != id {
			t.Fatalf("shredded %s, want %s", got, id)
		}
	case <-time.After(time.Until(until) + 30*time.Second):
		t.Fatal("the payload's key was not destroyed after retain-until")
	}
	if now := time.Now(); now.Before(until) {
		t.Fatalf("the key was destroyed at %v, before retain-until %v", now, until)
	}
	// The reaper may have purged it already (TestRetentionRefusals
	// reads it in between).
	var buf bytes.Buffer
	if _, err := fr.Download(ctx, id, &buf); !isAPIError(err, 410, "expired") && !isAPIError(err, 404, "not-found") || buf.Len() != 0 {
		t.Errorf("download after expiry: %v (%d bytes), want 410 expired (or 404 once purged)", err, buf.Len())
	}
	if _, err := fr.InboxEntry(ctx, id); !isAPIError(err, 410, "expired") && !isAPIError(err, 404, "not-found") {
		t.Errorf("inbox entry after expiry: %v, want 410 expired (or 404 once purged)", err)
	}
	if err := fr.Ack(ctx, id); !isAPIError(err, 410, "expired") && !isAPIError(err, 404, "not-found") {
		t.Errorf("acknowledgement after expiry: %v, want 410 expired (or 404 once purged)", err)
	}

	// Then every version of every object goes, at both ends.
	hooks.waitReaped(t, "FR", "the bundle purged", func(r reapResult) bool { return r.Done[dueInbox] > 0 })
	hooks.waitReaped(t, "DE", "the outbox purged", func(r reapResult) bool { return r.Done[dueOutbox] > 0 })
	for _, gw := range []string{"DE", "FR"} {
		for _, prefix := range []string{inboxPrefix + id + "/", outboxPrefix + id + "/", duePrefix} {
			wantKeys(t, tw.Stores[gw], prefix)
			if rb.versions != nil {
				if vs := rb.versions(t, gw, prefix); len(vs) != 0 {
					t.Errorf("%s keeps %d versions under %s", gw, len(vs), prefix)
				}
			}
		}
	}
	if list, err := fr.Inbox(ctx); err != nil || len(list) != 0 {
		t.Errorf("inbox after the purge: %v, %v; want empty", list, err)
	}
	if _, err := fr.InboxEntry(ctx, id); !isAPIError(err, 404, "not-found") {
		t.Errorf("inbox entry after the purge: %v, want 404 not-found", err)
	}
	if evs := events(t, tw.gw("FR"), id); !hasEvents(evs, audit.EventReceiptIssued, audit.EventBundleExpired, audit.EventKeyShredded, audit.EventBundlePurged) {
		t.Errorf("FR's log of the bundle: %v", evs)
	}
	if evs := events(t, tw.gw("DE"), id); !hasEvents(evs, audit.EventDelivered, audit.EventOutboxPayloadDeleted, audit.EventOutboxPurged) {
		t.Errorf("DE's log of the bundle: %v", evs)
	}
	for _, e := range logEntries(t, tw.gw("FR")) {
		if e.BundleID == id && e.Event == audit.EventBundleExpired && !e.RetainUntil.Equal(until) {
			t.Errorf("bundle-expired records retain_until %v, want %v", e.RetainUntil, until)
		}
	}
}

// clockedWorld runs DE and FR on disk with one test clock for the gateways
// and their storage's locks, and reapers that run only at start and when a
// test wakes them.
func clockedWorld(t *testing.T, hooks *reapHooks, wrap func(id string, d *storage.Disk) storage.Backend) (*testWorld, *testClock) {
	t.Helper()
	clock := &testClock{now: time.Now().Truncate(time.Second)}
	tw := newTestWorld(t, func(tb testing.TB, id string) storage.Backend {
		d, err := storage.NewDiskWithClock(tb.TempDir(), clock.Now)
		if err != nil {
			tb.Fatal(err)
		}
		if wrap != nil {
			return wrap(id, d)
		}
		return d
	}, func(id string, o *Options) {
		hooks.install(id, o)
		o.Now = clock.Now
		o.ReaperInterval = time.Hour
	})
	tw.Start(t, "DE")
	tw.Start(t, "FR")
	return tw, clock
}

// sendRetained sends a bundle from DE to FR whose retention ends at until,
// and returns its id once delivered.
func sendRetained(t *testing.T, tw *testWorld, until time.Time) string {
	t.Helper()
	de, _ := tw.Client("DE", "forensics")
	b := retainedBundle(t, tw, until, 20_000)
	if _, err := upload(t.Context(), de, b); err != nil {
		t.Fatal(err)
	}
	if _, err := client.WaitDelivered(t.Context(), de, b.Env.BundleID, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	return b.Env.BundleID
}

// TestReaperAfterDowntime checks that a gateway down across a bundle's
// retain-until destroys its key and purges it at once when it starts.
func TestReaperAfterDowntime(t *testing.T) {
	hooks := newReapHooks()
	tw, clock := clockedWorld(t, hooks, nil)
	id := sendRetained(t, tw, clock.Now().Add(time.Hour))
	tw.Stop(t, "FR")
	clock.Add(3 * time.Hour)
	tw.Start(t, "FR")
	select {
	case got := <-hooks.shredded["FR"]:
		if got != id {
			t.Fatalf("shredded %s, want %s", got, id)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the reaper did not destroy the overdue bundle's key at start")
	}
	hooks.waitReaped(t, "FR", "the overdue bundle purged at start", func(r reapResult) bool { return r.Done[dueInbox] == 1 })
	wantKeys(t, tw.Stores["FR"], inboxPrefix+id+"/")
	if evs := events(t, tw.gw("FR"), id); !hasEvents(evs, audit.EventBundleExpired, audit.EventKeyShredded, audit.EventBundlePurged) {
		t.Errorf("FR's log of the bundle: %v", evs)
	}
}

// TestReaperRetriesFailedPurge checks that the reaper goes on when a purge
// fails: the failure is counted, the bundle stays unreadable, and the next
// run finishes it; other bundles are not held up.
func TestReaperRetriesFailedPurge(t *testing.T) {
	hooks := newReapHooks()
	faulty := map[string]*storagetest.FaultyLocker{}
	tw, clock := clockedWorld(t, hooks, func(id string, d *storage.Disk) storage.Backend {
		faulty[id] = storagetest.NewFaultyLocker(d)
		return faulty[id]
	})
	first := sendRetained(t, tw, clock.Now().Add(time.Hour))
	second := sendRetained(t, tw, clock.Now().Add(time.Hour))
	clock.Add(2 * time.Hour)
	faulty["FR"].InjectError(storagetest.OpPurge, key(inboxPrefix, first, recordFile), storagetest.BeforePersist, storage.ErrUnavailable)
	r := hooks.runReaper(t, tw, "FR")
	if r.Failed[dueInbox] != 1 || r.Done[dueInbox] != 1 || r.OldestOverdue.IsZero() {
		t.Fatalf("run with a failing purge: %+v, want one failed, one done, an overdue purge", r)
	}
	if n := testutil.ToFloat64(tw.gw("FR").metrics.purgeFailures.WithLabelValues(dueInbox, "storage")); n != 1 {
		t.Errorf("purge failures counted: %v, want 1", n)
	}
	fr, _ := tw.Client("FR", "prosecutor")
	var buf bytes.Buffer
	if _, err := fr.Download(t.Context(), first, &buf); !isAPIError(err, 410, "expired") {
		t.Errorf("download of the bundle whose purge failed: %v, want 410 expired", err)
	}
	wantKeys(t, tw.Stores["FR"], inboxPrefix+second+"/")
	r = hooks.runReaper(t, tw, "FR")
	if r.Done[dueInbox] != 1 || len(r.Failed) != 0 && r.Failed[dueInbox] != 0 || !r.OldestOverdue.IsZero() {
		t.Fatalf("the next run: %+v, want the failed purge done", r)
	}
	wantKeys(t, tw.Stores["FR"], inboxPrefix+first+"/")
}

// TestReaperNeverEarly is a property test: over random clock steps, random
// retentions and legal holds placed and released at random, the reaper
// never destroys a key or removes anything before retain-until or while a
// hold is placed, and after each of its runs nothing it may remove is left.
func TestReaperNeverEarly(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	hooks := newReapHooks()
	tw, clock := clockedWorld(t, hooks, nil)
	fr := tw.gw("FR")
	type bundle struct {
		id    string
		until time.Time
		held  bool
	}
	var bundles []*bundle
	for range 8 {
		until := clock.Now().Add(time.Duration(1+rng.IntN(72)) * time.Hour)
		bundles = append(bundles, &bundle{id: sendRetained(t, tw, until), until: until.Truncate(time.Second)})
	}
	ctx := t.Context()
	exists := func(k string) bool {
		_, err := tw.Stores["FR"].Stat(ctx, k)
		if err != nil && !errors.Is(err, storage.ErrNotExist) {
			t.Fatal(err)
		}
		return err == nil
	}
	for step := range 40 {
		clock.Add(time.Duration(rng.IntN(4*60)) * time.Minute)
		for _, b := range bundles {
			if !exists(key(inboxPrefix, b.id, recordFile)) {
				continue
			}
			switch p := rng.IntN(10); {
			case p < 2 && !b.held:
				if _, err := fr.PlaceHold(ctx, b.id, "proceedings pending", "Case 2026/1", "FR/operator"); err != nil {
					t.Fatal(err)
				}
				b.held = true
			case p < 4 && b.held:
				if _, err := fr.ReleaseHold(ctx, b.id, "proceedings closed", "FR/operator"); err != nil {
					t.Fatal(err)
				}
				b.held = false
			}
		}
		hooks.runReaper(t, tw, "FR")
		now := clock.Now()
		for _, b := range bundles {
			stored := exists(key(inboxPrefix, b.id, recordFile))
			due := !now.Before(b.until)
			switch {
			case stored && due && !b.held:
				t.Fatalf("step %d: bundle %s, due since %v and not held, is still stored at %v", step, b.id, b.until, now)
			case !stored && (!due || b.held):
				t.Fatalf("step %d: bundle %s (retain-until %v, held %v) was removed at %v", step, b.id, b.until, b.held, now)
			case stored:
				// Kept: its key too, so it is readable.
				var rec inboxRecord
				if err := getJSON(ctx, tw.Stores["FR"], key(inboxPrefix, b.id, recordFile), &rec); err != nil {
					t.Fatal(err)
				}
				if !exists(key(inboxPrefix, b.id, rec.Outer.Key)) {
					t.Fatalf("step %d: the key of bundle %s (retain-until %v, held %v) was destroyed at %v", step, b.id, b.until, b.held, now)
				}
			}
		}
	}
}

// TestRetentionRefusals checks the bundles the retention refuses: one whose
// retain-until has passed, at upload and at the receiver, and reads of an
// expired bundle before the reaper has run.
func TestRetentionRefusals(t *testing.T) {
	hooks := newReapHooks()
	tw, clock := clockedWorld(t, hooks, nil)
	ctx := t.Context()
	de, _ := tw.Client("DE", "forensics")
	past := retainedBundle(t, tw, clock.Now().Add(time.Second), 1000)
	if _, err := upload(ctx, de, past); !isAPIError(err, 410, "expired") || !strings.Contains(err.Error(), "has passed") {
		t.Errorf("upload of a bundle whose retention ends now: %v, want 410 expired", err)
	}
	if _, err := de.OutboxStatus(ctx, past.Env.BundleID); !isAPIError(err, 404, "not-found") {
		t.Errorf("outbox status after the refusal: %v, want 404 not-found", err)
	}
	wantKeys(t, tw.Stores["DE"], outboxPrefix+past.Env.BundleID+"/")

	id := sendRetained(t, tw, clock.Now().Add(time.Hour))
	clock.Add(time.Hour)
	// The reaper has not run: reads are refused all the same.
	fr, _ := tw.Client("FR", "prosecutor")
	var buf bytes.Buffer
	if _, err := fr.Download(ctx, id, &buf); !isAPIError(err, 410, "expired") || buf.Len() != 0 {
		t.Errorf("download at retain-until: %v, want 410 expired", err)
	}
	list, err := fr.Inbox(ctx)
	if err != nil || len(list) != 1 || list[0].Retention.State != api.RetentionExpired {
		t.Errorf("inbox at retain-until: %+v, %v; want the bundle, expired", list, err)
	}
	// A legal hold keeps it readable.
	if _, err := tw.gw("FR").PlaceHold(ctx, id, "proceedings pending", "Case 2026/2", "FR/operator"); err != nil {
		t.Fatal(err)
	}
	if _, err := fr.Download(ctx, id, &buf); err != nil {
		t.Errorf("download of a held bundle past retain-until: %v", err)
	}
	if r := hooks.runReaper(t, tw, "FR"); r.Held[dueInbox] != 1 {
		t.Errorf("reaper run over a held bundle: %+v, want it held", r)
	}
}
