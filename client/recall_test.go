package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"evx/api"
	"evx/client"
	"evx/crypto"
	"evx/internal/evxtest"
)

// recallGateway answers the recall calls as DE's gateway would, for a
// bundle sealed with key: the peer FR, signing with frKey, applies what
// it is sent. tamper, if set, changes the answer before it is sent.
type recallGateway struct {
	*agreementGateway
	b      *evxtest.Bundle
	frKey  *crypto.SigningKey
	tamper func(a *api.Recall)
}

func newRecallGateway(t *testing.T) (*recallGateway, *crypto.UnitKey) {
	t.Helper()
	key, err := crypto.GenerateUnitKey("DE/forensics")
	if err != nil {
		t.Fatal(err)
	}
	to, _ := crypto.GenerateUnitKey("FR/prosecutor")
	frKey, _ := crypto.GenerateSigningKey()
	g := &recallGateway{b: evxtest.Seal(t, key, []crypto.PublicKey{to.Public()}, 100), frKey: frKey}
	g.agreementGateway = newAgreementGateway(t, g.serve)
	return g, key
}

func (g *recallGateway) serve(w http.ResponseWriter, r *http.Request) {
	id := g.b.Env.BundleID
	switch r.Method + " " + r.URL.Path {
	case "GET /v1/outbox/" + id + "/recall":
		writeJSON(w, 200, api.RecallStatus{BundleID: id, Peer: "FR", Delivered: true, Envelope: g.b.EnvJSON, Recalls: []api.Recall{}})
	case "GET /v1/peers":
		writeJSON(w, 200, []api.Peer{{ID: "FR", SigningKey: g.frKey.Public()}})
	case "POST /v1/outbox/" + id + "/recall":
		g.mu.Lock()
		body := g.bodies[len(g.bodies)-1]
		g.mu.Unlock()
		var req api.RecallRequest
		if err := json.Unmarshal([]byte(body), &req); err != nil {
			writeJSON(w, 400, api.ErrorBody{Error: api.Errorf(api.CodeBadSignature, "%v", err)})
			return
		}
		rq, err := crypto.VerifyRecall(req.Request, g.b.Env.Sender.Key)
		if err != nil {
			writeJSON(w, 400, api.ErrorBody{Error: api.Errorf(api.CodeBadSignature, "%v", err)})
			return
		}
		ack, _ := crypto.NewRecallAck("FR", req.Request, rq, true, "", "", rq.RetainUntil, time.Now())
		signed, _ := g.frKey.SignRecallAck(ack)
		a := &api.Recall{BundleID: id, Peer: "FR", Applied: true, RetainUntil: ack.RetainUntil, At: ack.At, Request: req.Request, Ack: signed}
		if g.tamper != nil {
			g.tamper(a)
		}
		writeJSON(w, 200, a)
	default:
		http.NotFound(w, r)
	}
}

// Recall reads the envelope from the gateway, signs the request with the
// unit's key there and then, posts it as docs/api.md says, and checks the
// answer against the peer's key.
func TestRecallCall(t *testing.T) {
	ctx := context.Background()
	g, key := newRecallGateway(t)
	id := g.b.Env.BundleID
	to := time.Now().Add(time.Hour).Truncate(time.Second)
	a, err := g.client.Recall(ctx, key, id, to, "case closed")
	if err != nil {
		t.Fatal(err)
	}
	if !a.Applied || !a.RetainUntil.Equal(to) {
		t.Errorf("answer %+v", a)
	}
	want := []string{"GET /v1/outbox/" + id + "/recall", "GET /v1/peers", "POST /v1/outbox/" + id + "/recall"}
	if got := g.requests(); !slices.Equal(got, want) {
		t.Errorf("asked %q; want %q", got, want)
	}
	g.mu.Lock()
	body, typ := g.bodies[2], g.types[2]
	g.mu.Unlock()
	var sent api.RecallRequest
	if err := json.Unmarshal([]byte(body), &sent); err != nil || typ != "application/json" {
		t.Fatalf("body %q (%s): %v", body, typ, err)
	}
	r, err := crypto.VerifyRecall(sent.Request, crypto.FormatSigningKey(key.SigningPublicKey()))
	if err != nil {
		t.Fatal(err)
	}
	if !r.RetainUntil.Equal(to) || r.Reason != "case closed" || r.Unit != "DE/forensics" || r.CheckBundle(g.b.Env) != nil {
		t.Errorf("request sent %+v", r)
	}
	// A recall proper asks for now.
	if a, err := g.client.Recall(ctx, key, id, time.Time{}, ""); err != nil || !a.Applied || a.RetainUntil.After(time.Now().Add(time.Second)) {
		t.Errorf("recall: %+v, %v", a, err)
	}
}

