package crypto

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

// The golden vectors of the recall documents, in testdata/recall: a unit
// key and an envelope it signed (those of the single-file bundle vector,
// copied so that these stay as they are when that one is made again), a
// request it signed to recall the bundle, and the acks of a gateway key
// (the public test key of seed 00 01 … 1f) that applied it and that
// refused it for a legal hold. Ed25519 signatures are deterministic: every
// evx must make these bytes from these keys and fields, and read them as
// expected.json says. Regenerate them (after a deliberate format change,
// with a new version) with
//
//	go test ./crypto -run TestRecallVectors -update
const recallVectorsDir = "testdata/recall"

type recallVector struct {
	Description string `json:"description"`
	// Files, relative to the vectors' directory.
	UnitKey  string `json:"unit_key"`
	Envelope string `json:"envelope"`
	Request  string `json:"request"`  // the signed request, as Signed's JSON
	Applied  string `json:"applied"`  // the ack that applied it
	Declined string `json:"declined"` // the ack that refused it
	// GatewayKey is the public key of the gateway that signed the acks.
	GatewayKey string `json:"gateway_key"`
	// The request's and the acks' bodies, as they must decode.
	RequestBody  recallVectorRequest `json:"request_body"`
	AppliedBody  recallVectorAck     `json:"applied_body"`
	DeclinedBody recallVectorAck     `json:"declined_body"`
}

type recallVectorRequest struct {
	BundleID       string `json:"bundle_id"`
	Unit           string `json:"unit"`
	EnvelopeSHA256 string `json:"envelope_sha256"`
	RetainUntil    string `json:"retain_until"`
	Requested      string `json:"requested"`
	Reason         string `json:"reason"`
}

type recallVectorAck struct {
	Gateway       string `json:"gateway"`
	RequestSHA256 string `json:"request_sha256"`
	Applied       bool   `json:"applied"`
	Code          string `json:"code"`
	Reason        string `json:"reason"`
	RetainUntil   string `json:"retain_until"`
	At            string `json:"at"`
}

