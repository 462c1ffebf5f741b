package gateway

import (
	"bytes"
	"context"
	"errors"
	"io"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"evx/api"
	"evx/client"
	"evx/crypto"
	"evx/internal/evxtest"
	"evx/storage"
	"evx/storage/storagetest"

	"go.uber.org/zap/zaptest/observer"
)

// crashStore is a Faulty store that calls onFault when an injected fault
// strikes a Create, before the failing call returns: the gateway is then
// stopped at the point of the simulated crash, and the test can look at
// what it serves.
type crashStore struct {
	*storagetest.FaultyLocker
	mu      sync.Mutex
	onFault func(key string)
}

func (c *crashStore) Create(ctx context.Context, key string, r io.Reader, size int64) error {
	return c.crashed(key, c.FaultyLocker.Create(ctx, key, r, size))
}

func (c *crashStore) CreateLocked(ctx context.Context, key string, r io.Reader, size int64, until time.Time) error {
	return c.crashed(key, c.FaultyLocker.CreateLocked(ctx, key, r, size, until))
}

// crashed calls onFault if err is an injected fault.
func (c *crashStore) crashed(key string, err error) error {
	if errors.Is(err, storagetest.ErrInjected) {
		c.mu.Lock()
		f := c.onFault
		c.mu.Unlock()
		if f != nil {
			f(key)
		}
	}
	return err
}

func (c *crashStore) setOnFault(f func(string)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.onFault = f
}

// crashView is what FR shows of a bundle at the moment of a crash.
type crashView struct {
	keys     []string // stored under inbox/<id>/
	listed   bool     // in the recipient's inbox listing
	entryErr error    // of GET /v1/inbox/<id>
	payload  []byte   // served by GET /v1/inbox/<id>/payload
	loadErr  error
}

// TestCrashSafety checks that a storage failure at any point of storing a
// bundle leaves no partial bundle listed or served, and that the sender's
// retry then delivers it.
func TestCrashSafety(t *testing.T) { forEachBackend(t, testCrashSafety) }

