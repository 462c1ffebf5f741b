package gateway

import (
	"context"
	"testing"
	"time"

	"evx/api"
	"evx/crypto"
	"evx/internal/evxtest"
)

// A status request with ?wait= for a queued bundle is answered when the
// delivery ends, not before, or when the wait is over, or when the gateway
// shuts down; a bad wait is refused.
func TestOutboxStatusWait(t *testing.T) {
	// waiting gets the bundle id of each status request at DE that starts
	// waiting.
	waiting := make(chan string, 100)
	tw := newTestWorld(t, diskStore, func(id string, o *Options) {
		if id == "DE" {
			o.onStatusWait = func(id string) {
				select {
				case waiting <- id:
				default:
				}
			}
		}
	})
	tw.Start(t, "DE")
	tw.Start(t, "FR")
	ctx := context.Background()
	de, deKey := tw.Client("DE", "forensics")
	// DE keeps FR's directory, so that its units can submit while FR is down.
	if _, err := de.Lookup(ctx, "FR/prosecutor"); err != nil {
		t.Fatal(err)
	}
	to := []crypto.PublicKey{tw.recipientKey("FR", "prosecutor")}
	tw.Stop(t, "FR")

	type answer struct {
		st  *api.OutboxStatus
		err error
	}
	waitFor := func(id string, wait time.Duration) <-chan answer {
		ch := make(chan answer, 1)
		go func() {
			st, err := de.OutboxStatusWait(ctx, id, wait)
			ch <- answer{st, err}
		}()
		return ch
	}
	// untilWaiting returns once a status request for id waits at DE.
	untilWaiting := func(id string) {
		t.Helper()
		timeout := time.After(30 * time.Second)
		for {
			select {
			case w := <-waiting:
				if w == id {
					return
				}
			case <-timeout:
				t.Fatalf("no status request for %s waiting at DE after 30 s", id)
			}
		}
	}

	b := evxtest.Seal(t, deKey, to, 10_000)
	if _, err := upload(ctx, de, b); err != nil {
		t.Fatal(err)
	}
	id := b.Env.BundleID
	if st, err := de.OutboxStatusWait(ctx, id, 20*time.Millisecond); err != nil || st.State != "queued" {
		t.Fatalf("status after a short wait with FR down = %+v, %v; want queued", st, err)
	}
	for _, bad := range []string{"soon", "-1s", "2m"} {
		status, code := tw.rawGet(t, "DE", "forensics", "/v1/outbox/"+id+"?wait="+bad)
		if status != 400 || code != api.CodeBadWait {
			t.Errorf("wait=%s: %d %s, want 400 bad-wait", bad, status, code)
		}
	}

	// Asked while FR is down, answered once FR is back and has the bundle.
	// The short wait above has been answered, so what it signalled is
	// all there is to drop.
	for len(waiting) > 0 {
		<-waiting
	}
	got := waitFor(id, time.Minute)
	untilWaiting(id)
	tw.Start(t, "FR")
	if a := <-got; a.err != nil || a.st.State != "delivered" || a.st.Receipt == nil {
		t.Fatalf("waiting status = %+v, %v; want delivered with a receipt", a.st, a.err)
	}

	// A gateway shutting down answers waiting requests at once: its
	// shutdown does not wait for them.
	tw.Stop(t, "FR")
	b2 := evxtest.Seal(t, deKey, to, 10_000)
	if _, err := upload(ctx, de, b2); err != nil {
		t.Fatal(err)
	}
	got = waitFor(b2.Env.BundleID, time.Minute)
	untilWaiting(b2.Env.BundleID)
	tw.Stop(t, "DE") // reports an error if Run's shutdown timed out
	if a := <-got; a.err != nil || a.st.State != "queued" {
		t.Fatalf("status waiting while DE shut down = %+v, %v; want queued", a.st, a.err)
	}
}
