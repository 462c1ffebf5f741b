package client_test

import (
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"evx/api"
	"evx/client"
	"evx/crypto"
	"evx/internal/devenv"
	"evx/internal/evxtest"
)

// fakeGateway impersonates FR's gateway towards FR's prosecutor: it has
// FR's gateway certificate and requires a client certificate from FR's CA,
// as the real one does, and answers from bundles sealed in the test. Tests
// make it misbehave by changing its fields before the client asks; it
// records every request, so that tests can tell what the client fetched.
type fakeGateway struct {
	t       *testing.T
	srv     *httptest.Server
	dev     *devenv.World
	bundles map[string]*evxtest.Bundle

	// Faults, set by tests.
	entryFor      map[string]string                          // answer GET /v1/inbox/{id} with another bundle's entry
	senderCheck   string                                     // the entry's sender_check
	signingKey    string                                     // the directory's signing key for DE/forensics, if set
	keptDirectory *crypto.Signed                             // the entry's sender_directory, if set
	payload       func(http.ResponseWriter, *evxtest.Bundle) // serves the payload, if set
	refuse        *api.Error                                 // answer every request with this refusal, if set
	refuseRawBody string                                     // or with this body and status 403

	mu       sync.Mutex
	requests []string
}

func newFakeGateway(t *testing.T) *fakeGateway {
	t.Helper()
	dev, err := devenv.New("DE", "FR")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeGateway{t: t, dev: dev, bundles: map[string]*evxtest.Bundle{}, entryFor: map[string]string{},
		senderCheck: "signing key listed for DE/forensics in the directory of DE"}
	fr := dev.Country("FR")
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	f.srv.TLS = &tls.Config{Certificates: []tls.Certificate{fr.Cert}, ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs: fr.CAPool(), MinVersion: tls.VersionTLS13}
	f.srv.StartTLS()
	t.Cleanup(f.srv.Close)
	return f
}

// seal seals a bundle of size bytes from DE/forensics to FR/prosecutor and
// serves it.
func (f *fakeGateway) seal(size int) *evxtest.Bundle {
	f.t.Helper()
	prosecutor := f.dev.Country("FR").User("prosecutor").Key.Public()
	b := evxtest.Seal(f.t, f.dev.Country("DE").User("forensics").Key,
		[]crypto.PublicKey{{Unit: prosecutor.Unit, AgeRecipient: prosecutor.AgeRecipient}}, size)
	f.bundles[b.Env.BundleID] = b
	return b
}

// client returns FR's prosecutor's client of the fake gateway and unit key.
func (f *fakeGateway) client() (*client.Client, *crypto.UnitKey) {
	fr := f.dev.Country("FR")
	u := fr.User("prosecutor")
	return client.New(f.srv.URL, u.Cert, &tls.Config{RootCAs: fr.CAPool()}), u.Key
}

// asked returns the requests made so far, as "METHOD path".
func (f *fakeGateway) asked() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.requests...)
}

// askedFor reports whether any request's path ends with suffix.
func (f *fakeGateway) askedFor(suffix string) bool {
	for _, r := range f.asked() {
		if strings.HasSuffix(r, suffix) {
			return true
		}
	}
	return false
}

func (f *fakeGateway) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.requests = append(f.requests, r.Method+" "+r.URL.Path)
	f.mu.Unlock()
	if f.refuse != nil {
		writeJSON(w, f.refuse.Code.Status(), api.ErrorBody{Error: f.refuse})
		return
	}
	if f.refuseRawBody != "" {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, f.refuseRawBody)
		return
	}
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/v1/"), "/")
	switch {
	case r.Method == "GET" && len(parts) == 3 && parts[0] == "directory":
		de := f.dev.Country("DE").User("forensics")
		e := crypto.DirectoryEntry{Unit: de.Unit, Role: string(api.RoleSubmitter), SigningKey: de.Key.Public().SigningKey}
		if f.signingKey != "" {
			e.SigningKey = f.signingKey
		}
		writeJSON(w, 200, e)
	case r.Method == "GET" && len(parts) == 1 && parts[0] == "peers":
		writeJSON(w, 200, []api.Peer{{ID: "DE", SigningKey: f.dev.Country("DE").Signing.Signer().Public()}})
	case r.Method == "GET" && len(parts) == 2 && parts[0] == "inbox":
		id := parts[1]
		if other, ok := f.entryFor[id]; ok {
			id = other
		}
		b := f.bundles[id]
		if b == nil {
			writeJSON(w, 404, api.ErrorBody{Error: api.Errorf(api.CodeNotFound, "no bundle %q in your inbox", id)})
			return
		}
		writeJSON(w, 200, api.InboxEntry{
			BundleID: b.Env.BundleID, From: "DE", Sender: b.Env.Sender.Unit, Purpose: b.Env.Purpose,
			LegalBasis: b.Env.LegalBasis, Handling: b.Env.Handling, TLP: b.Env.TLP, Size: b.Env.PayloadSize,
			ReceivedAt: time.Now().UTC(), RetainUntil: b.Env.RetainUntil, SenderCheck: f.senderCheck,
			Envelope: b.EnvJSON, Signature: b.Sig, SenderDirectory: f.keptDirectory,
		})
	case r.Method == "GET" && len(parts) == 3 && parts[0] == "inbox" && parts[2] == "payload":
		b := f.bundles[parts[1]]
		if b == nil {
			writeJSON(w, 404, api.ErrorBody{Error: api.Errorf(api.CodeNotFound, "no bundle")})
			return
		}
		if f.payload != nil {
			f.payload(w, b)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(b.Payload)))
		w.Write(b.Payload)
	case r.Method == "POST" && len(parts) == 3 && parts[0] == "inbox" && parts[2] == "ack":
		writeJSON(w, 200, api.Acknowledged{BundleID: parts[1], Status: "acknowledged"})
	default:
		http.NotFound(w, r)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// signedDirectory returns DE's directory listing key as DE/forensics's
// signing key, signed by signer.
func (f *fakeGateway) signedDirectory(signer *crypto.SigningKey, key string) *crypto.Signed {
	f.t.Helper()
	d, err := signer.SignDirectory(crypto.Directory{Format: crypto.DirectoryFormat, Gateway: "DE",
		Issued: "2026-12-01T10:00:00Z", Units: []crypto.DirectoryEntry{{Unit: "DE/forensics", Role: string(api.RoleSubmitter), SigningKey: key}}})
	if err != nil {
		f.t.Fatal(err)
	}
	return d
}
