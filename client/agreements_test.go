package client_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"evx/api"
	"evx/client"
	"evx/internal/devenv"
)

// agreementGateway impersonates DE's gateway towards DE's operator for
// the agreement calls: each test says how it answers, and it records what
// was asked, with the body.
type agreementGateway struct {
	srv    *httptest.Server
	client *client.Client

	mu     sync.Mutex
	asked  []string
	bodies []string
	types  []string
	answer func(w http.ResponseWriter, r *http.Request)
}

func newAgreementGateway(t *testing.T, answer func(w http.ResponseWriter, r *http.Request)) *agreementGateway {
	t.Helper()
	dev, err := devenv.New("DE", "FR")
	if err != nil {
		t.Fatal(err)
	}
	de := dev.Country("DE")
	g := &agreementGateway{answer: answer}
	g.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		g.mu.Lock()
		g.asked = append(g.asked, r.Method+" "+r.URL.Path)
		g.bodies = append(g.bodies, string(body))
		g.types = append(g.types, r.Header.Get("Content-Type"))
		g.mu.Unlock()
		g.answer(w, r)
	}))
	g.srv.TLS = &tls.Config{Certificates: []tls.Certificate{de.Cert}, ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs: de.CAPool(), MinVersion: tls.VersionTLS13}
	g.srv.StartTLS()
	t.Cleanup(g.srv.Close)
	g.client = client.New(g.srv.URL, de.User("operator").Cert, &tls.Config{RootCAs: de.CAPool()})
	return g
}

func (g *agreementGateway) requests() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.asked...)
}

func answerJSON(status int, v any) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) { writeJSON(w, status, v) }
}

func refusal(code api.Code, msg string) func(http.ResponseWriter, *http.Request) {
	return answerJSON(code.Status(), api.ErrorBody{Error: api.Errorf(code, "%s", msg)})
}

// dePair is DE's agreement with FR and FR's, as a gateway answers for it.
func dePair() api.AgreementPair {
	until := time.Date(2028, 1, 1, 0, 0, 0, 0, time.UTC)
	received := time.Date(2026, 12, 3, 17, 0, 0, 0, time.UTC)
	return api.AgreementPair{
		Peer: "FR",
		Ours: api.AgreementView{Gateway: "DE", Peer: "FR", Version: 3, Ref: "2026/114", Status: "active", State: "active",
			Outbound: []string{"prosecution"}, Inbound: []string{"criminal-investigation"}, Handling: []string{"H2"}, TLP: []string{"TLP:RED"},
			MaxRetention:  map[string]int64{"prosecution": 730 * 86400, "criminal-investigation": 365 * 86400},
			MaxBundleSize: 40 << 30, RateBundles: 100, RateBytes: 1 << 40, ValidUntil: &until},
		Theirs:         &api.AgreementView{Gateway: "FR", Peer: "DE", Version: 2, Ref: "2026/99", Status: "active", State: "active"},
		TheirsReceived: &received,
		Suspension:     &api.Suspension{Reason: "audit of FR's storage", By: "DE/operator", At: received},
	}
}

