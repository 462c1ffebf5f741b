package gateway

import (
	"context"
	"testing"

	"evx/crypto"
	"evx/internal/evxtest"
	"evx/storage"
	"evx/storage/storagetest"
)

// A storage outage is answered 503 storage-unavailable, which a client may
// retry, not 500 internal; once storage is back the same request succeeds.
func TestStorageUnavailable(t *testing.T) {
	stores := map[string]*storagetest.FaultyLocker{}
	tw := startWorld(t, func(t testing.TB, id string) storage.Backend {
		stores[id] = newFaulty(t, diskStore(t, id))
		return stores[id]
	})
	ctx := context.Background()
	de, deKey := tw.Client("DE", "forensics")
	fr, _ := tw.Client("FR", "prosecutor")

	stores["FR"].InjectError(storagetest.OpList, inboxPrefix, storagetest.BeforePersist, storage.ErrUnavailable)
	if _, err := fr.Inbox(ctx); !isAPIError(err, 503, "storage-unavailable") {
		t.Errorf("inbox with FR's storage down: %v, want 503 storage-unavailable", err)
	}
	if _, err := fr.Inbox(ctx); err != nil {
		t.Errorf("inbox once FR's storage is back: %v", err)
	}

	b := evxtest.Seal(t, deKey, []crypto.PublicKey{tw.recipientKey("FR", "prosecutor")}, 10_000)
	stores["DE"].InjectError(storagetest.OpCreate, key(outboxPrefix, b.Env.BundleID, payloadFile), storagetest.BeforePersist, storage.ErrUnavailable)
	if _, err := upload(ctx, de, b); !isAPIError(err, 503, "storage-unavailable") {
		t.Errorf("upload with DE's storage down: %v, want 503 storage-unavailable", err)
	}
	if _, err := upload(ctx, de, b); err != nil {
		t.Errorf("the same upload once DE's storage is back: %v", err)
	}
}