// What the unit can tell is wrong is refused before anything is posted: a
// bundle id that is not one, another key than the one that sealed the
// bundle, a lengthening.
func TestRecallRefusedHere(t *testing.T) {
	ctx := context.Background()
	g, key := newRecallGateway(t)
	id := g.b.Env.BundleID
	other, _ := crypto.GenerateUnitKey("DE/forensics")
	for _, tc := range []struct {
		name  string
		key   *crypto.UnitKey
		id    string
		until time.Time
		want  string
	}{
		{"not an id", key, "../holds", time.Time{}, "is not a bundle id"},
		{"another key", other, id, time.Time{}, "recall it with the key that sealed it"},
		{"a lengthening", key, id, g.b.Env.RetainUntil.Add(time.Second), "a recall only shortens"},
		{"a date past", key, id, time.Now().Add(-time.Hour), "is before requested"},
	} {
		if _, err := g.client.Recall(ctx, tc.key, tc.id, tc.until, ""); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	for _, asked := range g.requests() {
		if strings.HasPrefix(asked, "POST") {
			t.Errorf("posted %s", asked)
		}
	}
}

// An answer that is not the peer's signed ack to the request sent is
// ErrBadAnswer; an older gateway is ErrNoRecallCalls.
func TestRecallBadAnswers(t *testing.T) {
	ctx := context.Background()
	other, _ := crypto.GenerateSigningKey()
	for _, tc := range []struct {
		name   string
		tamper func(g *recallGateway, a *api.Recall)
	}{
		{"another request", func(_ *recallGateway, a *api.Recall) {
			a.Request = &crypto.Signed{Body: bytes.Replace(a.Request.Body, []byte("DE"), []byte("DX"), 1), Signature: a.Request.Signature}
		}},
		{"another peer", func(_ *recallGateway, a *api.Recall) { a.Peer = "NL" }},
		{"no ack", func(_ *recallGateway, a *api.Recall) { a.Ack = nil }},
		{"an ack by another key", func(g *recallGateway, a *api.Recall) {
			ack, _ := crypto.ParseRecallAckBody(a.Ack.Body)
			a.Ack, _ = other.SignRecallAck(*ack)
		}},
		{"applied, says the gateway", func(g *recallGateway, a *api.Recall) {
			ack, _ := crypto.ParseRecallAckBody(a.Ack.Body)
			ack.Applied, ack.Code, ack.Reason = false, "legal-hold", "held"
			a.Ack, _ = g.frKey.SignRecallAck(*ack)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, key := newRecallGateway(t)
			g.tamper = func(a *api.Recall) { tc.tamper(g, a) }
			if _, err := g.client.Recall(ctx, key, g.b.Env.BundleID, time.Time{}, ""); !errors.Is(err, client.ErrBadAnswer) {
				t.Errorf("got %v; want ErrBadAnswer", err)
			}
		})
	}
	g := newAgreementGateway(t, func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) })
	if _, err := g.client.RecallStatus(ctx, "0af3c2d4e5f60718293a4b5c6d7e8f90"); !errors.Is(err, client.ErrNoRecallCalls) {
		t.Errorf("older gateway: %v, want ErrNoRecallCalls", err)
	}
	g = newAgreementGateway(t, refusal(api.CodeForbidden, "only its submitter"))
	var ae *api.Error
	if _, err := g.client.SendRecall(ctx, "0af3c2d4e5f60718293a4b5c6d7e8f90", &crypto.Signed{}); !errors.As(err, &ae) || ae.Code != api.CodeForbidden || ae.HTTPStatus != 403 {
		t.Errorf("refusal: %v", err)
	}
}
