package transfer

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"evx/crypto"

	"go.uber.org/zap"
)

// TestDeliveryCarriesTheLogPromise delivers a bundle and offers it again:
// both deliveries expose the log position of the peer's receipt.
func TestDeliveryCarriesTheLogPromise(t *testing.T) {
	w := newWorld(t)
	srv, _, _ := startFR(t, w)
	c := newTestClient(t, "DE", w.certDE)
	ctx := bounded(t)
	env, sig, payload := sealed(t, w.unitDE, w.recipientFR, 1000)
	want := testReceiptLog(mustEnvelope(t, env), 0)
	for _, duplicate := range []bool{false, true} {
		d, err := c.Send(ctx, w.peerFR(srv), env, sig, bytes.NewReader(payload))
		if err != nil {
			t.Fatal(err)
		}
		if d.Duplicate != duplicate || d.Log == nil || *d.Log != want {
			t.Errorf("delivery (duplicate %v) with log %+v, want %+v", d.Duplicate, d.Log, want)
		}
	}
}

// envelopeReceiver receipts every bundle it takes as if its envelope had
// been envJSON: the same id and payload under other legal metadata.
type envelopeReceiver struct {
	sign    *crypto.SigningKey
	envJSON []byte
}

func (e envelopeReceiver) Receive(ctx context.Context, peer string, o *Offer, accept func(int64) (io.Reader, error)) (*crypto.Signed, error) {
	r, err := accept(0)
	if err != nil {
		return nil, err
	}
	if _, err := io.Copy(io.Discard, r); err != nil {
		return nil, err
	}
	return otherEnvelopeReceipt(e.sign, o.Envelope, e.envJSON)
}

func (e envelopeReceiver) Directory(ctx context.Context, peer string) (*crypto.Signed, error) {
	return nil, Reject(CodeInternal, "no directory")
}

// otherEnvelopeReceipt returns key's receipt for env, but naming the
// SHA-256 of otherJSON as its envelope's.
func otherEnvelopeReceipt(key *crypto.SigningKey, env *crypto.Envelope, otherJSON []byte) (*crypto.Signed, error) {
	r, err := crypto.NewReceipt(env, "DE", "FR", time.Now(), testReceiptLog(env, 0))
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(otherJSON)
	r.EnvelopeSHA256 = hex.EncodeToString(sum[:])
	return key.SignReceipt(r)
}

// TestReceiptForAnotherEnvelope has FR receipt a bundle with the SHA-256 of
// another envelope, as for an earlier offer of the same id and payload
// under another purpose: the receipt is no proof of this delivery, whether
// it answers the offer as a duplicate or follows the payload.
func TestReceiptForAnotherEnvelope(t *testing.T) {
	w := newWorld(t)
	env, sig, payload := sealed(t, w.unitDE, w.recipientFR, 1000)
	// The envelope offered with one byte of its purpose changed: another
	// envelope with the same bundle id and payload.
	other := bytes.Replace(env, []byte(`"purpose":"`), []byte(`"purpose":"x`), 1)
	if bytes.Equal(other, env) {
		t.Fatal("the envelope has no purpose to change")
	}
	wantErr := func(t *testing.T, d *Delivery, err error) {
		t.Helper()
		var rej *Rejection
		if err == nil || errors.As(err, &rej) || !strings.Contains(err.Error(), "envelope SHA-256") {
			t.Errorf("delivery %+v, err = %v, want an error naming the envelope SHA-256", d, err)
		}
	}
	t.Run("duplicate", func(t *testing.T) {
		rc, err := otherEnvelopeReceipt(w.signFR, mustEnvelope(t, env), other)
		if err != nil {
			t.Fatal(err)
		}
		c := newTestClient(t, "DE", w.certDE)
		d, err := c.Send(bounded(t), hostileFR(t, w, receiptFrameBytes(t, rc, true)), env, sig, bytes.NewReader(payload))
		wantErr(t, d, err)
	})
	t.Run("after the payload", func(t *testing.T) {
		srv := serve(t, ServerConfig{ID: "FR", Certificate: w.certFR, PeerCAs: map[string]*x509.CertPool{"DE": w.poolDE},
			Receiver: envelopeReceiver{sign: w.signFR, envJSON: other}, Logger: zap.NewNop()})
		c := newTestClient(t, "DE", w.certDE)
		d, err := c.Send(bounded(t), w.peerFR(srv), env, sig, bytes.NewReader(payload))
		wantErr(t, d, err)
	})
}