// The six calls ask what docs/api.md says, with the reason as JSON, and
// decode the answers.
func TestAgreementCalls(t *testing.T) {
	ctx := context.Background()
	pair := dePair()
	list := api.AgreementList{Gateway: "DE", Agreements: []api.AgreementPair{pair}}
	diff := api.AgreementDiff{Peer: "FR", Mismatches: []string{"DE allows prosecution outbound; FR does not accept it inbound"}}
	reload := api.Reload{Changed: true, Changes: []string{"agreement FR: version 3 → 4 (ref 2026/114 → 2026/120)"}, RestartNeeded: []string{"listen.api"}}
	g := newAgreementGateway(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.Method + " " + r.URL.Path {
		case "GET /v1/agreements":
			writeJSON(w, 200, list)
		case "GET /v1/agreements/FR":
			writeJSON(w, 200, pair)
		case "GET /v1/agreements/FR/diff":
			writeJSON(w, 200, diff)
		case "POST /v1/agreements/reload", "POST /v1/agreements/FR/suspend", "POST /v1/agreements/FR/resume":
			writeJSON(w, 200, reload)
		default:
			http.NotFound(w, r)
		}
	})
	c := g.client
	if got, err := c.Agreements(ctx); err != nil || !reflect.DeepEqual(*got, list) {
		t.Errorf("Agreements: %+v, %v; want %+v", got, err, list)
	}
	if got, err := c.Agreement(ctx, "FR"); err != nil || !reflect.DeepEqual(*got, pair) {
		t.Errorf("Agreement: %+v, %v; want %+v", got, err, pair)
	}
	if got, err := c.AgreementDiff(ctx, "FR"); err != nil || !reflect.DeepEqual(*got, diff) {
		t.Errorf("AgreementDiff: %+v, %v; want %+v", got, err, diff)
	}
	for name, call := range map[string]func() (*api.Reload, error){
		"ReloadConfig":     func() (*api.Reload, error) { return c.ReloadConfig(ctx) },
		"SuspendAgreement": func() (*api.Reload, error) { return c.SuspendAgreement(ctx, "FR", "audit of FR's storage") },
		"ResumeAgreement":  func() (*api.Reload, error) { return c.ResumeAgreement(ctx, "FR") },
	} {
		if got, err := call(); err != nil || !reflect.DeepEqual(*got, reload) {
			t.Errorf("%s: %+v, %v; want %+v", name, got, err, reload)
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for i, r := range g.asked {
		switch r {
		case "POST /v1/agreements/FR/suspend":
			var req api.SuspendRequest
			if err := json.Unmarshal([]byte(g.bodies[i]), &req); err != nil || req.Reason != "audit of FR's storage" || g.types[i] != "application/json" {
				t.Errorf("suspend sent %q (%s): want the reason as JSON", g.bodies[i], g.types[i])
			}
		default:
			if g.bodies[i] != "" {
				t.Errorf("%s sent a body %q", r, g.bodies[i])
			}
		}
	}
	if len(g.asked) != 6 {
		t.Errorf("asked %v; want the six calls", g.asked)
	}
}

// A refusal is an *api.Error with the gateway's code, status and message
// (a refused reload's names the field and line), so that evx maps it to
// its exit code; a gateway older than the calls is told apart from a
// refusal with 404.
func TestAgreementRefusals(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		answer func(http.ResponseWriter, *http.Request)
		call   func(c *client.Client) error
		code   api.Code
		status int
	}{
		{"invalid config", refusal(api.CodeInvalidConfig, "/etc/evx/gateway.yaml:19: agreements[0].max_retention: missing the cap"),
			func(c *client.Client) error { _, err := c.ReloadConfig(ctx); return err }, api.CodeInvalidConfig, 422},
		{"reload unavailable", refusal(api.CodeReloadUnavailable, "not started from a file"),
			func(c *client.Client) error { _, err := c.ReloadConfig(ctx); return err }, api.CodeReloadUnavailable, 409},
		{"already suspended", refusal(api.CodeAlreadySuspended, "suspended by DE/operator"),
			func(c *client.Client) error { _, err := c.SuspendAgreement(ctx, "FR", "again"); return err }, api.CodeAlreadySuspended, 409},
		{"bad reason", refusal(api.CodeBadReason, "a reason is required"),
			func(c *client.Client) error { _, err := c.SuspendAgreement(ctx, "FR", ""); return err }, api.CodeBadReason, 400},
		{"not suspended", refusal(api.CodeNotSuspended, "not suspended"),
			func(c *client.Client) error { _, err := c.ResumeAgreement(ctx, "FR"); return err }, api.CodeNotSuspended, 409},
		{"unknown peer", refusal(api.CodeUnknownPeer, "no peer NL"),
			func(c *client.Client) error { _, err := c.Agreement(ctx, "NL"); return err }, api.CodeUnknownPeer, 404},
		{"unknown peer diff", refusal(api.CodeUnknownPeer, "no peer NL"),
			func(c *client.Client) error { _, err := c.AgreementDiff(ctx, "NL"); return err }, api.CodeUnknownPeer, 404},
		{"forbidden", refusal(api.CodeForbidden, "role submitter may not"),
			func(c *client.Client) error { _, err := c.Agreements(ctx); return err }, api.CodeForbidden, 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newAgreementGateway(t, tc.answer)
			err := tc.call(g.client)
			var ae *api.Error
			if !errors.As(err, &ae) || ae.Code != tc.code || ae.HTTPStatus != tc.status || errors.Is(err, client.ErrNoAgreementCalls) {
				t.Fatalf("got %v; want the API's refusal %s (%d)", err, tc.code, tc.status)
			}
		})
	}
	// A gateway older than the calls answers a plain 404 or 405.
	for _, status := range []int{404, 405} {
		g := newAgreementGateway(t, func(w http.ResponseWriter, r *http.Request) { http.Error(w, "no", status) })
		if _, err := g.client.ReloadConfig(ctx); !errors.Is(err, client.ErrNoAgreementCalls) {
			t.Errorf("%d: %v; want ErrNoAgreementCalls", status, err)
		}
		if _, err := g.client.Agreements(ctx); !errors.Is(err, client.ErrNoAgreementCalls) {
			t.Errorf("%d: %v; want ErrNoAgreementCalls", status, err)
		}
	}
}

// A peer that is not a gateway id is refused before anything is sent: it
// would become part of the path.
func TestAgreementBadPeer(t *testing.T) {
	ctx := context.Background()
	g := newAgreementGateway(t, answerJSON(200, dePair()))
	for _, peer := range []string{"", "fr", "FR/../reload", "FR?x", "F"} {
		if _, err := g.client.Agreement(ctx, peer); err == nil || !strings.Contains(err.Error(), "is not a gateway id") {
			t.Errorf("Agreement(%q): %v", peer, err)
		}
		if _, err := g.client.SuspendAgreement(ctx, peer, "x"); err == nil {
			t.Errorf("SuspendAgreement(%q) succeeded", peer)
		}
		if _, err := g.client.ResumeAgreement(ctx, peer); err == nil {
			t.Errorf("ResumeAgreement(%q) succeeded", peer)
		}
		if _, err := g.client.AgreementDiff(ctx, peer); err == nil {
			t.Errorf("AgreementDiff(%q) succeeded", peer)
		}
	}
	if asked := g.requests(); len(asked) > 0 {
		t.Errorf("asked %v; want nothing", asked)
	}
}

