package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"evx/api"
	"evx/crypto"
	"evx/internal/devenv"
	"evx/internal/evxtest"

	"github.com/spf13/cobra"
)

// terminalControls matches what must never reach a terminal from a gateway
// or a bundle: C0 controls but the line feed, DEL, C1 controls (as UTF-8
// as UTF-8; raw bytes make the text invalid UTF-8), bidirectional controls
// and line separators.
var terminalControls = regexp.MustCompile("[\x00-\x09\x0b-\x1f\x7f\u0080-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")

// hostile is what a hostile gateway puts in the text it controls.
const hostile = "\x1b]0;pwned\x07\x1b[2J\u202egnp.exe\u009b31m\nFORGED line"

// The unit commands print what a hostile gateway says, such as its sender
// check, the inbox's envelope fields, a receipt or a refusal, only as
// printable text: no escape
// sequence, bidi control or forged line reaches the terminal.
func TestHostileGatewayText(t *testing.T) {
	world, err := devenv.New("DE", "FR")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := world.WriteFiles(dir, nil); err != nil {
		t.Fatal(err)
	}
	fr := world.Country("FR")
	forensics := world.Country("DE").User("forensics")
	prosecutor := fr.User("prosecutor").Key.Public()

	// A real bundle, sealed and signed as DE/forensics would.
	b := evxtest.Seal(t, forensics.Key, []crypto.PublicKey{{Unit: prosecutor.Unit, AgeRecipient: prosecutor.AgeRecipient}}, 7)
	env, payload := b.Env, b.Payload
	id := env.BundleID

	// FR's gateway, impersonated: its certificate, FR's CA for clients,
	// and hostile text wherever the gateway writes text of its own.
	entry := api.InboxEntry{BundleID: id, From: "DE" + hostile, Sender: "DE/forensics" + hostile,
		Purpose: "mutual-legal-assistance" + hostile, LegalBasis: "EIO" + hostile, Handling: "H2" + hostile,
		TLP: "TLP:RED" + hostile, Size: env.PayloadSize, ReceivedAt: time.Now().UTC(), RetainUntil: env.RetainUntil,
		SenderCheck: "checked" + hostile, Retention: api.Retention{State: api.RetentionState("kept" + hostile), Until: env.RetainUntil}}
	now := time.Now().UTC()
	receipt := crypto.Receipt{Format: crypto.ReceiptFormat, BundleID: id, PayloadSHA256: "ab" + hostile,
		Sender: "DE" + hostile, Receiver: "FR" + hostile, ReceivedAt: now.Format(time.RFC3339)}
	body, err := json.Marshal(receipt)
	if err != nil {
		t.Fatal(err)
	}
	status := api.OutboxStatus{BundleID: id, State: api.StateDelivered, Peer: "FR" + hostile,
		SubmittedBy: "DE/forensics" + hostile, Submitted: &now, Delivered: &now,
		Receipt: &crypto.Signed{Body: body, Signature: []byte("not checked here")},
		Refusal: &api.Refusal{Code: "too-large" + hostile, Reason: "why" + hostile, At: now}}
	// The state of the bundle as a whole, held by a hostile hold, as an
	// operator of a gateway that sent and received it would see it.
	heldEntry := entry
	heldEntry.Retention = api.Retention{State: api.RetentionHeld, Until: env.RetainUntil, Held: true}
	state := api.BundleState{BundleID: id, Gateway: "FR" + hostile, At: now,
		Outbox: &api.SentState{OutboxStatus: status, Retention: heldEntry.Retention},
		Inbox:  &heldEntry,
		Hold:   &api.Hold{BundleID: id, Reason: "trial" + hostile, Reference: "ref" + hostile, By: "FR/operator" + hostile, At: now}}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/v1/bundles/" + id:
			json.NewEncoder(w).Encode(state)
		case "/v1/inbox":
			json.NewEncoder(w).Encode([]api.InboxEntry{entry})
		case "/v1/inbox/" + id:
			e := entry
			e.Envelope, e.Signature = b.EnvJSON, b.Sig
			json.NewEncoder(w).Encode(e)
		case "/v1/whoami":
			json.NewEncoder(w).Encode(api.WhoAmI{Gateway: "FR" + hostile, Unit: "FR/prosecutor", Role: api.RoleRecipient})
		case "/v1/directory/FR/prosecutor":
			json.NewEncoder(w).Encode(crypto.DirectoryEntry{Unit: "FR/prosecutor", Role: "recipient", AgeRecipient: prosecutor.AgeRecipient})
		case "/v1/outbox":
			json.NewEncoder(w).Encode(api.OutboxList{Bundles: []api.OutboxStatus{status}})
		case "/v1/outbox/" + id:
			json.NewEncoder(w).Encode(status)
		case "/v1/directory/DE/forensics":
			json.NewEncoder(w).Encode(crypto.DirectoryEntry{Unit: "DE/forensics", Role: "submitter", SigningKey: forensics.Key.Public().SigningKey})
		case "/v1/inbox/" + id + "/payload":
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Header().Set("Content-Length", strconv.Itoa(len(payload)))
			w.Write(payload)
		case "/v1/inbox/" + id + "/ack":
			json.NewEncoder(w).Encode(api.Acknowledged{BundleID: id, Status: "acknowledged"})
		default:
			w.WriteHeader(http.StatusForbidden)
			json.NewEncoder(w).Encode(api.ErrorBody{Error: &api.Error{Code: api.CodeForbidden, Message: "no" + hostile}})
		}
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{fr.Cert}, ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs: fr.CAPool(), MinVersion: tls.VersionTLS13}
	srv.StartTLS()
	defer srv.Close()
	profile := filepath.Join(dir, "FR", "prosecutor", "profile.yaml")
	data, err := os.ReadFile(profile)
	if err != nil {
		t.Fatal(err)
	}
	data = regexp.MustCompile(`(?m)^gateway: .*$`).ReplaceAll(data, []byte("gateway: "+srv.URL))
	if err := os.WriteFile(profile, data, 0o600); err != nil {
		t.Fatal(err)
	}

	// Commands run on their own, as well as through run: whoami, status
	// and outbox print what the gateway says of identities and bundles.
	for _, tc := range []struct {
		cmd  *cobra.Command
		args []string
		want []string
	}{
		{newWhoamiCmd(), []string{"--profile", profile}, []string{`gateway       FR\x1b]0;pwned\x07`}},
		{newStatusCmd(), []string{"--profile", profile, id}, []string{`peer          FR\x1b]0;pwned`,
			`by DE/forensics\x1b]0;pwned`, `receipt       FR\x1b]0;pwned`, `: too-large\x1b]0;pwned`, `: why\x1b]0;pwned`,
			`from gateway DE\x1b]0;pwned`, `held: trial\x1b]0;pwned`, `(ref\x1b]0;pwned`, `placed by FR/operator\x1b]0;pwned`}},
		{newOutboxCmd(), []string{"--profile", profile}, []string{`delivered  FR\x1b]0;pwned`}},
	} {
		var stdout bytes.Buffer
		tc.cmd.SetArgs(tc.args)
		tc.cmd.SetOut(&stdout)
		tc.cmd.SetErr(&stdout)
		if err := tc.cmd.ExecuteContext(context.Background()); err != nil {
			t.Errorf("evx %s: %v\n%s", tc.cmd.Name(), err, stdout.String())
		}
		out := stdout.String()
		if m := terminalControls.FindString(out); m != "" || !utf8.ValidString(out) || strings.Contains(out, "\nFORGED") {
			t.Errorf("evx %s printed %q:\n%s", tc.cmd.Name(), m, out)
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("evx %s output lacks %s:\n%s", tc.cmd.Name(), w, out)
			}
		}
	}

	for _, tc := range []struct {
		args []string
		want []string // escaped forms that must be shown
		fail bool
	}{
		{args: []string{"inbox", "--profile", profile},
			want: []string{`DE/forensics\x1b]0;pwned\x07\x1b[2J\u202egnp.exe\u009b31m\x0aFORGED line`, `EIO\x1b]0;pwned`, `kept\x1b]0;pwned`}},
		// A delivering gateway other than the sender's country is refused
		// (as a bad answer), and the error shows it escaped.
		{args: []string{"pull", "--profile", profile, id, "-o", filepath.Join(t.TempDir(), "out")},
			fail: true, want: []string{`delivered by gateway DE\x1b]0;pwned\x07\x1b[2J\u202egnp.exe\u009b31m\x0aFORGED line, but its sender DE/forensics belongs to DE`}},
		{args: []string{"pull", "--profile", profile, strings.Repeat("0", 32), "-o", filepath.Join(t.TempDir(), "out")},
			fail: true, want: []string{`forbidden: no\x1b]0;pwned`}},
	} {
		var stdout, stderr bytes.Buffer
		code := run(tc.args, nil, &stdout, &stderr)
		if code != 0 != tc.fail {
			t.Errorf("evx %s: exit %d\n%s%s", tc.args[0], code, stdout.String(), stderr.String())
		}
		out := stdout.String() + stderr.String()
		if m := terminalControls.FindString(out); m != "" || !utf8.ValidString(out) {
			t.Errorf("evx %s printed %q:\n%s", tc.args[0], m, out)
		}
		if strings.Contains(out, "\nFORGED") {
			t.Errorf("evx %s printed a line forged by the gateway:\n%s", tc.args[0], out)
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("evx %s output lacks %s:\n%s", tc.args[0], w, out)
			}
		}
	}
}
