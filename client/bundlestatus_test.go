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

func aBundleState() api.BundleState {
	until := time.Date(2027, 3, 3, 17, 0, 0, 0, time.UTC)
	submitted := time.Date(2026, 12, 3, 17, 0, 0, 0, time.UTC)
	return api.BundleState{BundleID: holdID, Gateway: "DE", At: submitted.Add(time.Hour),
		Outbox: &api.SentState{
			OutboxStatus:  api.OutboxStatus{BundleID: holdID, State: api.StateQueued, Peer: "FR", SubmittedBy: "DE/forensics", Submitted: &submitted},
			Retention:     api.Retention{State: api.RetentionKept, Until: until},
			PayloadStored: true,
		}}
}

// BundleState asks GET /v1/bundles/{id} and decodes the answer.
func TestBundleStateCall(t *testing.T) {
	ctx := context.Background()
	want := aBundleState()
	want.Hold = &api.Hold{BundleID: holdID, Boxes: []string{"outbox"}, Reason: "trial", Reference: "LG Berlin 12 O 34/26"}
	g := newAgreementGateway(t, answerJSON(200, want))
	st, err := g.client.BundleState(ctx, holdID)
	if err != nil {
		t.Fatal(err)
	}
	if st.Outbox == nil || st.Outbox.Peer != "FR" || st.Outbox.Retention != want.Outbox.Retention || !st.Outbox.PayloadStored ||
		st.Hold == nil || st.Hold.Reference != want.Hold.Reference || !st.At.Equal(want.At) {
		t.Errorf("got %+v; want %+v", st, want)
	}
	if got := g.requests(); !slices.Equal(got, []string{"GET /v1/bundles/" + holdID}) {
		t.Errorf("asked %q", got)
	}
}

// An id that is not a bundle id is refused before anything is sent.
func TestBundleStateBadID(t *testing.T) {
	g := newAgreementGateway(t, answerJSON(200, aBundleState()))
	for _, id := range []string{"", "../holds", strings.ToUpper(holdID), holdID[:31], holdID + "0"} {
		if _, err := g.client.BundleState(context.Background(), id); err == nil || !strings.Contains(err.Error(), "is not a bundle id") {
			t.Errorf("BundleState(%q): %v", id, err)
		}
	}
	if asked := g.requests(); len(asked) > 0 {
		t.Errorf("asked %v; want nothing", asked)
	}
}

// A refusal is an *api.Error, not-found included; a gateway that does not
// know the call is ErrNoBundleState, so that evx status asks the older
// call; a hostile or faulty answer is bounded and must fit the question.
func TestBundleStateBadAnswers(t *testing.T) {
	ctx := context.Background()
	var ae *api.Error
	g := newAgreementGateway(t, refusal(api.CodeNotFound, "no bundle"))
	if _, err := g.client.BundleState(ctx, holdID); !errors.As(err, &ae) || ae.Code != api.CodeNotFound || errors.Is(err, client.ErrNoBundleState) {
		t.Errorf("not-found: %v", err)
	}
	for _, older := range []func(http.ResponseWriter, *http.Request){
		func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) },
		func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
		},
	} {
		g := newAgreementGateway(t, older)
		if _, err := g.client.BundleState(ctx, holdID); !errors.Is(err, client.ErrNoBundleState) {
			t.Errorf("older gateway: %v, want ErrNoBundleState", err)
		}
	}

	edit := func(f func(*api.BundleState)) api.BundleState {
		st := aBundleState()
		f(&st)
		return st
	}
	huge := func(w http.ResponseWriter, r *http.Request) {
		head, tail := `{"bundle_id":"`+holdID+`","x":"`, `"}`
		body := head + strings.Repeat("a", 1<<20) + tail
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(200)
		io.WriteString(w, body)
	}
	for _, tc := range []struct {
		name   string
		answer func(http.ResponseWriter, *http.Request)
	}{
		{"another bundle", answerJSON(200, edit(func(s *api.BundleState) { s.BundleID = "1" + holdID[1:] }))},
		{"another bundle's delivery", answerJSON(200, edit(func(s *api.BundleState) { s.Outbox.BundleID = "1" + holdID[1:] }))},
		{"another bundle's entry", answerJSON(200, edit(func(s *api.BundleState) {
			s.Inbox = &api.InboxEntry{BundleID: "../x", Retention: api.Retention{State: api.RetentionKept}}
		}))},
		{"another bundle's hold", answerJSON(200, edit(func(s *api.BundleState) { s.Hold = &api.Hold{BundleID: "1" + holdID[1:]} }))},
		{"nothing", answerJSON(200, edit(func(s *api.BundleState) { s.Outbox = nil }))},
		{"unknown retention state", answerJSON(200, edit(func(s *api.BundleState) { s.Outbox.Retention.State = "gone\x1b[2J" }))},
		{"unknown delivery state", answerJSON(200, edit(func(s *api.BundleState) { s.Outbox.State = "lost" }))},
		{"huge", huge},
		{"not JSON", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "<html>") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newAgreementGateway(t, tc.answer)
			_, err := g.client.BundleState(ctx, holdID)
			if !errors.Is(err, client.ErrBadAnswer) {
				t.Fatalf("got %v; want ErrBadAnswer", err)
			}
			if strings.ContainsAny(err.Error(), "\x1b\n") {
				t.Errorf("the error carries control characters: %q", err)
			}
		})
	}
}
