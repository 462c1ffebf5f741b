package gateway

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"evx/audit"
	"evx/client"
	"evx/crypto"
	"evx/internal/evxtest"
	"evx/storage"
)

func TestTransferLogEntriesDisk(t *testing.T) { testTransferLogEntries(t, diskStore) }
func TestTransferLogEntriesS3(t *testing.T)   { testTransferLogEntries(t, s3Store) }

// A push and a pull, direct and queued, write exactly the expected entries
// in both gateways' transfer logs, each durable when its action was
// acknowledged; no entry and no log line holds a file name or any of the
// plaintext.
func testTransferLogEntries(t *testing.T, newStore func(testing.TB, string) storage.Backend) {
	tw := startWorld(t, newStore)
	ctx := context.Background()
	de, deKey := tw.Client("DE", "forensics")
	fr, frKey := tw.Client("FR", "prosecutor")

	// Evidence whose name and content are easy to look for.
	const name, content = "witness-statement-Kowalski.txt", "The plaintext of the evidence: account 4711-0815."
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	files, err := crypto.CollectFiles([]string{filepath.Join(dir, name)})
	if err != nil {
		t.Fatal(err)
	}
	push := func(wait time.Duration) *client.PushResult {
		t.Helper()
		res, err := client.Push(ctx, de, client.PushRequest{Key: deKey, To: []string{"FR/prosecutor"}, Files: files,
			Seal: evxtest.SealOptions(), TempDir: t.TempDir(), Wait: wait})
		if err != nil {
			t.Fatal(err)
		}
		if wait == 0 {
			if _, err := client.WaitDelivered(ctx, de, res.Envelope.BundleID, 30*time.Second); err != nil {
				t.Fatal(err)
			}
		}
		return res
	}
	direct, queued := push(20*time.Second), push(0)
	for _, res := range []*client.PushResult{direct, queued} {
		if _, err := client.Pull(ctx, fr, frKey, res.Envelope.BundleID, filepath.Join(t.TempDir(), "out"), "", nil); err != nil {
			t.Fatal(err)
		}
	}
	// A refused upload is recorded too: the same bundle again.
	b := evxtest.Seal(t, deKey, []crypto.PublicKey{tw.recipientKey("FR", "prosecutor")}, 1000)
	if _, err := upload(ctx, de, b); err != nil {
		t.Fatal(err)
	}
	if _, err := upload(ctx, de, b); !isAPIError(err, 409, "duplicate") {
		t.Fatalf("second upload: %v, want 409 duplicate", err)
	}
	// Its delivery is queued: the entries of both sides are there once
	// it is delivered.
	if _, err := client.WaitDelivered(ctx, de, b.Env.BundleID, 30*time.Second); err != nil {
		t.Fatal(err)
	}

	// Every event was recorded before it was acknowledged, so the entries
	// are there now; integration into a checkpoint follows within 1 s.
	entries := func(id string) []*audit.Entry {
		t.Helper()
		out := logEntries(t, tw.gw(id))
		for i, e := range out {
			// ParseEntry took only the canonical form: this is the
			// entry's bytes.
			data, err := e.MarshalCanonical()
			if err != nil {
				t.Fatal(err)
			}
			for _, secret := range []string{name, "witness-statement", content, "4711-0815"} {
				if bytes.Contains(data, []byte(secret)) {
					t.Errorf("%s's entry %d holds %q: %s", id, i, secret, data)
				}
			}
		}
		return out
	}
	events := func(list []*audit.Entry, bundle string) []string {
		var evs []string
		for _, e := range list {
			if e.BundleID == bundle || bundle == "" && e.BundleID == "" {
				evs = append(evs, fmt.Sprintf("%s %s %s", e.Event, e.Actor, e.Code))
			}
		}
		return evs
	}
	deLog, frLog := entries("DE"), entries("FR")
	for _, tc := range []struct {
		country string
		log     []*audit.Entry
		bundle  string
		want    []string
	}{
		{"DE", deLog, "", []string{"gateway-started gateway "}},
		// The agreement decides each upload before anything is stored or
		// sent, and each queued bundle again when it is delivered; a
		// duplicate is refused before it is decided.
		{"DE", deLog, direct.Envelope.BundleID, []string{"agreement-decision unit:DE/forensics allowed", "offer-sent gateway ", "upload-accepted unit:DE/forensics ", "delivered peer:FR "}},
		{"DE", deLog, queued.Envelope.BundleID, []string{"agreement-decision unit:DE/forensics allowed", "upload-accepted unit:DE/forensics ", "agreement-decision gateway allowed", "offer-sent gateway ", "delivered peer:FR "}},
		{"DE", deLog, b.Env.BundleID, []string{"agreement-decision unit:DE/forensics allowed", "upload-accepted unit:DE/forensics ", "upload-refused unit:DE/forensics duplicate", "agreement-decision gateway allowed", "offer-sent gateway ", "delivered peer:FR "}},
		{"FR", frLog, "", []string{"gateway-started gateway "}},
		{"FR", frLog, direct.Envelope.BundleID, []string{"agreement-decision peer:DE allowed", "offer-accepted peer:DE ", "receipt-issued peer:DE ", "payload-downloaded unit:FR/prosecutor ", "retrieval-acknowledged unit:FR/prosecutor "}},
		{"FR", frLog, queued.Envelope.BundleID, []string{"agreement-decision peer:DE allowed", "offer-accepted peer:DE ", "receipt-issued peer:DE ", "payload-downloaded unit:FR/prosecutor ", "retrieval-acknowledged unit:FR/prosecutor "}},
		{"FR", frLog, b.Env.BundleID, []string{"agreement-decision peer:DE allowed", "offer-accepted peer:DE ", "receipt-issued peer:DE "}},
	} {
		got := events(tc.log, tc.bundle)
		if tc.bundle == b.Env.BundleID {
			// The queued delivery of b runs beside its second upload:
			// compare as sets.
			slices.Sort(got)
			slices.Sort(tc.want)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s's entries about bundle %q:\n got %q\nwant %q", tc.country, tc.bundle, got, tc.want)
		}
	}

	// The delivered entry holds the receipt, which points back to FR's
	// receipt-issued entry.
	for _, e := range deLog {
		if e.Event != audit.EventDelivered || e.BundleID != direct.Envelope.BundleID {
			continue
		}
		r, err := crypto.VerifyReceipt(e.Receipt, crypto.FormatSigningKey(tw.Dev.Country("FR").Signing.SigningPublicKey()))
		if err != nil || r.Log == nil {
			t.Fatalf("receipt in DE's delivered entry: %+v, %v", r, err)
		}
		issued := frLog[r.Log.LeafIndex]
		if issued.Event != audit.EventReceiptIssued || issued.BundleID != direct.Envelope.BundleID {
			t.Errorf("the receipt points to FR's entry %d, %+v; want its receipt-issued entry", r.Log.LeafIndex, issued)
		}
	}

	// Nor does the gateways' own logging quote the evidence.
	for id, logs := range tw.Logs {
		for _, e := range logs.All() {
			line := fmt.Sprint(e.Message, e.ContextMap())
			for _, secret := range []string{name, content} {
				if bytes.Contains([]byte(line), []byte(secret)) {
					t.Errorf("%s logged %q: %s", id, secret, line)
				}
			}
		}
	}
}
