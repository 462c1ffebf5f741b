package main

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"evx/api"
	"evx/internal/devenv"
)

// Against a gateway older than GET /v1/bundles/{id}, which answers it
// with a plain 404, status asks for the delivery state as before and
// prints it; a not-found of the API itself is the answer, not a reason to
// ask again.
func TestStatusOlderGateway(t *testing.T) {
	id := "0af3c2d4e5f60718293a4b5c6d7e8f90"
	now := time.Date(2026, 12, 3, 17, 0, 0, 0, time.UTC)
	status := api.OutboxStatus{BundleID: id, State: api.StateQueued, Peer: "FR", SubmittedBy: "DE/forensics", Submitted: &now}
	for _, tc := range []struct {
		name      string
		bundles   func(http.ResponseWriter, *http.Request)
		wantAsked []string
		wantOut   string
		wantErr   string
	}{
		{"older", func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) },
			[]string{"/v1/bundles/" + id, "/v1/outbox/" + id}, "state         queued\n", ""},
		{"not-found", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(404)
			json.NewEncoder(w).Encode(api.ErrorBody{Error: api.Errorf(api.CodeNotFound, "no bundle")})
		}, []string{"/v1/bundles/" + id}, "", "not-found: no bundle"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			var asked []string
			profile := fakeGatewayProfile(t, func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				asked = append(asked, r.URL.Path)
				mu.Unlock()
				switch {
				case strings.HasPrefix(r.URL.Path, "/v1/bundles/"):
					tc.bundles(w, r)
				case r.URL.Path == "/v1/outbox/"+id:
					json.NewEncoder(w).Encode(status)
				default:
					http.NotFound(w, r)
				}
			})
			var stdout, stderr bytes.Buffer
			code := run([]string{"status", "--profile", profile, id}, nil, &stdout, &stderr)
			mu.Lock()
			defer mu.Unlock()
			if !slices.Equal(asked, tc.wantAsked) {
				t.Errorf("asked %q, want %q", asked, tc.wantAsked)
			}
			if tc.wantErr != "" {
				if code != 3 || !strings.Contains(stderr.String(), tc.wantErr) {
					t.Errorf("exit %d, stderr %q; want 3 and %q", code, stderr.String(), tc.wantErr)
				}
				return
			}
			if code != 0 || !strings.Contains(stdout.String(), tc.wantOut) || strings.Contains(stdout.String(), "retention") {
				t.Errorf("exit %d:\n%s%s", code, stdout.String(), stderr.String())
			}
		})
	}
}

// fakeGatewayProfile serves handler as DE's gateway and returns the path of
// DE/forensics' profile pointed at it.
func fakeGatewayProfile(t *testing.T, handler http.HandlerFunc) string {
	t.Helper()
	world, err := devenv.New("DE", "FR")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := world.WriteFiles(dir, nil); err != nil {
		t.Fatal(err)
	}
	de := world.Country("DE")
	srv := httptest.NewUnstartedServer(handler)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{de.Cert}, ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs: de.CAPool(), MinVersion: tls.VersionTLS13}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	profile := filepath.Join(dir, "DE", "forensics", "profile.yaml")
	data, err := os.ReadFile(profile)
	if err != nil {
		t.Fatal(err)
	}
	data = regexp.MustCompile(`(?m)^gateway: .*$`).ReplaceAll(data, []byte("gateway: "+srv.URL))
	if err := os.WriteFile(profile, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return profile
}

// Retention is said with the time left counted from the gateway's time,
// and a held or expired bundle says so, with the hold's reason.
func TestRetentionText(t *testing.T) {
	at := time.Date(2026, 12, 3, 17, 0, 0, 0, time.UTC)
	until := at.Add(3*time.Hour + 12*time.Minute + 30*time.Second)
	hold := &api.Hold{Reason: "preserve for the trial", Reference: "LG Berlin 12 O 34/26"}
	for _, tc := range []struct {
		r        api.Retention
		h        *api.Hold
		received bool
		want     string
	}{
		{api.Retention{State: api.RetentionKept, Until: until}, nil, true, "expires in 3h12m (2026-12-03T20:12:30Z)"},
		{api.Retention{State: api.RetentionExpired, Until: at}, nil, true, "expired at 2026-12-03T17:00:00Z, unreadable"},
		{api.Retention{State: api.RetentionExpired, Until: at}, nil, false, "expired at 2026-12-03T17:00:00Z; the records are being deleted"},
		{api.Retention{State: api.RetentionHeld, Until: at, Held: true}, hold, true,
			"held: preserve for the trial (LG Berlin 12 O 34/26); retain-until 2026-12-03T17:00:00Z"},
		{api.Retention{State: api.RetentionHeld, Until: at, Held: true}, nil, true, "held by a legal hold; retain-until 2026-12-03T17:00:00Z"},
	} {
		if got := retentionText(tc.r, at, tc.h, tc.received); got != tc.want {
			t.Errorf("retentionText(%+v) = %q, want %q", tc.r, got, tc.want)
		}
	}
	for d, want := range map[time.Duration]string{
		0: "under a second", 45 * time.Second: "45s", 12*time.Minute + 59*time.Second: "12m",
		3*time.Hour + 12*time.Minute: "3h12m", 47*time.Hour + 59*time.Minute: "47h59m",
		48 * time.Hour: "2d", 30*24*time.Hour - time.Second: "29d23h", 90 * 24 * time.Hour: "90d",
	} {
		if got := formatLeft(d); got != want {
			t.Errorf("formatLeft(%v) = %q, want %q", d, got, want)
		}
	}
	now := at
	for r, want := range map[api.Retention]string{
		{State: api.RetentionKept, Until: until}: "kept, 3h12m left",
		{State: api.RetentionKept, Until: at}:    "kept, expiring",
		{State: api.RetentionHeld, Until: until}: "held (until 2026-12-03T20:12:30Z)",
		{State: api.RetentionExpired, Until: at}: "expired",
		{}:                                       "-",
		{State: "gone\x1b[2J", Until: at}:        `gone\x1b[2J`,
	} {
		if got := retentionColumn(r, now); got != want {
			t.Errorf("retentionColumn(%+v) = %q, want %q", r, got, want)
		}
	}
}