// A hostile or faulty gateway's answer is bounded and must fit the
// question: a bigger one is refused before it is all read, one about
// another peer or contradicting itself is ErrBadAnswer.
func TestAgreementBadAnswers(t *testing.T) {
	ctx := context.Background()
	// A well-formed answer of 9 MiB, which only its size makes wrong.
	huge := func(announce bool) func(w http.ResponseWriter, r *http.Request) {
		return func(w http.ResponseWriter, r *http.Request) {
			head, tail := `{"gateway":"DE","agreements":[],"peer":"FR","mismatches":["`, `"]}`
			body := head + strings.Repeat("a", 9<<20-len(head)-len(tail)) + tail
			if announce {
				w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			}
			w.WriteHeader(200)
			io.WriteString(w, body)
		}
	}
	other := dePair()
	other.Peer = "NL"
	swapped := dePair()
	swapped.Theirs.Gateway = "NL"
	inList := api.AgreementList{Gateway: "DE", Agreements: []api.AgreementPair{dePair(), swapped}}
	for _, tc := range []struct {
		name   string
		answer func(http.ResponseWriter, *http.Request)
		call   func(c *client.Client) error
	}{
		{"huge announced", huge(true), func(c *client.Client) error { _, err := c.AgreementDiff(ctx, "FR"); return err }},
		{"huge chunked", huge(false), func(c *client.Client) error { _, err := c.AgreementDiff(ctx, "FR"); return err }},
		{"huge list", huge(false), func(c *client.Client) error { _, err := c.Agreements(ctx); return err }},
		{"not JSON", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "<html>") },
			func(c *client.Client) error { _, err := c.ReloadConfig(ctx); return err }},
		{"another peer", answerJSON(200, other), func(c *client.Client) error { _, err := c.Agreement(ctx, "FR"); return err }},
		{"theirs from another", answerJSON(200, swapped), func(c *client.Client) error { _, err := c.Agreement(ctx, "FR"); return err }},
		{"theirs from another in the list", answerJSON(200, inList), func(c *client.Client) error { _, err := c.Agreements(ctx); return err }},
		{"diff of another", answerJSON(200, api.AgreementDiff{Peer: "NL"}),
			func(c *client.Client) error { _, err := c.AgreementDiff(ctx, "FR"); return err }},
		{"diff unknown and listed", answerJSON(200, api.AgreementDiff{Peer: "FR", Unknown: true, Mismatches: []string{"x"}}),
			func(c *client.Client) error { _, err := c.AgreementDiff(ctx, "FR"); return err }},
		{"unchanged with changes", answerJSON(200, api.Reload{Changes: []string{"peer IT added"}}),
			func(c *client.Client) error { _, err := c.ReloadConfig(ctx); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newAgreementGateway(t, tc.answer)
			if err := tc.call(g.client); !errors.Is(err, client.ErrBadAnswer) {
				t.Fatalf("got %v; want ErrBadAnswer", err)
			}
		})
	}
}

// A refused reload's message keeps its line breaks, one problem of the
// file per line, and is still made safe for a terminal; any other
// refusal's message is one line.
func TestAgreementRefusalMessage(t *testing.T) {
	ctx := context.Background()
	msg := "gateway.yaml:19: agreements[0].max_retention: missing the cap\ngateway.yaml:23: users[1].purposes: unknown purpose \x1b[2J"
	g := newAgreementGateway(t, refusal(api.CodeInvalidConfig, msg))
	_, err := g.client.ReloadConfig(ctx)
	want := "invalid-config: gateway.yaml:19: agreements[0].max_retention: missing the cap\ngateway.yaml:23: users[1].purposes: unknown purpose \\x1b[2J"
	if err == nil || err.Error() != want {
		t.Errorf("refused reload: %q; want %q", err, want)
	}
	g = newAgreementGateway(t, refusal(api.CodeAlreadySuspended, "line one\nevx: a forged line"))
	_, err = g.client.SuspendAgreement(ctx, "FR", "x")
	if want := `already-suspended: line one\x0aevx: a forged line`; err == nil || err.Error() != want {
		t.Errorf("refused suspension: %q; want %q", err, want)
	}
	g = newAgreementGateway(t, refusal(api.CodeInvalidConfig, strings.Repeat("x", 20<<10)))
	if _, err := g.client.ReloadConfig(ctx); err == nil || len(err.Error()) > 17<<10 {
		t.Errorf("a refusal of 20 KiB is passed on whole (%d bytes)", len(err.Error()))
	}
}
