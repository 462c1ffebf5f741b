package gateway

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"evx/api"
	"evx/client"
	"evx/crypto"
	"evx/storage"
	"evx/transfer"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// sealedBundle is a bundle sealed in a test, taken apart as the API and the
// peer protocol carry it.
type sealedBundle struct {
	env     *crypto.Envelope
	envJSON []byte
	sig     []byte
	payload []byte
}

// seal seals size bytes of evidence from sender to recipients.
func seal(t *testing.T, sender *crypto.UnitKey, recipients []crypto.PublicKey, size int) *sealedBundle {
	t.Helper()
	opts := sealOpts()
	opts.Sender, opts.Recipients = sender, recipients
	var buf bytes.Buffer
	env, err := crypto.Seal(context.Background(), &buf, evidence(t, size), opts)
	if err != nil {
		t.Fatal(err)
	}
	b, err := crypto.ReadBundle(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	payload, err := io.ReadAll(b.Payload())
	if err != nil {
		t.Fatal(err)
	}
	return &sealedBundle{env: env, envJSON: b.EnvelopeJSON, sig: b.Signature, payload: payload}
}

// recipientKey returns the public key of a DevWorld user, as sealed to.
func (tw *testWorld) recipientKey(country, user string) crypto.PublicKey {
	u := tw.world.Country(country).User(user)
	return crypto.PublicKey{Unit: u.Unit, AgeRecipient: u.Key.Public().AgeRecipient}
}

// resign changes a sealed bundle's envelope with edit and signs the result
// with key, as a sender with that key could.
func resign(t *testing.T, b *sealedBundle, key *crypto.UnitKey, edit func(*crypto.Envelope)) *sealedBundle {
	t.Helper()
	env := *b.env
	edit(&env)
	envJSON, err := env.MarshalCanonical()
	if err != nil {
		t.Fatal(err)
	}
	sig := ed25519.Sign(signingSecret(t, key), crypto.SignedMessage(envJSON))
	return &sealedBundle{env: &env, envJSON: envJSON, sig: sig, payload: b.payload}
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
func (b *sealedBundle) upload(ctx context.Context, c *client.Client) (*api.OutboxStatus, error) {
	return b.uploadMode(ctx, c, api.Queue)
}

func (b *sealedBundle) uploadMode(ctx context.Context, c *client.Client, mode api.DeliveryMode) (*api.OutboxStatus, error) {
	return c.Upload(ctx, b.envJSON, b.sig, bytes.NewReader(b.payload), int64(len(b.payload)), mode)
}

// peerClient returns a transfer client presenting from's gateway
// certificate, and the peer to for it, as from's gateway would dial it.
func (tw *testWorld) peerClient(t *testing.T, from, to string) (*transfer.Client, transfer.Peer) {
	t.Helper()
	c := transfer.NewClient(from, tw.world.Country(from).Cert, zap.NewNop())
	t.Cleanup(func() { c.Close() })
	return c, tw.world.Peer(to, tw.addrs[to])
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
	return infos
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
// logged, and returns it. It takes every entry logged so far out of logs,
// so that the next check sees only what was logged after this one: an
// earlier refusal with the same code cannot stand in for a missing one.
func wantLogged(t *testing.T, logs *observer.ObservedLogs, msg, code string) observer.LoggedEntry {
	t.Helper()
	// Refusals are logged before the answer is sent, but a peer's log
	// call and the rejection frame it sends race by a moment.
	deadline := time.Now().Add(5 * time.Second)
	var seen []observer.LoggedEntry
	for {
		seen = append(seen, logs.TakeAll()...)
		for i := len(seen) - 1; i >= 0; i-- {
			e := seen[i]
			if e.Message == msg && e.ContextMap()["code"] == code {
				return e
			}
		}
		if time.Now().After(deadline) {
			var b strings.Builder
			for _, e := range seen {
				fmt.Fprintf(&b, "  %s %s %v\n", e.LoggerName, e.Message, e.ContextMap())
			}
			t.Errorf("no log entry %q with code %q; logged since the previous check:\n%s", msg, code, b.String())
			return observer.LoggedEntry{}
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func dumpLogs(logs *observer.ObservedLogs) string {
	var b strings.Builder
	for _, e := range logs.All() {
		fmt.Fprintf(&b, "  %s %s %v\n", e.LoggerName, e.Message, e.ContextMap())
	}
	return b.String()
}
