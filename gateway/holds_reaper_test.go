package gateway

import (
	"path/filepath"
	"slices"
	"testing"
	"time"

	"evx/api"
	"evx/client"
	"evx/crypto"
	"evx/internal/evxtest"
	"evx/storage"
)

// reapResults passes each run of a gateway's reaper to the test.
type reapResults chan reapResult

// waitRun waits for a run of the reaper that ends with done true, and
// returns it; runs before it are dropped.
func (c reapResults) waitRun(t *testing.T, what string, done func(reapResult) bool) reapResult {
	t.Helper()
	timeout := time.NewTimer(30 * time.Second)
	defer timeout.Stop()
	for {
		select {
		case r := <-c:
			if done(r) {
				return r
			}
		case <-timeout.C:
			t.Fatalf("no run of the reaper %s within 30 s", what)
		}
	}
}

// A legal hold keeps a received bundle past its retention: the reaper
// skips it, run after run, and its recipient still reads it; once the hold
// is released, the next run shreds its key and purges it, and it reads as
// expired. On disk, whose locks follow the gateway's clock, moved on by
// the test.
func TestHoldBlocksReaper(t *testing.T) {
	clk := &clock{}
	runs := make(reapResults, 64)
	newStore := func(tb testing.TB, country string) storage.Backend {
		if country != "FR" {
			return diskStore(tb, country)
		}
		d, err := storage.NewDiskWithClock(tb.TempDir(), clk.now)
		if err != nil {
			tb.Fatal(err)
		}
		return d
	}
	tw := newTestWorld(t, newStore, func(id string, o *Options) {
		o.HoldUnits = []string{id + "/operator"}
		if id == "FR" {
			o.Now = clk.now
			// Runs come only at start and when the test wakes the
			// reaper.
			o.ReaperInterval = time.Hour
			o.onReaped = func(r reapResult) {
				select {
				case runs <- r:
				default: // a test that stopped reading
				}
			}
		}
	})
	tw.Start(t, "DE")
	tw.Start(t, "FR")
	ctx := t.Context()
	de, deKey := tw.Client("DE", "forensics")
	b := evxtest.Seal(t, deKey, []crypto.PublicKey{tw.recipientKey("FR", "prosecutor")}, 1000)
	id := b.Env.BundleID
	if _, err := upload(ctx, de, b); err != nil {
		t.Fatal(err)
	}
	if _, err := client.WaitDelivered(ctx, de, id, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	frOp, _ := tw.Client("FR", "operator")
	if _, err := frOp.PlaceHold(ctx, id, "preserve for the trial", "LG Berlin 12 O 34/26"); err != nil {
		t.Fatal(err)
	}
	g := tw.gw("FR")
	st := tw.Stores["FR"]
	before := storedKeys(t, st, inboxPrefix+id+"/")

	// Past its retention, twice over: the reaper finds it due and held,
	// and leaves everything in place.
	clk.advance(b.Env.RetainUntil.Sub(clk.now()) + time.Minute)
	for range 2 {
		g.reaperWake()
		runs.waitRun(t, "that finds the bundle held", func(r reapResult) bool { return r.Held[dueInbox] == 1 })
	}
	if after := storedKeys(t, st, inboxPrefix+id+"/"); !slices.Equal(before, after) {
		t.Fatalf("objects of the held bundle: %q, before the reaper ran %q", after, before)
	}
	fr, frKey := tw.Client("FR", "prosecutor")
	if _, err := client.Pull(ctx, fr, frKey, id, filepath.Join(t.TempDir(), "out"), "", nil); err != nil {
		t.Fatalf("pull of the held bundle past its retention: %v", err)
	}

	// Released: the next run shreds and purges it.
	if _, err := frOp.ReleaseHold(ctx, id, "judgment final"); err != nil {
		t.Fatal(err)
	}
	g.reaperWake()
	runs.waitRun(t, "that purges the bundle", func(r reapResult) bool { return r.Done[dueInbox] == 1 })
	if left := storedKeys(t, st, inboxPrefix+id+"/"); len(left) > 0 {
		t.Errorf("objects left of the released bundle: %q", left)
	}
	if _, err := fr.InboxEntry(ctx, id); !isAPIError(err, 410, string(api.CodeExpired)) && !isAPIError(err, 404, "not-found") {
		t.Errorf("reading the bundle after the release: %v, want 410 expired or 404 not-found", err)
	}
	if _, err := frOp.PlaceHold(ctx, id, "too late", "LG Berlin 12 O 34/26"); !isAPIError(err, 404, "not-found") {
		t.Errorf("hold of a purged bundle: %v, want 404 not-found", err)
	}
}

// A received bundle whose key the reaper has destroyed, but whose records
// its locks still keep (its retention was shortened, or the reaper is
// midway), cannot be held: it can no longer be read.
func TestHoldShreddedBundle(t *testing.T) {
	tw := newTestWorld(t, diskStore, func(id string, o *Options) { o.HoldUnits = []string{id + "/operator"} })
	tw.Start(t, "DE")
	tw.Start(t, "FR")
	ctx := t.Context()
	de, deKey := tw.Client("DE", "forensics")
	b := evxtest.Seal(t, deKey, []crypto.PublicKey{tw.recipientKey("FR", "prosecutor")}, 1000)
	id := b.Env.BundleID
	if _, err := upload(ctx, de, b); err != nil {
		t.Fatal(err)
	}
	if _, err := client.WaitDelivered(ctx, de, id, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	var rec inboxRecord
	if err := getJSON(ctx, tw.Stores["FR"], key(inboxPrefix, id, recordFile), &rec); err != nil {
		t.Fatal(err)
	}
	if rec.Outer == nil {
		t.Fatal("the payload was stored without an outer layer")
	}
	if err := locking(t, tw.Stores["FR"]).Purge(ctx, key(inboxPrefix, id, rec.Outer.Key)); err != nil {
		t.Fatal(err)
	}
	frOp, _ := tw.Client("FR", "operator")
	if _, err := frOp.PlaceHold(ctx, id, "preserve for the trial", "LG Berlin 12 O 34/26"); !isAPIError(err, 410, "expired") {
		t.Errorf("hold of a bundle whose key is destroyed: %v, want 410 expired", err)
	}
	if held, err := tw.gw("FR").isHeld(ctx, id); err != nil || held {
		t.Errorf("isHeld = %v, %v; want false", held, err)
	}
	// The sender's copy is not shredded: DE may still hold it.
	deOp, _ := tw.Client("DE", "operator")
	if _, err := deOp.PlaceHold(ctx, id, "the sender's copy", "case 2026-114"); err != nil {
		t.Fatal(err)
	}
}