// recallVectorDocs makes the vectors' documents from the unit key and
// envelope: the same bytes every time.
func recallVectorDocs(t *testing.T, k *UnitKey, env *Envelope) (req, applied, declined *Signed) {
	t.Helper()
	at := env.Created.Add(24 * time.Hour)
	r, err := NewRecallRequest(env, at, at, "evidence seized in error")
	if err != nil {
		t.Fatal(err)
	}
	if req, err = k.SignRecall(r); err != nil {
		t.Fatal(err)
	}
	gw := testSigningKey()
	ack := func(ok bool, code, reason string, until time.Time) *Signed {
		a, err := NewRecallAck("FR", req, &r, ok, code, reason, until, at.Add(1500*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		s, err := gw.SignRecallAck(a)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	return req, ack(true, "", "", r.RetainUntil), ack(false, "legal-hold", "held for case FR-2026-17", env.RetainUntil)
}

func writeRecallVectors(t *testing.T) {
	t.Helper()
	src := filepath.Join(vectorsDir, "single-file")
	keyFile, err := os.ReadFile(filepath.Join(src, "sender.key"))
	if err != nil {
		t.Fatal(err)
	}
	envJSON := []byte(readVector(t, src).EnvelopeJSON)
	k, err := ParseUnitKey(bytes.NewReader(keyFile))
	if err != nil {
		t.Fatal(err)
	}
	env, err := ParseEnvelope(envJSON)
	if err != nil {
		t.Fatal(err)
	}
	req, applied, declined := recallVectorDocs(t, k, env)
	r, _ := ParseRecallBody(req.Body)
	ackBody := func(s *Signed) recallVectorAck {
		a, err := ParseRecallAckBody(s.Body)
		if err != nil {
			t.Fatal(err)
		}
		w := a.wire()
		return recallVectorAck{w.Gateway, w.RequestSHA256, w.Applied, w.Code, w.Reason, w.RetainUntil, w.At}
	}
	w := r.wire()
	v := recallVector{
		Description: "A unit key and an envelope it signed, the unit's request to recall the bundle (format evx-recall/1), " +
			"and the acks (format evx-recall-ack/1) of gateway FR, whose signing key has the seed 00 01 … 1f, applying it and refusing it for a legal hold.",
		UnitKey: "unit.key", Envelope: "envelope.json", Request: "request.json", Applied: "ack-applied.json", Declined: "ack-declined.json",
		GatewayKey:   testSigningKey().Public(),
		RequestBody:  recallVectorRequest{w.BundleID, w.Unit, w.EnvelopeSHA256, w.RetainUntil, w.Requested, w.Reason},
		AppliedBody:  ackBody(applied),
		DeclinedBody: ackBody(declined),
	}
	marshal := func(v any) []byte {
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		return append(b, '\n')
	}
	if err := os.MkdirAll(recallVectorsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		v.UnitKey:       keyFile,
		v.Envelope:      envJSON,
		v.Request:       marshal(req),
		v.Applied:       marshal(applied),
		v.Declined:      marshal(declined),
		"expected.json": marshal(v),
	} {
		if err := os.WriteFile(filepath.Join(recallVectorsDir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestRecallVectors(t *testing.T) {
	if *updateVectors {
		writeRecallVectors(t)
	}
	file := func(name string) []byte {
		t.Helper()
		data, err := os.ReadFile(filepath.Join(recallVectorsDir, name))
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	var v recallVector
	dec := json.NewDecoder(bytes.NewReader(file("expected.json")))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatal(err)
	}
	signed := func(name string) *Signed {
		var s Signed
		if err := json.Unmarshal(file(name), &s); err != nil {
			t.Fatal(err)
		}
		return &s
	}
	k, err := ParseUnitKey(bytes.NewReader(file(v.UnitKey)))
	if err != nil {
		t.Fatal(err)
	}
	env, err := ParseEnvelope(file(v.Envelope))
	if err != nil {
		t.Fatal(err)
	}
	req, applied, declined := signed(v.Request), signed(v.Applied), signed(v.Declined)

	r, err := VerifyRecall(req, env.Sender.Key)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.CheckBundle(env); err != nil {
		t.Fatal(err)
	}
	w := r.wire()
	if got := (recallVectorRequest{w.BundleID, w.Unit, w.EnvelopeSHA256, w.RetainUntil, w.Requested, w.Reason}); got != v.RequestBody || !r.IsRecall() {
		t.Errorf("request reads as %+v (a recall: %v), want %+v", got, r.IsRecall(), v.RequestBody)
	}
	for _, tt := range []struct {
		s    *Signed
		want recallVectorAck
	}{{applied, v.AppliedBody}, {declined, v.DeclinedBody}} {
		a, err := VerifyRecallAck(tt.s, v.GatewayKey)
		if err != nil {
			t.Fatal(err)
		}
		if err := a.CheckRequest(req, r, "FR"); err != nil {
			t.Fatal(err)
		}
		w := a.wire()
		if got := (recallVectorAck{w.Gateway, w.RequestSHA256, w.Applied, w.Code, w.Reason, w.RetainUntil, w.At}); got != tt.want {
			t.Errorf("ack reads as %+v, want %+v", got, tt.want)
		}
	}

	// This evx makes the same bytes from the same keys and fields.
	if testSigningKey().Public() != v.GatewayKey {
		t.Fatal("the gateway test key is not the vectors'")
	}
	mReq, mApplied, mDeclined := recallVectorDocs(t, k, env)
	for _, pair := range [][2]*Signed{{mReq, req}, {mApplied, applied}, {mDeclined, declined}} {
		if !reflect.DeepEqual(pair[0], pair[1]) {
			t.Errorf("made\n%s\n%x\nwant the vector's\n%s\n%x", pair[0].Body, pair[0].Signature, pair[1].Body, pair[1].Signature)
		}
	}
}
