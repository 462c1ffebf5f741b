package gateway

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"evx/api"
	"evx/client"
	"evx/crypto"
	"evx/internal/devenv"
	"evx/internal/evxtest"
	"evx/storage"
	"evx/transfer"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap/zaptest/observer"
)

// newUser makes a key and a client certificate from country's CA for a
// user that the gateway knows only if the test adds it to the options.
func (tw *testWorld) newUser(t *testing.T, country, name string, role api.Role) *devenv.User {
	t.Helper()
	u := &devenv.User{Name: name, Unit: country + "/" + name, Role: role}
	var err error
	if u.Key, err = crypto.GenerateUnitKey(u.Unit); err != nil {
		t.Fatal(err)
	}
	u.Cert, err = tw.Dev.Country(country).CA.Issue(crypto.CertRequest{CommonName: u.Unit, URIs: []string{crypto.UnitURI(u.Unit)}, Client: true})
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestRefusals checks that each kind of bad input is refused with its error
// code, stores nothing and is logged with that code.
func TestRefusals(t *testing.T) { forEachBackend(t, testRefusals) }

func testRefusals(t *testing.T, newStore func(testing.TB, string) storage.Backend) {
	// FR/judge is a second recipient, to whom the bundles below are not
	// addressed; DE/lab is a second submitter.
	extra := map[string]*devenv.User{}
	// handshakeFailed gets the category of each failed TLS handshake of
	// DE's API, once it is counted and logged.
	handshakeFailed := make(chan string, 16)
	tw := newTestWorld(t, newStore, func(id string, o *Options) {
		if u := extra[id]; u != nil {
			o.Users = append(o.Users, User{Unit: u.Unit, Role: u.Role, Key: u.Key.Public()})
		}
		if id == "DE" {
			o.onAPIHandshakeFailed = func(reason string) {
				select {
				case handshakeFailed <- reason:
				default:
				}
			}
		}
	})
	extra["FR"] = tw.newUser(t, "FR", "judge", api.RoleRecipient)
	extra["DE"] = tw.newUser(t, "DE", "lab", api.RoleSubmitter)
	tw.Start(t, "DE")
	tw.Start(t, "FR")
	ctx := context.Background()
	deStore, frStore := tw.Stores["DE"], tw.Stores["FR"]
	deLogs, frLogs := tw.Logs["DE"], tw.Logs["FR"]

	de, deKey := tw.Client("DE", "forensics")
	prosecutor := tw.recipientKey("FR", "prosecutor")
	delivered := evxtest.Seal(t, deKey, []crypto.PublicKey{prosecutor}, 20_000)
	if _, err := upload(ctx, de, delivered); err != nil {
		t.Fatal(err)
	}
	if _, err := client.WaitDelivered(ctx, de, delivered.Env.BundleID, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	id := delivered.Env.BundleID

	// apiRefused checks an API answer: the error code, nothing changed in
	// st, and the refusal logged with the code and the caller's unit.
	apiRefused := func(t *testing.T, err error, status int, code, unit string, logs *observer.ObservedLogs) {
		t.Helper()
		if !isAPIError(err, status, code) {
			t.Errorf("err = %v, want %d %s", err, status, code)
			return
		}
		e := wantLogged(t, logs, "request refused", code)
		if got := e.ContextMap()["unit"]; got != unit {
			t.Errorf("refusal logged for unit %v, want %s", got, unit)
		}
	}

	t.Run("user without a role", func(t *testing.T) {
		before := objects(t, deStore)
		u := tw.newUser(t, "DE", "intruder", api.RoleSubmitter) // a certificate, but no entry in users
		c := tw.ClientWithCert("DE", u.Cert)
		_, err := c.WhoAmI(ctx)
		apiRefused(t, err, 403, "no-role", "DE/intruder", deLogs)
		b := evxtest.Seal(t, u.Key, []crypto.PublicKey{prosecutor}, 1000)
		_, err = upload(ctx, c, b)
		apiRefused(t, err, 403, "no-role", "DE/intruder", deLogs)
		wantUnchanged(t, "DE's storage", before, objects(t, deStore))

		fr := tw.ClientWithCert("FR", tw.newUser(t, "FR", "intruder", api.RoleRecipient).Cert)
		_, err = fr.InboxEntry(ctx, id)
		apiRefused(t, err, 403, "no-role", "FR/intruder", frLogs)
	})

	t.Run("certificate without a unit identity", func(t *testing.T) {
		cert, err := tw.Dev.Country("DE").CA.Issue(crypto.CertRequest{CommonName: "DE/forensics", Client: true})
		if err != nil {
			t.Fatal(err)
		}
		_, err = tw.ClientWithCert("DE", cert).WhoAmI(ctx)
		apiRefused(t, err, 403, "no-identity", "", deLogs)
	})

	t.Run("client certificate from another country's CA", func(t *testing.T) {
		before := objects(t, deStore)
		// FR's prosecutor is a valid user, but of FR's gateway.
		c := tw.ClientWithCert("DE", tw.Dev.Country("FR").User("prosecutor").Cert)
		_, err := c.WhoAmI(ctx)
		var ae *api.Error
		if err == nil || errors.As(err, &ae) {
			t.Fatalf("err = %v, want the TLS handshake refused", err)
		}
		// The first failure of this source in the minute: counted, and
		// logged at once.
		timeout := time.After(30 * time.Second)
		for reason := ""; reason != "bad-certificate"; {
			select {
			case reason = <-handshakeFailed:
			case <-timeout:
				t.Fatal("the refused handshake was not counted within 30 s")
			}
		}
		if n := testutil.ToFloat64(tw.gw("DE").metrics.refusals.WithLabelValues("api-handshake", "bad-certificate")); n != 1 {
			t.Errorf(`evx_refusals_total{where="api-handshake",code="bad-certificate"} = %v, want 1`, n)
		}
		wantLoggedMatch(t, deLogs, "the refused handshake", func(e observer.LoggedEntry) bool {
			return e.Message == "API handshake failed" && e.ContextMap()["reason"] == "bad-certificate" &&
				e.ContextMap()["source"] == "127.0.0.1/32"
		})
		wantUnchanged(t, "DE's storage", before, objects(t, deStore))
	})

	t.Run("submitter pulling", func(t *testing.T) {
		before := objects(t, frStore)
		c, _ := tw.Client("FR", "forensics")
		_, err := c.Inbox(ctx)
		apiRefused(t, err, 403, "forbidden", "FR/forensics", frLogs)
		_, err = c.InboxEntry(ctx, id)
		apiRefused(t, err, 403, "forbidden", "FR/forensics", frLogs)
		_, err = c.Download(ctx, id, &bytes.Buffer{})
		apiRefused(t, err, 403, "forbidden", "FR/forensics", frLogs)
		err = c.Ack(ctx, id)
		apiRefused(t, err, 403, "forbidden", "FR/forensics", frLogs)
		wantUnchanged(t, "FR's storage", before, objects(t, frStore))
	})

	t.Run("recipient pulling a bundle addressed to someone else", func(t *testing.T) {
		before := objects(t, frStore)
		c := tw.ClientWithCert("FR", extra["FR"].Cert)
		list, err := c.Inbox(ctx)
		if err != nil || len(list) != 0 {
			t.Errorf("FR/judge's inbox = %+v, %v; want it empty", list, err)
		}
		_, err = c.InboxEntry(ctx, id)
		apiRefused(t, err, 404, "not-found", "FR/judge", frLogs)
		var buf bytes.Buffer
		_, err = c.Download(ctx, id, &buf)
		apiRefused(t, err, 404, "not-found", "FR/judge", frLogs)
		if buf.Len() != 0 {
			t.Errorf("%d payload bytes served to FR/judge", buf.Len())
		}
		_, err = client.Pull(ctx, c, extra["FR"].Key, id, filepath.Join(t.TempDir(), "out"), "", nil)
		apiRefused(t, err, 404, "not-found", "FR/judge", frLogs)
		err = c.Ack(ctx, id)
		apiRefused(t, err, 404, "not-found", "FR/judge", frLogs)
		wantUnchanged(t, "FR's storage", before, objects(t, frStore))

		// A bundle id that names something outside the inbox.
		p, _ := tw.Client("FR", "prosecutor")
		_, err = p.InboxEntry(ctx, "../outbox/"+id)
		apiRefused(t, err, 404, "not-found", "FR/prosecutor", frLogs)
	})

	// api.Direct delivery forwards the upload before it is checked: the
	// peer's check must refuse it as this gateway's own would.
	for _, mode := range []api.DeliveryMode{api.Queue, api.Direct} {
		t.Run("payload size differs from the declared size, deliver="+string(mode), func(t *testing.T) {
			before, frBefore := objects(t, deStore), objects(t, frStore)
			b := evxtest.Seal(t, deKey, []crypto.PublicKey{prosecutor}, 10_000)
			n := int64(len(b.Payload))
			_, err := de.Upload(ctx, b.EnvJSON, b.Sig, bytes.NewReader(append(bytes.Clone(b.Payload), 0)), n+1, mode)
			apiRefused(t, err, 400, "size-mismatch", "DE/forensics", deLogs)
			_, err = de.Upload(ctx, b.EnvJSON, b.Sig, bytes.NewReader(b.Payload[:n-1]), n-1, mode)
			apiRefused(t, err, 400, "size-mismatch", "DE/forensics", deLogs)
			_, err = de.Upload(ctx, b.EnvJSON, b.Sig, bytes.NewReader(b.Payload), -1, mode)
			apiRefused(t, err, 411, "length-required", "DE/forensics", deLogs)
			// A body that ends before its Content-Length: the connection
			// is cut mid-upload.
			status, code := tw.rawUpload(t, "DE", tw.Dev.Country("DE").User("forensics").Cert, b, n, b.Payload[:n/2], mode)
			if status != 400 || code != "size-mismatch" {
				t.Errorf("truncated body: %d %s, want 400 size-mismatch", status, code)
			}
			wantLogged(t, deLogs, "request refused", "size-mismatch")
			wantUnchanged(t, "DE's storage", before, objects(t, deStore))
			wantUnchanged(t, "FR's storage", frBefore, objects(t, frStore))
		})

		t.Run("payload hash mismatch, deliver="+string(mode), func(t *testing.T) {
			before, frBefore := objects(t, deStore), objects(t, frStore)
			b := evxtest.Seal(t, deKey, []crypto.PublicKey{prosecutor}, 10_000)
			flipped := bytes.Clone(b.Payload)
			flipped[len(flipped)-1] ^= 1
			_, err := de.Upload(ctx, b.EnvJSON, b.Sig, bytes.NewReader(flipped), int64(len(flipped)), mode)
			apiRefused(t, err, 400, "hash-mismatch", "DE/forensics", deLogs)
			wantUnchanged(t, "DE's storage", before, objects(t, deStore))
			wantUnchanged(t, "FR's storage", frBefore, objects(t, frStore))
			if _, err := de.OutboxStatus(ctx, b.Env.BundleID); !isAPIError(err, 404, "not-found") {
				t.Errorf("outbox status of the refused bundle: %v, want 404 not-found", err)
			}
		})
	}

	t.Run("sender is not the authenticated user", func(t *testing.T) {
		before := objects(t, deStore)
		b := evxtest.Seal(t, deKey, []crypto.PublicKey{prosecutor}, 1000)
		lab := tw.ClientWithCert("DE", extra["DE"].Cert)
		_, err := upload(ctx, lab, b)
		apiRefused(t, err, 403, "sender-mismatch", "DE/lab", deLogs)
		// The right unit, but not its key on file.
		rotated, _ := crypto.GenerateUnitKey("DE/forensics")
		_, err = upload(ctx, de, evxtest.Seal(t, rotated, []crypto.PublicKey{prosecutor}, 1000))
		apiRefused(t, err, 403, "unknown-sender-key", "DE/forensics", deLogs)
		wantUnchanged(t, "DE's storage", before, objects(t, deStore))
	})

	t.Run("bundle sealed to an unknown recipient", func(t *testing.T) {
		other, _ := crypto.GenerateUnitKey("")
		otherKey := other.Public().AgeRecipient
		for _, r := range []struct {
			name string
			to   crypto.PublicKey
		}{
			{"unit not in the peer's directory", crypto.PublicKey{Unit: "FR/nobody", AgeRecipient: otherKey}},
			{"not the unit's key", crypto.PublicKey{Unit: "FR/prosecutor", AgeRecipient: otherKey}},
			{"unit that is not a recipient", crypto.PublicKey{Unit: "FR/forensics", AgeRecipient: tw.Dev.Country("FR").User("forensics").Key.Public().AgeRecipient}},
			{"a local unit", tw.recipientKey("DE", "prosecutor")},
			{"no unit id", crypto.PublicKey{AgeRecipient: otherKey}},
			{"country that is not a peer", crypto.PublicKey{Unit: "IT/prosecutor", AgeRecipient: otherKey}},
		} {
			t.Run(r.name, func(t *testing.T) {
				before := objects(t, deStore)
				_, err := upload(ctx, de, evxtest.Seal(t, deKey, []crypto.PublicKey{r.to}, 1000))
				apiRefused(t, err, 400, "unknown-recipient", "DE/forensics", deLogs)
				wantUnchanged(t, "DE's storage", before, objects(t, deStore))
			})
		}
		// Offered to FR directly by DE's gateway, past DE's own check.
		t.Run("offered to the peer", func(t *testing.T) {
			before := objects(t, frStore)
			b := evxtest.Seal(t, deKey, []crypto.PublicKey{{Unit: "FR/nobody", AgeRecipient: otherKey}}, 1000)
			c, fr := tw.peerClient(t, "DE", "FR")
			_, err := c.Send(ctx, fr, b.EnvJSON, b.Sig, bytes.NewReader(b.Payload))
			peerRefused(t, err, transfer.CodeUnknownRecipient, frLogs)
			wantUnchanged(t, "FR's storage", before, objects(t, frStore))
		})
	})

	t.Run("sender key not in the sending gateway's directory", func(t *testing.T) {
		c, fr := tw.peerClient(t, "DE", "FR")
		for _, tc := range []struct {
			name string
			key  *crypto.UnitKey
		}{
			// DE/forensics's key rotated without DE's directory knowing.
			{"rotated key", func() *crypto.UnitKey { k, _ := crypto.GenerateUnitKey("DE/forensics"); return k }()},
			// A real DE unit and its real key, but not a submitter.
			{"unit that is not a submitter", tw.Dev.Country("DE").User("prosecutor").Key},
			{"unit that does not exist", func() *crypto.UnitKey { k, _ := crypto.GenerateUnitKey("DE/ghost"); return k }()},
		} {
			t.Run(tc.name, func(t *testing.T) {
				before := objects(t, frStore)
				b := evxtest.Seal(t, tc.key, []crypto.PublicKey{prosecutor}, 1000)
				_, err := c.Send(ctx, fr, b.EnvJSON, b.Sig, bytes.NewReader(b.Payload))
				peerRefused(t, err, transfer.CodeUnknownSender, frLogs)
				wantUnchanged(t, "FR's storage", before, objects(t, frStore))
			})
		}
	})

	t.Run("payload refused by the receiving gateway", func(t *testing.T) {
		// transfer's tests check the codes; this checks that the gateway
		// keeps nothing of a payload it refuses.
		c, fr := tw.peerClient(t, "DE", "FR")
		b := evxtest.Seal(t, deKey, []crypto.PublicKey{prosecutor}, 100_000)
		flipped := bytes.Clone(b.Payload)
		flipped[len(flipped)/2] ^= 1
		for _, tc := range []struct {
			name    string
			payload []byte
			code    string
		}{
			{"shorter than declared", b.Payload[:len(b.Payload)-1], transfer.CodeSizeMismatch},
			{"hash mismatch", flipped, transfer.CodeHashMismatch},
		} {
			t.Run(tc.name, func(t *testing.T) {
				before := objects(t, frStore)
				_, err := c.Send(ctx, fr, b.EnvJSON, b.Sig, bytes.NewReader(tc.payload))
				peerRefused(t, err, tc.code, frLogs)
				wantUnchanged(t, "FR's storage", before, objects(t, frStore))
			})
		}
		// The same bundle with its true payload is then taken.
		if _, err := c.Send(ctx, fr, b.EnvJSON, b.Sig, bytes.NewReader(b.Payload)); err != nil {
			t.Fatalf("the intact bundle after refused attempts: %v", err)
		}
	})

	t.Run("duplicate delivery", func(t *testing.T) {
		before := objects(t, frStore)
		var rec inboxRecord
		if err := getJSON(ctx, frStore, key(inboxPrefix, id, recordFile), &rec); err != nil {
			t.Fatal(err)
		}
		c, fr := tw.peerClient(t, "DE", "FR")
		d, err := c.Send(ctx, fr, delivered.EnvJSON, delivered.Sig, bytes.NewReader(delivered.Payload))
		if err != nil {
			t.Fatal(err)
		}
		if !d.Duplicate || !bytes.Equal(d.Receipt.Body, rec.Receipt.Body) || !bytes.Equal(d.Receipt.Signature, rec.Receipt.Signature) {
			t.Errorf("second delivery: duplicate=%v, receipt %s; want the original receipt %s", d.Duplicate, d.Receipt.Body, rec.Receipt.Body)
		}
		wantUnchanged(t, "FR's storage", before, objects(t, frStore))

		// Submitted twice to DE: the second upload is refused.
		deBefore := objects(t, deStore)
		_, err = upload(ctx, de, delivered)
		apiRefused(t, err, 409, "duplicate", "DE/forensics", deLogs)
		wantUnchanged(t, "DE's storage", deBefore, objects(t, deStore))
	})

	t.Run("same bundle id with another payload", func(t *testing.T) {
		before := objects(t, frStore)
		other := evxtest.Seal(t, deKey, []crypto.PublicKey{prosecutor}, 20_000)
		forged := resign(t, other, deKey, func(e *crypto.Envelope) { e.BundleID = id })
		c, fr := tw.peerClient(t, "DE", "FR")
		_, err := c.Send(ctx, fr, forged.EnvJSON, forged.Sig, bytes.NewReader(forged.Payload))
		peerRefused(t, err, transfer.CodeConflict, frLogs)
		wantUnchanged(t, "FR's storage", before, objects(t, frStore))

		deBefore := objects(t, deStore)
		_, err = upload(ctx, de, forged)
		apiRefused(t, err, 409, "duplicate", "DE/forensics", deLogs)
		wantUnchanged(t, "DE's storage", deBefore, objects(t, deStore))
	})

	// Through all of the above, FR's prosecutor sees the one bundle
	// delivered at the start, intact, plus the one taken after refusals.
	p, pKey := tw.Client("FR", "prosecutor")
	list, err := p.Inbox(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 {
		t.Errorf("FR/prosecutor's inbox has %d bundles, want 2: %+v", len(list), list)
	}
	if _, err := client.Pull(ctx, p, pKey, id, filepath.Join(t.TempDir(), "out"), "", nil); err != nil {
		t.Errorf("pulling the bundle delivered first: %v", err)
	}
}

// peerRefused checks a rejection by a peer gateway and that the peer logged
// it with the same code.
func peerRefused(t *testing.T, err error, code string, logs *observer.ObservedLogs) {
	t.Helper()
	var rej *transfer.Rejection
	if !errors.As(err, &rej) || rej.Code != code {
		t.Errorf("err = %v, want a %s rejection", err, code)
		return
	}
	if rej.Reason == "" {
		t.Error("rejection without a reason")
	}
	e := wantLogged(t, logs, "refused", code)
	if e.ContextMap()["reason"] != rej.Reason {
		t.Errorf("logged reason %q, sent %q", e.ContextMap()["reason"], rej.Reason)
	}
}

// rawUpload sends an upload whose Content-Length is declared but whose body
// is body, then ends the connection for writing, as a client that fails
// mid-upload does. It returns the answer's status and error code.
func (tw *testWorld) rawUpload(t *testing.T, country string, cert tls.Certificate, b *evxtest.Bundle, declared int64, body []byte, mode api.DeliveryMode) (int, string) {
	t.Helper()
	conn, err := tls.Dial("tcp", tw.gw(country).APIAddr(), &tls.Config{
		MinVersion: tls.VersionTLS13, RootCAs: tw.Dev.Country(country).CAPool(), Certificates: []tls.Certificate{cert},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprintf(conn, "POST /v1/bundles?deliver=%s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n%s: %s\r\n%s: %s\r\n\r\n",
		mode, tw.gw(country).APIAddr(), declared,
		api.HeaderEnvelope, base64.StdEncoding.EncodeToString(b.EnvJSON),
		api.HeaderSignature, base64.StdEncoding.EncodeToString(b.Sig))
	conn.Write(body)
	if err := conn.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	defer resp.Body.Close()
	var e api.ErrorBody
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil || e.Error == nil {
		return resp.StatusCode, ""
	}
	return resp.StatusCode, string(e.Error.Code)
}

// rawGet sends GET path to country's API as one of its users, bypassing
// package client's encoding of the request, and returns the answer's status
// and error code.
func (tw *testWorld) rawGet(t *testing.T, country, user, path string) (int, api.Code) {
	t.Helper()
	resp, err := tw.apiHTTPClient(t, country, user, false).Get(tw.URL(country) + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e api.ErrorBody
	if json.NewDecoder(resp.Body).Decode(&e) != nil || e.Error == nil {
		return resp.StatusCode, ""
	}
	return resp.StatusCode, e.Error.Code
}
