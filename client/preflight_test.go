package client_test

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"evx/agreement"
	"evx/api"
	"evx/client"
	"evx/crypto"
	"evx/gateway"
	"evx/internal/devenv"
	"evx/internal/evxtest"
	"evx/storage"
)

// A push the gateway's agreement refuses is refused by the pre-flight,
// before anything is sealed or sent: the error is the API's refusal, with
// the agreement's code and sentence, as the upload's would be, and the
// gateway holds nothing of it.
func TestPushPreflightRefused(t *testing.T) {
	w := startWorldWith(t, func(id string, o *gateway.Options) {
		if id == "DE" {
			a := devenv.DevAgreement("FR")
			a.Outbound = []string{"prosecution"}
			o.Agreements = []*agreement.Agreement{a}
		}
	})
	ctx := context.Background()
	de, deKey := w.Client("DE", "forensics")
	tmp := t.TempDir()
	var stages []string
	res, err := client.Push(ctx, de, client.PushRequest{Key: deKey, To: []string{"FR/prosecutor"}, Files: evxtest.Evidence(t, 1000),
		Seal: evxtest.SealOptions(), TempDir: tmp, Wait: 0,
		Progress: func(stage string, _, _ int64) { stages = append(stages, stage) }})
	var ae *api.Error
	if res != nil || !errors.As(err, &ae) || ae.Code != api.CodePurposeNotAllowed || ae.HTTPStatus != 403 ||
		!strings.Contains(err.Error(), `your gateway refuses the bundle; nothing was sealed: purpose-not-allowed: agreement DE→FR v1 (ref dev-env) does not allow purpose "mutual-legal-assistance" outbound; allowed: prosecution`) {
		t.Fatalf("push: %v, %v; want refused by the pre-flight as purpose-not-allowed", res, err)
	}
	if entries, _ := os.ReadDir(tmp); len(stages) > 0 || len(entries) > 0 {
		t.Errorf("push went as far as %v, leaving %v; want nothing sealed", stages, entries)
	}
	// Nothing but the transfer log, which records the gateway's start,
	// FR's directory, which the lookup of the recipient keeps, what DE
	// witnessed of FR's log, which grows by itself, and FR's summary of
	// its agreement, which the gateways exchange.
	if infos, err := w.Stores["DE"].List(ctx, ""); err != nil || slices.ContainsFunc(infos, func(in storage.Info) bool {
		return !strings.HasPrefix(in.Key, "log/") && !strings.HasPrefix(in.Key, "directories/") && !strings.HasPrefix(in.Key, "witness/") &&
			!strings.HasPrefix(in.Key, "agreements/peers/")
	}) {
		t.Errorf("DE stored %v, %v; want nothing of the bundle", infos, err)
	}
}

// oldGateway is a gateway from before the pre-flight call, as DE's
// forensic unit meets it: it knows whoami, the directory and uploads, and
// answers 404 to anything else. It records every request.
type oldGateway struct {
	srv *httptest.Server
	dev *devenv.World

	mu       sync.Mutex
	requests []string
	// answer, if set, answers POST /v1/preflight instead of a 404.
	answer func(w http.ResponseWriter)
	// purposes, if set, are those FR/prosecutor's directory entry lists.
	purposes []string
}

func newOldGateway(t *testing.T) *oldGateway {
	t.Helper()
	dev, err := devenv.New("DE", "FR")
	if err != nil {
		t.Fatal(err)
	}
	g := &oldGateway{dev: dev}
	de := dev.Country("DE")
	g.srv = httptest.NewUnstartedServer(http.HandlerFunc(g.serve))
	g.srv.TLS = &tls.Config{Certificates: []tls.Certificate{de.Cert}, ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs: de.CAPool(), MinVersion: tls.VersionTLS13}
	g.srv.StartTLS()
	t.Cleanup(g.srv.Close)
	return g
}

// client returns DE's forensic unit's client of the gateway, and its key.
func (g *oldGateway) client() (*client.Client, *crypto.UnitKey) {
	de := g.dev.Country("DE")
	u := de.User("forensics")
	return client.New(g.srv.URL, u.Cert, &tls.Config{RootCAs: de.CAPool()}), u.Key
}

func (g *oldGateway) asked() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.requests...)
}