// TestVersion1Receipt has FR answer an offer with the original receipt of
// a delivery made before receipts version 2: it is a delivery, with no log
// promise.
func TestVersion1Receipt(t *testing.T) {
	w := newWorld(t)
	env, sig, payload := sealed(t, w.unitDE, w.recipientFR, 1000)
	e := mustEnvelope(t, env)
	rc := signV1Receipt(t, w.signFR, map[string]string{
		"format": crypto.ReceiptFormatV1, "bundle_id": e.BundleID, "payload_sha256": hex.EncodeToString(e.PayloadSHA256[:]),
		"sender": "DE", "receiver": "FR", "received_at": "2026-01-02T03:04:05Z",
	})
	c := newTestClient(t, "DE", w.certDE)
	d, err := c.Send(bounded(t), hostileFR(t, w, receiptFrameBytes(t, rc, true)), env, sig, bytes.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	if !d.Duplicate || d.Log != nil || !reflect.DeepEqual(d.Receipt, rc) {
		t.Errorf("delivery %+v, want the version 1 receipt as a duplicate without log", d)
	}
	// Version 1 binds the bundle id and payload still.
	rc = signV1Receipt(t, w.signFR, map[string]string{
		"format": crypto.ReceiptFormatV1, "bundle_id": e.BundleID, "payload_sha256": strings.Repeat("0", 64),
		"sender": "DE", "receiver": "FR", "received_at": "2026-01-02T03:04:05Z",
	})
	c = newTestClient(t, "DE", w.certDE)
	if d, err := c.Send(bounded(t), hostileFR(t, w, receiptFrameBytes(t, rc, true)), env, sig, bytes.NewReader(payload)); err == nil || !strings.Contains(err.Error(), "payload SHA-256") {
		t.Errorf("delivery %+v, err = %v, want a version 1 receipt for another payload refused", d, err)
	}
}

// receiptFrameBytes returns a RECEIPT frame carrying rc.
func receiptFrameBytes(t *testing.T, rc *crypto.Signed, duplicate bool) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := writeFrame(&b, frameReceipt, receiptFrame{Receipt: rc, Duplicate: duplicate}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// signV1Receipt signs a version 1 receipt body with key, as gateways did
// before version 2: crypto signs only version 2 now. The body is canonical
// JSON (sorted members, no white space).
func signV1Receipt(t *testing.T, key *crypto.SigningKey, body map[string]string) *crypto.Signed {
	t.Helper()
	text, err := key.MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	var seed []byte
	for line := range strings.Lines(string(text)) {
		if s, ok := strings.CutPrefix(strings.TrimSpace(line), "evx-signing-secret-key: ed25519:"); ok {
			seed, err = base64.RawURLEncoding.DecodeString(s)
		}
	}
	if err != nil || len(seed) != ed25519.SeedSize {
		t.Fatalf("reading the signing key's seed: %v", err)
	}
	data, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	sig := ed25519.Sign(ed25519.NewKeyFromSeed(seed), fmt.Appendf(nil, "evx-receipt-signature/v1\n%s", data))
	rc := &crypto.Signed{Body: data, Signature: sig}
	if r, err := crypto.VerifyReceipt(rc, key.Public()); err != nil || r.Version() != 1 {
		t.Fatalf("the version 1 receipt made here: version %v, err %v", r, err)
	}
	return rc
}
