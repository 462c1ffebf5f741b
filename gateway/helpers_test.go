package gateway

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"testing"

	"evx/api"
	"evx/client"
	"evx/crypto"
	"evx/internal/evxtest"
	"evx/storage"

	"go.uber.org/zap/zaptest/observer"
)

// resign changes a sealed bundle's envelope with edit and signs the result
// with key, as a sender with that key could.
func resign(t *testing.T, b *evxtest.Bundle, key *crypto.UnitKey, edit func(*crypto.Envelope)) *evxtest.Bundle {
	t.Helper()
	env := *b.Env
	edit(&env)
	envJSON, err := env.MarshalCanonical()
	if err != nil {
		t.Fatal(err)
	}
	sig := ed25519.Sign(signingSecret(t, key), crypto.SignedMessage(envJSON))
	return &evxtest.Bundle{Env: &env, EnvJSON: envJSON, Sig: sig, Payload: b.Payload}
}

// signingSecret reads the Ed25519 key out of a unit key's file form, the
// only place the crypto package exposes it.
func signingSecret(t *testing.T, k *crypto.UnitKey) ed25519.PrivateKey {
	t.Helper()
	text, err := k.MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(text))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "# evx-signing-secret-key: ed25519:"); ok {
			seed, err := base64.RawURLEncoding.DecodeString(rest)
			if err != nil {
				t.Fatal(err)
			}
			return ed25519.NewKeyFromSeed(seed)
		}
	}
	t.Fatal("no signing secret key in the unit key file")
	return nil
}

// upload submits b to a gateway's API for store-and-forward delivery.
func upload(ctx context.Context, c *client.Client, b *evxtest.Bundle) (*api.OutboxStatus, error) {
	return uploadMode(ctx, c, b, api.Queue)
}

func uploadMode(ctx context.Context, c *client.Client, b *evxtest.Bundle, mode api.DeliveryMode) (*api.OutboxStatus, error) {
	return c.Upload(ctx, b.EnvJSON, b.Sig, bytes.NewReader(b.Payload), int64(len(b.Payload)), mode)
}

// storedKeys lists the keys under prefix in st, with their sizes.
func storedKeys(t *testing.T, st storage.Backend, prefix string) []string {
	t.Helper()
	infos, err := st.List(context.Background(), prefix)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, in := range infos {
		keys = append(keys, in.Key)
	}
	return keys
}

// objects describes everything stored in st, for comparing before and
// after a refusal: keys, sizes and modification times.
func objects(t *testing.T, st storage.Backend) []storage.Info {
	t.Helper()
	infos, err := st.List(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	// The transfer log grows with every event, refusals included, what
	// this gateway witnessed of its peers' logs changes whenever they
	// grow, and the inclusion checks of receipts end in the background:
	// the tests of the log, of witnessing and of inclusion check those;
	// the peers' agreement summaries are exchanged in the background too
	// (peerview.go).
	return slices.DeleteFunc(infos, func(in storage.Info) bool {
		return strings.HasPrefix(in.Key, "log/") || strings.HasPrefix(in.Key, witnessPrefix) ||
			strings.HasPrefix(in.Key, peerViewsPrefix) ||
			strings.HasSuffix(in.Key, "/"+includedFile) || strings.HasSuffix(in.Key, "/"+notIncludedFile)
	})
}

func wantUnchanged(t *testing.T, what string, before, after []storage.Info) {
	t.Helper()
	if !slices.EqualFunc(before, after, func(a, b storage.Info) bool {
		return a.Key == b.Key && a.Size == b.Size && a.Modified.Equal(b.Modified)
	}) {
		t.Errorf("%s changed:\nbefore %v\nafter  %v", what, before, after)
	}
}

// wantLogged checks that an entry with message msg and the given code was
// logged, and returns it. Call it once the entry must be there: a gateway
// logs a refusal before it answers, on its API and to a peer. It takes
// every entry logged so far out of logs, so that the next check sees only
// what was logged after this one: an earlier refusal with the same code
// cannot stand in for a missing one.
func wantLogged(t *testing.T, logs *observer.ObservedLogs, msg, code string) observer.LoggedEntry {
	t.Helper()
	seen := logs.TakeAll()
	for i := len(seen) - 1; i >= 0; i-- {
		if e := seen[i]; e.Message == msg && e.ContextMap()["code"] == code {
			return e
		}
	}
	var b strings.Builder
	for _, e := range seen {
		fmt.Fprintf(&b, "  %s %s %v\n", e.LoggerName, e.Message, e.ContextMap())
	}
	t.Errorf("no log entry %q with code %q; logged since the previous check:\n%s", msg, code, b.String())
	return observer.LoggedEntry{}
}

// wantLoggedMatch checks that an entry matching match, which what
// describes, was logged. Call it once the entry must be there.
func wantLoggedMatch(t *testing.T, logs *observer.ObservedLogs, what string, match func(observer.LoggedEntry) bool) {
	t.Helper()
	if logs.Filter(match).Len() == 0 {
		t.Errorf("%s was not logged; logged:\n%s", what, dumpLogs(logs))
	}
}

func dumpLogs(logs *observer.ObservedLogs) string {
	var b strings.Builder
	for _, e := range logs.All() {
		fmt.Fprintf(&b, "  %s %s %v\n", e.LoggerName, e.Message, e.ContextMap())
	}
	return b.String()
}
