package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"evx/agreement"
	"evx/api"
	"evx/crypto"
	"evx/internal/evxtest"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// preflightFor is the pre-flight of bundle b as its sealing options
// (evxtest.SealOptions) describe it, to FR/prosecutor.
func preflightFor(b *evxtest.Bundle) api.PreflightRequest {
	o := evxtest.SealOptions()
	return api.PreflightRequest{Recipients: []string{"FR/prosecutor"}, Purpose: o.Purpose, Handling: o.Handling, TLP: o.TLP,
		Retention: "24h", Size: int64(len(b.Payload)), LegalBasis: o.LegalBasis}
}

// rawPost sends body to country's API at path as user, and returns the
// answer.
func rawPost(t *testing.T, tw *testWorld, country, user, path string, body io.Reader, length int64) rawAnswer {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), "POST", tw.URL(country)+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = length
	req.Header.Set("Content-Type", "application/json")
	resp, err := tw.apiHTTPClient(t, country, user, true).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		t.Fatal(err)
	}
	return rawAnswer{resp.StatusCode, resp.Header, data}
}

// logSize is the number of entries in g's transfer log.
func logSize(t *testing.T, g *Gateway) int { return len(logEntries(t, g)) }

// A pre-flight decides as the upload of the bundle it describes does: the
// same code, status and sentence for each clause of the agreement and the
// gateway's own limit, and allowed with the agreement's version and
// reference. It stores nothing at either gateway, records nothing in the
// transfer log, counts no decision, and the upload that follows is decided
// again.
func TestPreflightDecidesAsUpload(t *testing.T) {
	for _, tc := range []struct {
		name   string
		edit   func(a *agreement.Agreement)
		none   bool  // DE has no agreement with FR
		limit  int64 // DE's own maximum bundle size
		code   api.Code
		status int
		reason string
	}{
		{name: "allowed", code: "", status: 200},
		{name: "purpose", edit: func(a *agreement.Agreement) { a.Outbound = []string{"prosecution"} },
			code: api.CodePurposeNotAllowed, status: 403, reason: `agreement DE→FR v1 (ref dev-env) does not allow purpose "mutual-legal-assistance" outbound; allowed: prosecution`},
		{name: "retention", edit: func(a *agreement.Agreement) { a.MaxRetention["mutual-legal-assistance"] = 12 * time.Hour },
			code: api.CodeRetentionTooLong, status: 403, reason: "the bundle asks for 1d (it is refused, not shortened)"},
		{name: "handling", edit: func(a *agreement.Agreement) { a.Handling = []string{"H1"} }, code: api.CodeHandlingNotAccepted, status: 403, reason: `handling code "H2"`},
		{name: "tlp", edit: func(a *agreement.Agreement) { a.TLP = []string{"TLP:CLEAR"} }, code: api.CodeTLPNotAccepted, status: 403, reason: `TLP label "TLP:RED"`},
		{name: "too large for the agreement", edit: func(a *agreement.Agreement) { a.MaxBundleSize = 100 }, code: api.CodeTooLarge, status: 413, reason: "at most 100 bytes"},
		{name: "too large for the gateway", limit: 100, code: api.CodeTooLarge, status: 413, reason: "exceeds this gateway's limit of 100"},
		{name: "suspended", edit: func(a *agreement.Agreement) { a.Status, a.StatusReason = agreement.Suspended, "under review" },
			code: api.CodeAgreementSuspended, status: 403, reason: "is suspended: under review"},
		{name: "no agreement", none: true, code: api.CodeNoAgreement, status: 403, reason: "gateway DE has no agreement with FR: nothing flows with it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tw := newTestWorld(t, diskStore, func(id string, o *Options) {
				if id != "DE" {
					return
				}
				o.Agreements = nil
				if !tc.none {
					o.Agreements = []*agreement.Agreement{agreementWith("FR", tc.edit)}
				}
				if tc.limit > 0 {
					o.MaxBundleSize = tc.limit
				}
			})
			tw.Start(t, "DE")
			tw.Start(t, "FR")
			ctx := t.Context()
			de, deKey := tw.Client("DE", "forensics")
			b := evxtest.Seal(t, deKey, []crypto.PublicKey{tw.recipientKey("FR", "prosecutor")}, 1000)
			// DE keeps FR's directory at the first lookup, which is no
			// part of what a pre-flight must leave alone.
			if _, err := de.Lookup(ctx, "FR/prosecutor"); err != nil {
				t.Fatal(err)
			}
			deBefore, frBefore := bundleObjects(t, tw, "DE"), bundleObjects(t, tw, "FR")
			logBefore := logSize(t, tw.gw("DE"))
			for range 2 {
				p, err := de.Preflight(ctx, preflightFor(b))
				if tc.code == "" {
					if err != nil || !p.Allowed || p.Peer != "FR" || p.Agreement.Version != 1 || p.Agreement.Ref != "dev-env" {
						t.Fatalf("pre-flight: %+v, %v; want allowed by FR's agreement v1 ref dev-env", p, err)
					}
					continue
				}
				var ae *api.Error
				if !errors.As(err, &ae) || ae.Code != tc.code || ae.HTTPStatus != tc.status || !strings.Contains(ae.Message, tc.reason) {
					t.Fatalf("pre-flight: %+v, %v; want %d %s saying %q", p, err, tc.status, tc.code, tc.reason)
				}
			}
			wantUnchanged(t, "DE's storage", deBefore, bundleObjects(t, tw, "DE"))
			wantUnchanged(t, "FR's storage", frBefore, bundleObjects(t, tw, "FR"))
			if n := logSize(t, tw.gw("DE")); n != logBefore {
				t.Errorf("DE's transfer log went from %d to %d entries with pre-flights; want none recorded", logBefore, n)
			}
			if got := testutil.CollectAndCount(tw.gw("DE").metrics.agreementDecisions); got != 0 {
				t.Errorf("DE counted %d agreement decisions for pre-flights, want none", got)
			}

			// The upload meets the same answer.
			preflight, _ := de.Preflight(ctx, preflightFor(b))
			_, perr := de.Preflight(ctx, preflightFor(b))
			_, uerr := upload(ctx, de, b)
			if tc.code == "" {
				if uerr != nil || preflight == nil {
					t.Fatalf("upload after an allowed pre-flight: %v", uerr)
				}
				return
			}
			var pe, ue *api.Error
			if !errors.As(perr, &pe) || !errors.As(uerr, &ue) || *pe != *ue {
				t.Errorf("pre-flight answered %#v, the upload %#v; want the same", perr, uerr)
			}
		})
	}
}

