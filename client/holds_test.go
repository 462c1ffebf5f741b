package client_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"evx/api"
	"evx/client"
)

const holdID = "0af3c2d4e5f60718293a4b5c6d7e8f90"

func aHold() api.Hold {
	return api.Hold{BundleID: holdID, Boxes: []string{"inbox"}, Reason: "trial", Reference: "LG Berlin 12 O 34/26",
		By: "DE/operator", At: time.Date(2026, 12, 3, 17, 0, 0, 0, time.UTC)}
}

// The three calls ask what docs/api.md says, with their bodies as JSON,
// and decode the answers.
func TestHoldCalls(t *testing.T) {
	ctx := context.Background()
	released := aHold()
	released.Released = &api.HoldRelease{Reason: "final", By: "DE/operator", At: time.Date(2026, 12, 4, 9, 0, 0, 0, time.UTC)}
	g := newAgreementGateway(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case "POST":
			writeJSON(w, 200, aHold())
		case "DELETE":
			writeJSON(w, 200, released)
		default:
			writeJSON(w, 200, api.HoldList{Gateway: "DE", Holds: []api.Hold{aHold()}})
		}
	})
	h, err := g.client.PlaceHold(ctx, holdID, "trial", "LG Berlin 12 O 34/26")
	if err != nil || h.Reference != "LG Berlin 12 O 34/26" {
		t.Fatalf("PlaceHold: %+v, %v", h, err)
	}
	r, err := g.client.ReleaseHold(ctx, holdID, "final")
	if err != nil || r.Released == nil || r.Released.Reason != "final" {
		t.Fatalf("ReleaseHold: %+v, %v", r, err)
	}
	l, err := g.client.Holds(ctx)
	if err != nil || len(l.Holds) != 1 || l.Holds[0].BundleID != holdID {
		t.Fatalf("Holds: %+v, %v", l, err)
	}
	want := []string{"POST /v1/holds/" + holdID, "DELETE /v1/holds/" + holdID, "GET /v1/holds"}
	if got := g.requests(); !slices.Equal(got, want) {
		t.Errorf("asked %q; want %q", got, want)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.bodies[0] != `{"reason":"trial","reference":"LG Berlin 12 O 34/26"}` || g.bodies[1] != `{"reason":"final"}` || g.bodies[2] != "" {
		t.Errorf("bodies %q", g.bodies)
	}
	if g.types[0] != "application/json" || g.types[1] != "application/json" {
		t.Errorf("content types %q", g.types)
	}
}

// An id that is not a bundle id is refused before anything is sent: it
// would become part of the path.
func TestHoldBadID(t *testing.T) {
	ctx := context.Background()
	g := newAgreementGateway(t, answerJSON(200, aHold()))
	for _, id := range []string{"", "../agreements/reload", strings.ToUpper(holdID), holdID[:31], holdID + "0", holdID[:30] + "/x"} {
		if _, err := g.client.PlaceHold(ctx, id, "r", "ref"); err == nil || !strings.Contains(err.Error(), "is not a bundle id") {
			t.Errorf("PlaceHold(%q): %v", id, err)
		}
		if _, err := g.client.ReleaseHold(ctx, id, "r"); err == nil || !strings.Contains(err.Error(), "is not a bundle id") {
			t.Errorf("ReleaseHold(%q): %v", id, err)
		}
	}
	if _, err := g.client.PlaceHold(ctx, holdID, strings.Repeat("r", api.MaxHoldBody), "ref"); err == nil {
		t.Error("PlaceHold sent a body over the limit")
	}
	if asked := g.requests(); len(asked) > 0 {
		t.Errorf("asked %v; want nothing", asked)
	}
}

// A refusal is an *api.Error with its code and status; a gateway that
// does not know the calls is ErrNoHoldCalls; a hostile or faulty answer is
// bounded and must fit the question.
func TestHoldBadAnswers(t *testing.T) {
	ctx := context.Background()
	g := newAgreementGateway(t, refusal(api.CodeAlreadyHeld, "held\nevx: forged"))
	var ae *api.Error
	if _, err := g.client.PlaceHold(ctx, holdID, "r", "ref"); !errors.As(err, &ae) || ae.Code != api.CodeAlreadyHeld || ae.HTTPStatus != 409 ||
		strings.Contains(ae.Message, "\n") {
		t.Errorf("refused hold: %v", err)
	}
	g = newAgreementGateway(t, refusal(api.CodeNotFound, "no bundle"))
	if _, err := g.client.ReleaseHold(ctx, holdID, "r"); !errors.As(err, &ae) || ae.Code != api.CodeNotFound {
		t.Errorf("release of an unknown bundle: %v, want not-found", err)
	}
	g = newAgreementGateway(t, func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) })
	if _, err := g.client.Holds(ctx); !errors.Is(err, client.ErrNoHoldCalls) {
		t.Errorf("older gateway: %v, want ErrNoHoldCalls", err)
	}

	other := aHold()
	other.BundleID = "1" + holdID[1:]
	notReleased := aHold()
	badInList := api.HoldList{Gateway: "DE", Holds: []api.Hold{aHold(), {BundleID: "../x"}}}
	huge := func(w http.ResponseWriter, r *http.Request) {
		head, tail := `{"gateway":"DE","holds":[],"x":"`, `"}`
		body := head + strings.Repeat("a", 24<<20-len(head)-len(tail)) + tail
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(200)
		io.WriteString(w, body)
	}
	for _, tc := range []struct {
		name   string
		answer func(http.ResponseWriter, *http.Request)
		call   func(c *client.Client) error
	}{
		{"another bundle", answerJSON(200, other), func(c *client.Client) error { _, err := c.PlaceHold(ctx, holdID, "r", "ref"); return err }},
		{"placed and released", answerJSON(200, func() api.Hold { h := aHold(); h.Released = &api.HoldRelease{}; return h }()),
			func(c *client.Client) error { _, err := c.PlaceHold(ctx, holdID, "r", "ref"); return err }},
		{"release not released", answerJSON(200, notReleased), func(c *client.Client) error { _, err := c.ReleaseHold(ctx, holdID, "r"); return err }},
		{"bad id in the list", answerJSON(200, badInList), func(c *client.Client) error { _, err := c.Holds(ctx); return err }},
		{"huge list", huge, func(c *client.Client) error { _, err := c.Holds(ctx); return err }},
		{"not JSON", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "<html>") },
			func(c *client.Client) error { _, err := c.Holds(ctx); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newAgreementGateway(t, tc.answer)
			if err := tc.call(g.client); !errors.Is(err, client.ErrBadAnswer) {
				t.Fatalf("got %v; want ErrBadAnswer", err)
			}
		})
	}
}
