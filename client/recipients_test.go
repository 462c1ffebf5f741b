package client_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"os"
	"slices"
	"testing"

	"evx/api"
	"evx/client"
	"evx/gateway"
	"evx/internal/evxtest"
)

// newPurposesGateway is DE's gateway as DE's forensic unit meets it, with
// FR/prosecutor's directory entry listing the purposes it is authorised
// for. It allows every pre-flight and takes every upload, so that only
// push itself can refuse; it records every request.
func newPurposesGateway(t *testing.T) *oldGateway {
	t.Helper()
	g := newOldGateway(t)
	g.purposes = []string{"prosecution", "criminal-investigation"}
	g.answer = func(w http.ResponseWriter) {
		writeJSON(w, 200, api.Preflight{Allowed: true, Peer: "FR", Agreement: api.PreflightAgreement{Version: 1, Ref: "dev-env"}})
	}
	return g
}

// Push reads the purposes a recipient is authorised for from its directory
// entry and refuses a bundle for another purpose before it seals anything,
// also when its gateway's pre-flight allows it: the error is the API's
// recipient-not-authorised (so evx exits 3), starts with the code, and
// names the recipient, the purpose and the purposes it is for. A purpose
// it is authorised for goes through. (An entry without purposes is not
// checked: TestPushWithoutPreflight's gateway lists none.)
func TestPushRecipientNotAuthorised(t *testing.T) {
	g := newPurposesGateway(t)
	de := g.dev.Country("DE").User("forensics")
	c := client.New(g.srv.URL, de.Cert, &tls.Config{RootCAs: g.dev.Country("DE").CAPool()})
	tmp := t.TempDir()
	var stages []string
	req := client.PushRequest{Key: de.Key, To: []string{"FR/prosecutor"}, Files: evxtest.Evidence(t, 1000),
		Seal: evxtest.SealOptions(), TempDir: tmp,
		Progress: func(stage string, _, _ int64) { stages = append(stages, stage) }}
	res, err := client.Push(context.Background(), c, req)
	const want = `recipient-not-authorised: recipient FR/prosecutor is not authorised for purpose "mutual-legal-assistance"; ` +
		`it is for: prosecution, criminal-investigation (the unit directory of FR); nothing was sealed`
	if res != nil || err == nil || err.Error() != want {
		t.Fatalf("push: %v, %v\nwant: %s", res, err, want)
	}
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeRecipientNotAuthorised || ae.Code.Temporary() {
		t.Errorf("push's error %#v is not the API's lasting recipient-not-authorised", ae)
	}
	if entries, _ := os.ReadDir(tmp); len(stages) > 0 || len(entries) > 0 {
		t.Errorf("push went as far as %v, leaving %v; want nothing sealed", stages, entries)
	}
	if got, want := g.asked(), []string{"GET /v1/whoami", "GET /v1/directory/FR/prosecutor", "POST /v1/preflight"}; !slices.Equal(got, want) {
		t.Errorf("push asked %q, want only %q", got, want)
	}

	req.Seal.Purpose = "prosecution"
	res, err = client.Push(context.Background(), c, req)
	if err != nil || res.Status.State != api.StateQueued {
		t.Fatalf("push for prosecution: %+v, %v; want it queued", res, err)
	}
	if asked := g.asked(); !slices.Contains(asked, "POST /v1/bundles") {
		t.Errorf("push for prosecution asked %q, want an upload", asked)
	}
}

// With real gateways, DE's pre-flight refuses first, with FR's code and
// sentence, from the purposes in FR's directory: push prints it as it
// prints every pre-flight refusal, and seals nothing. A purpose the
// agreement does not allow at all is refused as such, before the
// recipients' purposes are looked at, as the gateways decide.
func TestPushRecipientNotAuthorisedByGateway(t *testing.T) {
	w := startWorldWith(t, func(id string, o *gateway.Options) {
		for i := range o.Users {
			if o.Users[i].Unit == "FR/prosecutor" {
				o.Users[i].Purposes = []string{"prosecution"}
			}
		}
	})
	de, deKey := w.Client("DE", "forensics")
	for _, tc := range []struct {
		purpose string
		code    api.Code
		want    string
	}{
		{"mutual-legal-assistance", api.CodeRecipientNotAuthorised, `your gateway refuses the bundle; nothing was sealed: recipient-not-authorised: ` +
			`recipient FR/prosecutor is not authorised for purpose "mutual-legal-assistance"; it is for: prosecution`},
		{"incident-response", api.CodePurposeNotAllowed, `your gateway refuses the bundle; nothing was sealed: purpose-not-allowed: ` +
			`agreement DE→FR v1 (ref dev-env) does not allow purpose "incident-response" outbound; allowed: criminal-investigation, prosecution, mutual-legal-assistance`},
	} {
		tmp := t.TempDir()
		var stages []string
		seal := evxtest.SealOptions()
		seal.Purpose = tc.purpose
		res, err := client.Push(context.Background(), de, client.PushRequest{Key: deKey, To: []string{"FR/prosecutor"},
			Files: evxtest.Evidence(t, 1000), Seal: seal, TempDir: tmp,
			Progress: func(stage string, _, _ int64) { stages = append(stages, stage) }})
		var ae *api.Error
		if res != nil || !errors.As(err, &ae) || ae.Code != tc.code || err.Error() != tc.want {
			t.Fatalf("push for %s: %v, %v\nwant: %s", tc.purpose, res, err, tc.want)
		}
		if entries, _ := os.ReadDir(tmp); len(stages) > 0 || len(entries) > 0 {
			t.Errorf("push for %s went as far as %v, leaving %v; want nothing sealed", tc.purpose, stages, entries)
		}
	}
}