// A pre-flight reads the rate limits without using them up: any number of
// pre-flights leave the hour's allowance to the uploads, and once the
// uploads have used it up the pre-flight is refused as the next upload is,
// rate-limited with a Retry-After.
func TestPreflightRateLimit(t *testing.T) {
	tw := newTestWorld(t, diskStore, func(id string, o *Options) {
		if id == "DE" {
			o.Agreements = []*agreement.Agreement{agreementWith("FR", func(a *agreement.Agreement) { a.RateBundles = 2 })}
		}
	})
	tw.Start(t, "DE")
	tw.Start(t, "FR")
	ctx := t.Context()
	de, deKey := tw.Client("DE", "forensics")
	to := []crypto.PublicKey{tw.recipientKey("FR", "prosecutor")}
	bs := []*evxtest.Bundle{evxtest.Seal(t, deKey, to, 1000), evxtest.Seal(t, deKey, to, 1000), evxtest.Seal(t, deKey, to, 1000)}
	for i := range 5 {
		if _, err := de.Preflight(ctx, preflightFor(bs[0])); err != nil {
			t.Fatalf("pre-flight %d: %v; want allowed", i+1, err)
		}
	}
	for i, b := range bs[:2] {
		if _, err := upload(ctx, de, b); err != nil {
			t.Fatalf("upload %d after five pre-flights: %v; want allowed (a pre-flight must not count)", i+1, err)
		}
	}
	body, err := json.Marshal(preflightFor(bs[2]))
	if err != nil {
		t.Fatal(err)
	}
	a := rawPost(t, tw, "DE", "forensics", "/v1/preflight", bytes.NewReader(body), int64(len(body)))
	if a.status != http.StatusTooManyRequests || a.code() != api.CodeRateLimited {
		t.Fatalf("pre-flight over the limit: %d %s, want 429 rate-limited", a.status, a.body)
	}
	if s, err := strconv.Atoi(a.header.Get("Retry-After")); err != nil || s < 1 || s > 3600 {
		t.Errorf("Retry-After %q, want seconds from 1 to 3600", a.header.Get("Retry-After"))
	}
	if !strings.Contains(string(a.body), "allows 2 bundles an hour outbound: the limit is reached; retry after") {
		t.Errorf("pre-flight over the limit says %s", a.body)
	}
	var ae *api.Error
	if _, err := upload(ctx, de, bs[2]); !errors.As(err, &ae) || ae.Code != api.CodeRateLimited {
		t.Fatalf("third upload: %v, want rate-limited as the pre-flight said", err)
	}
}