func testCrashSafety(t *testing.T, newStore func(testing.TB, string) storage.Backend) {
	stores := map[string]*crashStore{}
	tw := newTestWorld(t, func(t testing.TB, id string) storage.Backend {
		s := &crashStore{FaultyLocker: newFaulty(t, newStore(t, id))}
		stores[id] = s
		return s
	}, nil)
	tw.Start(t, "DE")
	tw.Start(t, "FR")
	ctx := context.Background()
	de, deKey := tw.Client("DE", "forensics")
	fr, frKey := tw.Client("FR", "prosecutor")
	to := []crypto.PublicKey{tw.recipientKey("FR", "prosecutor")}

	t.Run("receiving", func(t *testing.T) {
		// The payload's outer layer and its wrapped key are named by
		// the attempt: keysNow are patterns.
		const outer, wrapped = "payload-*.age", "key-*.wrapped"
		for _, tc := range []struct {
			name string
			file string // a prefix of the key
			when storagetest.When
			// listed says whether the bundle is complete, and so
			// listed, at the moment of the crash.
			listed  bool
			logged  string
			keysNow []string
		}{
			{"payload stored, then failure", "payload-", storagetest.AfterPersist, false, "storing payload", []string{outer}},
			{"record not stored", recordFile, storagetest.BeforePersist, false, "storing inbox record", []string{wrapped, outer}},
			{"record stored, then failure", recordFile, storagetest.AfterPersist, true, "storing inbox record", []string{wrapped, outer, recordFile}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				b := evxtest.Seal(t, deKey, to, 150_000)
				id := b.Env.BundleID
				views := make(chan crashView, 1)
				stores["FR"].setOnFault(func(string) {
					v := crashView{keys: storedKeys(t, stores["FR"].Faulty.Backend, inboxPrefix+id+"/")}
					for i, k := range v.keys {
						v.keys[i] = strings.TrimPrefix(k, inboxPrefix+id+"/")
					}
					list, err := fr.Inbox(ctx)
					if err != nil {
						t.Errorf("listing the inbox at the crash: %v", err)
					}
					v.listed = slices.ContainsFunc(list, func(e api.InboxEntry) bool { return e.BundleID == id })
					_, v.entryErr = fr.InboxEntry(ctx, id)
					var buf bytes.Buffer
					_, v.loadErr = fr.Download(ctx, id, &buf)
					v.payload = buf.Bytes()
					views <- v
				})
				defer stores["FR"].setOnFault(nil)
				stores["FR"].InjectUnder(storagetest.OpCreateLocked, key(inboxPrefix, id, tc.file), tc.when)
				if _, err := upload(ctx, de, b); err != nil {
					t.Fatal(err)
				}

				var v crashView
				select {
				case v = <-views:
				case <-time.After(30 * time.Second):
					t.Fatal("the injected fault did not strike")
				}
				if !slices.EqualFunc(v.keys, tc.keysNow, func(k, pattern string) bool {
					ok, _ := path.Match(pattern, k)
					return ok
				}) {
					t.Errorf("stored at the crash: %v, want %v", v.keys, tc.keysNow)
				}
				if tc.listed {
					// Complete before the failure: it may be listed,
					// but then whole.
					if !v.listed || v.entryErr != nil || v.loadErr != nil || !bytes.Equal(v.payload, b.Payload) {
						t.Errorf("at the crash: listed=%v, entry %v, download %v (%d bytes, intact %v); want the whole bundle",
							v.listed, v.entryErr, v.loadErr, len(v.payload), bytes.Equal(v.payload, b.Payload))
					}
				} else {
					if v.listed {
						t.Error("a partial bundle is listed in the inbox")
					}
					if !isAPIError(v.entryErr, 404, "not-found") {
						t.Errorf("inbox entry of a partial bundle: %v, want 404 not-found", v.entryErr)
					}
					if !isAPIError(v.loadErr, 404, "not-found") || len(v.payload) != 0 {
						t.Errorf("payload of a partial bundle: %d bytes, %v; want 404 not-found", len(v.payload), v.loadErr)
					}
				}

				// The sender retries, and the bundle arrives whole. FR
				// logged the failure before it refused the attempt, and
				// DE its retry before retrying.
				st, err := client.WaitDelivered(ctx, de, id, 30*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				wantLoggedMatch(t, tw.Logs["FR"], "the failure at FR", func(e observer.LoggedEntry) bool {
					return e.Message == tc.logged && e.ContextMap()["bundle"] == id
				})
				wantLoggedMatch(t, tw.Logs["DE"], "DE's retry", func(e observer.LoggedEntry) bool {
					return e.Message == "delivery failed; will retry" && e.ContextMap()["bundle"] == id
				})
				var rec inboxRecord
				if err := getJSON(ctx, tw.Stores["FR"], key(inboxPrefix, id, recordFile), &rec); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(st.Receipt.Body, rec.Receipt.Body) {
					t.Errorf("DE holds receipt %s, FR issued %s", st.Receipt.Body, rec.Receipt.Body)
				}
				pulled(t, fr, frKey, b)
				if n := stores["FR"].Pending(); n != 0 {
					t.Errorf("%d injected faults did not strike", n)
				}
			})
		}
	})

	t.Run("submitting", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			op   storagetest.Op
			file string
			when storagetest.When
		}{
			// The sender's copy of the payload is not locked: it is
			// removed after delivery; the record is.
			{"payload stored, then failure", storagetest.OpCreate, payloadFile, storagetest.AfterPersist},
			{"record not stored", storagetest.OpCreateLocked, recordFile, storagetest.BeforePersist},
			{"record stored, then failure", storagetest.OpCreateLocked, recordFile, storagetest.AfterPersist},
		} {
			t.Run(tc.name, func(t *testing.T) {
				b := evxtest.Seal(t, deKey, to, 150_000)
				id := b.Env.BundleID
				stores["DE"].Inject(tc.op, key(outboxPrefix, id, tc.file), tc.when)
				_, err := upload(ctx, de, b)
				if !isAPIError(err, 500, "internal") {
					t.Fatalf("upload = %v, want 500 internal", err)
				}
				// Logged before the answer.
				wantLoggedMatch(t, tw.Logs["DE"], "the failed upload", func(e observer.LoggedEntry) bool {
					return e.Message == "request failed" && e.ContextMap()["path"] == "/v1/bundles"
				})
				// The submitter does not know whether the bundle was
				// taken, and uploads it again: either way it is
				// delivered once.
				if _, err := upload(ctx, de, b); err != nil && !isAPIError(err, 409, "duplicate") {
					t.Fatalf("upload again = %v", err)
				}
				if _, err := client.WaitDelivered(ctx, de, id, 30*time.Second); err != nil {
					t.Fatal(err)
				}
				pulled(t, fr, frKey, b)
			})
		}
	})
}

// pulled checks that the recipient pulls b whole.
func pulled(t *testing.T, c *client.Client, k *crypto.UnitKey, b *evxtest.Bundle) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "out")
	res, err := client.Pull(context.Background(), c, k, b.Env.BundleID, out, "", nil)
	if err != nil {
		t.Fatalf("pulling %s: %v", b.Env.BundleID, err)
	}
	if !res.Open.PayloadVerified || res.Open.Envelope.PayloadSHA256 != b.Env.PayloadSHA256 {
		t.Errorf("pulled bundle: verified %v, payload hash matches %v", res.Open.PayloadVerified, res.Open.Envelope.PayloadSHA256 == b.Env.PayloadSHA256)
	}
}
