package client_test

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	"evx/api"
	"evx/client"
	"evx/gateway"
	"evx/internal/evxtest"
	"evx/storage"
)

// Push reads the purposes a recipient is authorised for from its entry in
// the peer's signed directory and refuses, before it asks the gateway and
// before it seals anything, a bundle for another purpose: the error is the
// API's recipient-not-authorised (so evx exits 3), starts with the code,
// and names the recipient, the purpose and the purposes it is for. A
// purpose it is authorised for goes through.
func TestPushRecipientNotAuthorised(t *testing.T) {
	w := startWorldWith(t, func(id string, o *gateway.Options) {
		if id != "FR" {
			return
		}
		for i := range o.Users {
			if o.Users[i].Unit == "FR/prosecutor" {
				o.Users[i].Purposes = []string{"prosecution", "criminal-investigation"}
			}
		}
	})
	ctx := context.Background()
	de, deKey := w.Client("DE", "forensics")
	tmp := t.TempDir()
	var stages []string
	req := client.PushRequest{Key: deKey, To: []string{"FR/prosecutor"}, Files: evxtest.Evidence(t, 1000),
		Seal: evxtest.SealOptions(), TempDir: tmp,
		Progress: func(stage string, _, _ int64) { stages = append(stages, stage) }}
	res, err := client.Push(ctx, de, req)
	const want = `recipient-not-authorised: recipient FR/prosecutor is not authorised for purpose "mutual-legal-assistance"; ` +
		`it is for: prosecution, criminal-investigation (the unit directory of FR); nothing was sealed`
	var ae *api.Error
	if res != nil || err == nil || err.Error() != want {
		t.Fatalf("push: %v, %v\nwant: %s", res, err, want)
	}
	if !errors.As(err, &ae) || ae.Code != api.CodeRecipientNotAuthorised || ae.Code.Temporary() {
		t.Errorf("push's error %#v is not the API's lasting recipient-not-authorised", ae)
	}
	if entries, _ := os.ReadDir(tmp); len(stages) > 0 || len(entries) > 0 {
		t.Errorf("push went as far as %v, leaving %v; want nothing sealed", stages, entries)
	}
	// Nothing but the transfer log, FR's directory, which the lookup of
	// the recipient keeps, and what DE witnessed of FR's log.
	if infos, err := w.Stores["DE"].List(ctx, ""); err != nil || slices.ContainsFunc(infos, func(in storage.Info) bool {
		return !strings.HasPrefix(in.Key, "log/") && !strings.HasPrefix(in.Key, "directories/") && !strings.HasPrefix(in.Key, "witness/")
	}) {
		t.Errorf("DE stored %v, %v; want nothing of the bundle", infos, err)
	}

	req.Seal.Purpose = "prosecution"
	res, err = client.Push(ctx, de, req)
	if err != nil || res.Status.State != api.StateQueued {
		t.Fatalf("push for prosecution: %+v, %v; want it queued", res, err)
	}
}
