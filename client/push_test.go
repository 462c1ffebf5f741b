package client_test

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"evx/api"
	"evx/client"
	"evx/gateway"
	"evx/internal/evxtest"
	"evx/storage"
)

// Push refuses, before sealing anything, recipients it can tell are wrong:
// a unit id without its country, a unit of the pusher's own country, units
// of several countries; and a caller that is not a submitter.
func TestPushChecksBeforeSealing(t *testing.T) {
	w := startWorld(t)
	ctx := context.Background()
	de, deKey := w.Client("DE", "forensics")
	deProsecutor, _ := w.Client("DE", "prosecutor")
	files := evxtest.Evidence(t, 1000)
	for _, tc := range []struct {
		name string
		c    *client.Client
		to   []string
		want string
	}{
		{"no country", de, []string{"prosecutor"}, `recipient "prosecutor": want COUNTRY/unit, such as FR/prosecutor`},
		{"own country", de, []string{"DE/prosecutor"}, "DE/prosecutor is a unit of your own country (your gateway is DE): evx carries bundles between countries"},
		{"two countries", de, []string{"FR/prosecutor", "IT/prosecutor"}, "recipients in FR and IT: evx delivers each bundle to one country, so seal one bundle per country"},
		{"not a submitter", deProsecutor, []string{"FR/prosecutor"}, "you are DE/prosecutor with role recipient at gateway DE; pushing needs role submitter"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tmp := t.TempDir()
			var stages []string
			_, err := client.Push(ctx, tc.c, client.PushRequest{Key: deKey, To: tc.to, Files: files, Seal: evxtest.SealOptions(), TempDir: tmp,
				Progress: func(stage string, _, _ int64) { stages = append(stages, stage) }})
			if err == nil || err.Error() != tc.want {
				t.Fatalf("push: %v\nwant: %s", err, tc.want)
			}
			if entries, _ := os.ReadDir(tmp); len(stages) > 0 || len(entries) > 0 {
				t.Errorf("push went as far as %v, leaving %v; want nothing sealed", stages, entries)
			}
		})
	}
	// Nothing but the transfer log, which records the gateway's start,
	// what DE witnessed of FR's log, which grows by itself, and FR's
	// summary of its agreement, which the gateways exchange.
	if infos, err := w.Stores["DE"].List(ctx, ""); err != nil || slices.ContainsFunc(infos, func(in storage.Info) bool {
		return !strings.HasPrefix(in.Key, "log/") && !strings.HasPrefix(in.Key, "witness/") && !strings.HasPrefix(in.Key, "agreements/peers/")
	}) {
		t.Errorf("DE stored %v, %v; want nothing outside its transfer log, witness state and peers' agreement summaries", infos, err)
	}
}

// A push whose wait runs out before the delivery is over has still
// succeeded: the bundle is queued at the gateway, which goes on delivering
// it, and the result says so.
func TestPushWaitRunsOut(t *testing.T) {
	w := startWorld(t)
	ctx := context.Background()
	de, deKey := w.Client("DE", "forensics")
	// DE keeps FR's directory, so that its unit can submit while FR is down.
	if _, err := de.Lookup(ctx, "FR/prosecutor"); err != nil {
		t.Fatal(err)
	}
	w.Stop(t, "FR")
	res, err := client.Push(ctx, de, client.PushRequest{Key: deKey, To: []string{"FR/prosecutor"}, Files: evxtest.Evidence(t, 1000),
		Seal: evxtest.SealOptions(), TempDir: t.TempDir(), Wait: 50 * time.Millisecond})
	if err != nil {
		t.Fatalf("push: %v; want the bundle queued, without an error", err)
	}
	if res.Status.State != api.StateQueued || res.Envelope == nil {
		t.Fatalf("push result %+v, want queued", res.Status)
	}
	st, err := de.OutboxStatus(ctx, res.Envelope.BundleID)
	if err != nil || st.State != api.StateQueued || !strings.HasPrefix(st.SubmittedBy, "DE/") {
		t.Errorf("outbox status %+v, %v; want queued", st, err)
	}
}

// A bundle the peer refuses is a *RefusedError with the peer's code, and
// the result still names the bundle.
func TestPushRefused(t *testing.T) {
	w := startWorldWith(t, func(id string, o *gateway.Options) {
		if id == "FR" {
			o.MaxBundleSize = 10_000
		}
	})
	de, deKey := w.Client("DE", "forensics")
	res, err := client.Push(context.Background(), de, client.PushRequest{Key: deKey, To: []string{"FR/prosecutor"},
		Files: evxtest.Evidence(t, 50_000), Seal: evxtest.SealOptions(), TempDir: t.TempDir(), Wait: 20 * time.Second})
	var re *client.RefusedError
	if !errors.As(err, &re) || re.RefusalCode() != "too-large" || re.BundleID != res.Envelope.BundleID {
		t.Fatalf("push: %v; want refused as too-large", err)
	}
	if res.Status.State != api.StateRefused {
		t.Errorf("state %s, want refused", res.Status.State)
	}
}