// Only submitters may ask: the other roles are refused as for an upload.
func TestPreflightRoles(t *testing.T) {
	tw := startWorld(t, diskStore)
	b := evxtest.Seal(t, tw.Dev.Country("DE").User("forensics").Key, []crypto.PublicKey{tw.recipientKey("FR", "prosecutor")}, 100)
	for _, user := range []string{"prosecutor", "operator", "auditor"} {
		c, _ := tw.Client("DE", user)
		_, err := c.Preflight(t.Context(), preflightFor(b))
		if !isAPIError(err, 403, "forbidden") {
			t.Errorf("pre-flight by DE/%s: %v, want 403 forbidden", user, err)
		}
	}
}

// Bad input is refused, as bad-preflight, or as the upload refuses the
// recipients, before anything is decided; a body over the limit is
// refused whether it declares its length or not.
func TestPreflightBadInput(t *testing.T) {
	tw := startWorld(t, diskStore)
	good := `"purpose":"mutual-legal-assistance","handling":"H2","tlp":"TLP:RED","retention":"24h","size":1000`
	to := `"recipients":["FR/prosecutor"],`
	big := `{` + to + good + `,"legal_basis":"` + strings.Repeat("x", api.MaxPreflightBody) + `"}`
	for _, tc := range []struct {
		name, body string
		chunked    bool
		status     int
		code       api.Code
		says       string
	}{
		{"not JSON", `{"recipients":`, false, 400, api.CodeBadPreflight, "not a pre-flight request"},
		{"unknown member", `{` + to + good + `,"retain":"24h"}`, false, 400, api.CodeBadPreflight, `unknown field "retain"`},
		{"member twice", `{` + to + good + `,"purpose":"prosecution"}`, false, 400, api.CodeBadPreflight, "purpose"},
		{"two values", `{` + to + good + `} {}`, false, 400, api.CodeBadPreflight, "more than one JSON value"},
		{"over the limit", big, false, 400, api.CodeBadPreflight, "over the limit"},
		{"over the limit, chunked", big, true, 400, api.CodeBadPreflight, "over the limit"},
		{"no recipients", `{` + good + `}`, false, 400, api.CodeBadPreflight, "no recipients"},
		{"bad unit id", `{"recipients":["prosecutor"],` + good + `}`, false, 400, api.CodeBadPreflight, `recipient "prosecutor": want COUNTRY/unit`},
		{"unknown purpose", `{` + to + strings.Replace(good, "mutual-legal-assistance", "curiosity", 1) + `}`, false, 400, api.CodeBadPreflight, "curiosity"},
		{"no retention", `{` + to + strings.Replace(good, `"retention":"24h",`, "", 1) + `}`, false, 400, api.CodeBadPreflight, "give retain_until or retention"},
		{"both retentions", `{` + to + good + `,"retain_until":"2030-01-01T00:00:00Z"}`, false, 400, api.CodeBadPreflight, "not both"},
		{"retention too long", `{` + to + strings.Replace(good, "24h", "3651d", 1) + `}`, false, 400, api.CodeBadPreflight, "retention"},
		{"retain_until past", `{` + to + strings.Replace(good, `"retention":"24h"`, `"retain_until":"2020-01-01T00:00:00Z"`, 1) + `}`, false, 400, api.CodeBadPreflight, "retain_until 2020-01-01T00:00:00Z is not in the future"},
		{"size zero", `{` + to + strings.Replace(good, "1000", "0", 1) + `}`, false, 400, api.CodeBadPreflight, "size 0 out of range"},
		{"legal basis", `{` + to + good + `,"legal_basis":"a\u0007b"}`, false, 400, api.CodeBadPreflight, "legal_basis"},
		{"local recipient", `{"recipients":["DE/prosecutor"],` + good + `}`, false, 400, api.CodeUnknownRecipient, "DE/prosecutor"},
		{"unknown recipient", `{"recipients":["FR/nobody"],` + good + `}`, false, 400, api.CodeUnknownRecipient, "FR/nobody"},
		{"not a recipient", `{"recipients":["FR/forensics"],` + good + `}`, false, 400, api.CodeUnknownRecipient, "FR/forensics is not a recipient unit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			length := int64(len(tc.body))
			var body io.Reader = strings.NewReader(tc.body)
			if tc.chunked {
				length, body = -1, io.MultiReader(body) // hides the length
			}
			a := rawPost(t, tw, "DE", "forensics", "/v1/preflight", body, length)
			var e api.ErrorBody
			if json.Unmarshal(a.body, &e) != nil || e.Error == nil {
				t.Fatalf("answer %d %s, not an API error", a.status, a.body)
			}
			if a.status != tc.status || e.Error.Code != tc.code || !strings.Contains(e.Error.Message, tc.says) {
				t.Errorf("answer %d %s\nwant %d %s saying %q", a.status, a.body, tc.status, tc.code, tc.says)
			}
		})
	}
	// Each one is a refusal, which is counted; none is a decision.
	if got := testutil.ToFloat64(tw.gw("DE").metrics.refusals.WithLabelValues("api", string(api.CodeBadPreflight))); got < 1 {
		t.Errorf(`evx_refusals_total{where="api",code="bad-preflight"} = %v, want the refusals counted`, got)
	}
	if got := testutil.CollectAndCount(tw.gw("DE").metrics.agreementDecisions); got != 0 {
		t.Errorf("DE counted %d agreement decisions for bad pre-flights, want none", got)
	}
}

