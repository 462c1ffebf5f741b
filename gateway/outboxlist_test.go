package gateway

import (
	"context"
	"testing"

	"evx/api"
	"evx/client"
	"evx/crypto"
	"evx/internal/devenv"
	"evx/internal/evxtest"
)

// GET /v1/outbox lists a submitter's own bundles and, for an operator,
// every bundle, newest first, with their states, filtered by state and
// bounded by limit; other roles and bad parameters are refused.
func TestOutboxList(t *testing.T) {
	// DE/lab is a second submitter; FR takes smaller bundles than DE, so
	// that it refuses one.
	var lab *devenv.User
	tw := newTestWorld(t, diskStore, func(id string, o *Options) {
		switch id {
		case "DE":
			o.Users = append(o.Users, User{Unit: lab.Unit, Role: lab.Role, Key: lab.Key.Public()})
		case "FR":
			o.MaxBundleSize = 100_000
		}
	})
	lab = tw.newUser(t, "DE", "lab", api.RoleSubmitter)
	tw.Start(t, "DE")
	tw.Start(t, "FR")
	ctx := context.Background()
	de, deKey := tw.Client("DE", "forensics")
	labClient := tw.ClientWithCert("DE", lab.Cert)
	to := []crypto.PublicKey{tw.recipientKey("FR", "prosecutor")}

	direct := func(c *client.Client, key *crypto.UnitKey, size int, want api.State) string {
		t.Helper()
		b := evxtest.Seal(t, key, to, size)
		st, err := uploadMode(ctx, c, b, api.Direct)
		if err != nil || st.State != want {
			t.Fatalf("direct upload: %+v, %v; want %s", st, err, want)
		}
		return b.Env.BundleID
	}
	delivered := direct(de, deKey, 1000, api.StateDelivered)
	labs := direct(labClient, lab.Key, 1000, api.StateDelivered)
	refused := direct(de, deKey, 200_000, api.StateRefused)
	// With FR down, an upload stays queued (DE keeps FR's directory).
	tw.Stop(t, "FR")
	b := evxtest.Seal(t, deKey, to, 1000)
	if _, err := upload(ctx, de, b); err != nil {
		t.Fatal(err)
	}
	queued := b.Env.BundleID

	list := func(c *client.Client, state api.State, limit int) *api.OutboxList {
		t.Helper()
		l, err := c.Outbox(ctx, state, limit)
		if err != nil {
			t.Fatalf("outbox state=%q limit=%d: %v", state, limit, err)
		}
		return l
	}
	wantList := func(what string, l *api.OutboxList, truncated bool, want ...string) {
		t.Helper()
		var got []string
		for _, st := range l.Bundles {
			got = append(got, st.BundleID+" "+string(st.State))
			if st.Receipt != nil || st.Submitted == nil || st.SubmittedBy == "" || st.Peer != "FR" {
				t.Errorf("%s: entry %+v: want submitter, time and peer, and no receipt", what, st)
			}
			if st.State == api.StateDelivered && st.Delivered == nil || st.State == api.StateRefused && st.Refusal == nil {
				t.Errorf("%s: entry %+v lacks its delivery time or refusal", what, st)
			}
		}
		if len(got) != len(want) || l.Truncated != truncated {
			t.Fatalf("%s: %v, truncated %v; want %v, truncated %v", what, got, l.Truncated, want, truncated)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("%s: %v; want %v", what, got, want)
			}
		}
	}

	wantList("forensics, all", list(de, "", 0), false,
		queued+" queued", refused+" refused", delivered+" delivered")
	wantList("forensics, delivered", list(de, api.StateDelivered, 0), false, delivered+" delivered")
	wantList("forensics, refused", list(de, api.StateRefused, 0), false, refused+" refused")
	wantList("forensics, queued", list(de, api.StateQueued, 0), false, queued+" queued")
	wantList("forensics, newest 2", list(de, "", 2), true, queued+" queued", refused+" refused")
	wantList("forensics, newest 3", list(de, "", 3), false,
		queued+" queued", refused+" refused", delivered+" delivered")
	wantList("lab", list(labClient, "", 0), false, labs+" delivered")

	op, _ := tw.Client("DE", "operator")
	wantList("operator, all", list(op, "", 0), false,
		queued+" queued", refused+" refused", labs+" delivered", delivered+" delivered")
	wantList("operator, delivered", list(op, api.StateDelivered, 1), true, labs+" delivered")

	for _, bad := range []struct{ query, code string }{
		{"?state=lost", "bad-state"},
		{"?limit=0", "bad-limit"},
		{"?limit=1001", "bad-limit"},
		{"?limit=ten", "bad-limit"},
	} {
		if status, code := tw.rawGet(t, "DE", "forensics", "/v1/outbox"+bad.query); status != 400 || string(code) != bad.code {
			t.Errorf("GET /v1/outbox%s: %d %s, want 400 %s", bad.query, status, code, bad.code)
		}
	}
	for _, user := range []string{"prosecutor", "auditor"} {
		c, _ := tw.Client("DE", user)
		if _, err := c.Outbox(ctx, "", 0); !isAPIError(err, 403, "forbidden") {
			t.Errorf("outbox listed by DE/%s: %v, want 403 forbidden", user, err)
		}
	}
}