func (g *oldGateway) serve(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	g.requests = append(g.requests, r.Method+" "+r.URL.Path)
	g.mu.Unlock()
	switch {
	case r.Method == "GET" && r.URL.Path == "/v1/whoami":
		writeJSON(w, 200, api.WhoAmI{Gateway: "DE", Unit: "DE/forensics", Role: api.RoleSubmitter})
	case r.Method == "GET" && r.URL.Path == "/v1/directory/FR/prosecutor":
		p := g.dev.Country("FR").User("prosecutor").Key.Public()
		writeJSON(w, 200, crypto.DirectoryEntry{Unit: p.Unit, Role: string(api.RoleRecipient), AgeRecipient: p.AgeRecipient,
			Purposes: g.purposes})
	case r.Method == "POST" && r.URL.Path == "/v1/preflight" && g.answer != nil:
		g.answer(w)
	case r.Method == "POST" && r.URL.Path == "/v1/bundles":
		io.Copy(io.Discard, r.Body)
		envJSON, _ := base64.StdEncoding.DecodeString(r.Header.Get(api.HeaderEnvelope))
		env, _ := crypto.ParseEnvelope(envJSON)
		id := ""
		if env != nil {
			id = env.BundleID
		}
		writeJSON(w, 200, api.OutboxStatus{BundleID: id, State: api.StateQueued, Peer: "FR"})
	default:
		http.NotFound(w, r)
	}
}

// A gateway without the pre-flight call answers it 404 or 405: push goes
// on without it, seals and uploads, as it did before the call existed.
func TestPushWithoutPreflight(t *testing.T) {
	for _, status := range []int{http.StatusNotFound, http.StatusMethodNotAllowed} {
		g := newOldGateway(t)
		if status == http.StatusMethodNotAllowed {
			g.answer = func(w http.ResponseWriter) { http.Error(w, "Method Not Allowed", status) }
		}
		c, key := g.client()
		res, err := client.Push(context.Background(), c, client.PushRequest{Key: key, To: []string{"FR/prosecutor"},
			Files: evxtest.Evidence(t, 1000), Seal: evxtest.SealOptions(), TempDir: t.TempDir()})
		if err != nil || res.Status.State != api.StateQueued || res.Status.BundleID != res.Envelope.BundleID {
			t.Fatalf("push to a gateway answering %d to the pre-flight: %+v, %v; want it queued", status, res, err)
		}
		want := []string{"GET /v1/whoami", "GET /v1/directory/FR/prosecutor", "POST /v1/preflight", "POST /v1/bundles"}
		if got := g.asked(); !slices.Equal(got, want) {
			t.Errorf("push asked %q, want %q", got, want)
		}
	}
}

// Preflight tells an API refusal, even one with status 404, from a gateway
// that does not know the call, and does not take an answer that neither
// allows nor refuses for an allowed one.
func TestPreflightAnswers(t *testing.T) {
	req := api.PreflightRequest{Recipients: []string{"FR/prosecutor"}, Purpose: "prosecution", Handling: "H2", TLP: "TLP:RED", Retention: "90d", Size: 1}
	for _, tc := range []struct {
		name   string
		answer func(w http.ResponseWriter)
		check  func(*api.Preflight, error) bool
	}{
		{"plain 404", nil, func(_ *api.Preflight, err error) bool { return errors.Is(err, client.ErrNoPreflight) }},
		{"API refusal with 404", func(w http.ResponseWriter) {
			writeJSON(w, 404, api.ErrorBody{Error: api.Errorf(api.CodeUnknownUnit, "no such unit")})
		}, func(_ *api.Preflight, err error) bool {
			var ae *api.Error
			return errors.As(err, &ae) && ae.Code == api.CodeUnknownUnit && !errors.Is(err, client.ErrNoPreflight)
		}},
		{"neither allowed nor refused", func(w http.ResponseWriter) { writeJSON(w, 200, api.Preflight{Peer: "FR"}) },
			func(_ *api.Preflight, err error) bool { return errors.Is(err, client.ErrBadAnswer) }},
		{"allowed", func(w http.ResponseWriter) {
			writeJSON(w, 200, api.Preflight{Allowed: true, Peer: "FR", Agreement: api.PreflightAgreement{Version: 3, Ref: "2026/114"}})
		}, func(p *api.Preflight, err error) bool {
			return err == nil && p.Allowed && p.Agreement.Ref == "2026/114"
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newOldGateway(t)
			g.answer = tc.answer
			c, _ := g.client()
			p, err := c.Preflight(context.Background(), req)
			if !tc.check(p, err) {
				t.Errorf("pre-flight: %+v, %v", p, err)
			}
		})
	}
}