// A pre-flight's body has a deadline as a whole (the stall timeout): one
// that never ends is refused then, on HTTP/1.1 and HTTP/2, and does not
// hold the request open.
func TestPreflightBodyDeadline(t *testing.T) {
	tw := newTestWorld(t, diskStore, func(_ string, o *Options) { o.UploadStallTimeout = 200 * time.Millisecond })
	tw.Start(t, "DE")
	tw.Start(t, "FR")
	for _, h2 := range []bool{false, true} {
		pr, pw := io.Pipe()
		wrote := make(chan struct{})
		go func() {
			defer close(wrote)
			// A start of a body, then nothing until the test ends.
			pw.Write([]byte(`{"recipients":[`))
		}()
		t.Cleanup(func() {
			pw.Close()
			<-wrote
		})
		req, err := http.NewRequestWithContext(t.Context(), "POST", tw.URL("DE")+"/v1/preflight", pr)
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = 1000
		resp, err := tw.apiHTTPClient(t, "DE", "forensics", h2).Do(req)
		if err != nil {
			t.Fatalf("h2=%v: %v", h2, err)
		}
		var e api.ErrorBody
		err = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&e)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 400 || e.Error == nil || e.Error.Code != api.CodeBadPreflight || !strings.Contains(e.Error.Message, "did not arrive whole within 200ms") {
			t.Errorf("h2=%v: %d %+v, %v; want 400 bad-preflight for a body that does not arrive", h2, resp.StatusCode, e.Error, err)
		}
	}
}
