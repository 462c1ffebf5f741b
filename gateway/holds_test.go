package gateway

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"evx/api"
	"evx/audit"
	"evx/client"
	"evx/crypto"
	"evx/internal/evxtest"
	"evx/storage"
	"evx/storage/storagetest"
)

// holdWorld runs DE and FR on storage from newStore, with DE/operator and
// FR/prosecutor the units that may place holds, and one bundle sent from
// DE to FR, delivered and acknowledged. It returns the bundle's id.
func holdWorld(t *testing.T, newStore func(testing.TB, string) storage.Backend) (*testWorld, string) {
	t.Helper()
	tw := newTestWorld(t, newStore, func(id string, o *Options) {
		o.HoldUnits = map[string][]string{"DE": {"DE/operator"}, "FR": {"FR/prosecutor"}}[id]
	})
	tw.Start(t, "DE")
	tw.Start(t, "FR")
	ctx := t.Context()
	de, deKey := tw.Client("DE", "forensics")
	b := evxtest.Seal(t, deKey, []crypto.PublicKey{tw.recipientKey("FR", "prosecutor")}, 1000)
	if _, err := upload(ctx, de, b); err != nil {
		t.Fatal(err)
	}
	if _, err := client.WaitDelivered(ctx, de, b.Env.BundleID, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	fr, _ := tw.Client("FR", "prosecutor")
	if err := fr.Ack(ctx, b.Env.BundleID); err != nil {
		t.Fatal(err)
	}
	return tw, b.Env.BundleID
}

// wantStorageHolds checks the storage's legal hold of each of bundle id's
// objects in box of st: if held, it is placed on its payload, its record
// and (inbox) its acknowledgements or (outbox) its receipt, on nothing
// else, such as the payload's wrapped key; if not held, on none. want
// are the names of the objects that must be held, besides the payload.
func wantStorageHolds(t *testing.T, st storage.Backend, box, id string, held bool, want ...string) {
	t.Helper()
	ctx := t.Context()
	locker := st.(storage.Locker)
	prefix := box + id + "/"
	infos, err := st.List(ctx, prefix)
	if err != nil {
		t.Fatal(err)
	}
	var got, names []string
	for _, in := range infos {
		name := strings.TrimPrefix(in.Key, prefix)
		names = append(names, name)
		l, err := locker.Lock(ctx, in.Key)
		if err != nil {
			t.Fatalf("lock of %s: %v", in.Key, err)
		}
		if l.Held {
			got = append(got, name)
		}
	}
	if !held {
		if len(got) > 0 {
			t.Errorf("objects of %s held in storage: %q, want none", prefix, got)
		}
		return
	}
	if p := payloadName(t, st, box, id); p != "" {
		want = append(want, p)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("objects of %s held in storage: %q, want %q (of %q)", prefix, got, want, names)
	}
}

// payloadName returns the name of bundle id's payload object in box of
// st, "" if there is none: payload.age, or the outer layer's
// payload-<attempt>.age.
func payloadName(t *testing.T, st storage.Backend, box, id string) string {
	t.Helper()
	infos, err := st.List(t.Context(), box+id+"/")
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range infos {
		name := strings.TrimPrefix(in.Key, box+id+"/")
		if strings.HasPrefix(name, "payload") && strings.HasSuffix(name, ".age") {
			return name
		}
	}
	return ""
}

// holdEvents returns the hold events of g's transfer log about bundle id,
// each as "event actor reason reference".
func holdEvents(t *testing.T, g *Gateway, id string) []string {
	t.Helper()
	var out []string
	for _, e := range logEntries(t, g) {
		if e.BundleID == id && (e.Event == audit.EventHoldPlaced || e.Event == audit.EventHoldReleased) {
			if e.EnvelopeSHA256 == ([32]byte{}) || e.Purpose == "" {
				t.Errorf("%s entry without the bundle's members: %+v", e.Event, e)
			}
			out = append(out, strings.Join([]string{string(e.Event), e.Actor, e.Reason, e.Reference}, " | "))
		}
	}
	return out
}

func TestHolds(t *testing.T) { forEachBackend(t, testHolds) }

// A hold placed at either end keeps the bundle's record in storage and
// the storage's legal hold on its objects, but not on the shred key; it
// survives a restart; it is listed; a second one, one by a unit not named
// and bad input are refused; its release clears both; each placing and
// release is in the transfer log, and nothing refused is.
func testHolds(t *testing.T, newStore func(testing.TB, string) storage.Backend) {
	tw, id := holdWorld(t, newStore)
	ctx := t.Context()
	frHolder, _ := tw.Client("FR", "prosecutor")
	deHolder, _ := tw.Client("DE", "operator")
	inboxHeld := []string{recordFile, "ack-FR_prosecutor.json"}
	outboxHeld := []string{recordFile, receiptFile}
	if payloadName(t, tw.Stores["FR"], inboxPrefix, id) == "" || payloadName(t, tw.Stores["DE"], outboxPrefix, id) == "" {
		t.Fatal("no payload object stored")
	}

	wantStorageHolds(t, tw.Stores["FR"], inboxPrefix, id, false)
	h, err := frHolder.PlaceHold(ctx, id, "preserve for the trial", "LG Berlin 12 O 34/26")
	if err != nil {
		t.Fatal(err)
	}
	if h.BundleID != id || !slices.Equal(h.Boxes, []string{"inbox"}) || h.By != "FR/prosecutor" ||
		h.Reason != "preserve for the trial" || h.Reference != "LG Berlin 12 O 34/26" || h.At.IsZero() {
		t.Errorf("hold placed at FR: %+v", h)
	}
	wantStorageHolds(t, tw.Stores["FR"], inboxPrefix, id, true, inboxHeld...)
	h, err = deHolder.PlaceHold(ctx, id, "the sender's copy too", "case 2026-114")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(h.Boxes, []string{"outbox"}) || h.By != "DE/operator" {
		t.Errorf("hold placed at DE: %+v", h)
	}
	wantStorageHolds(t, tw.Stores["DE"], outboxPrefix, id, true, outboxHeld...)
	for _, c := range []string{"DE", "FR"} {
		if held, err := tw.gw(c).isHeld(ctx, id); err != nil || !held {
			t.Errorf("%s: isHeld = %v, %v; want true", c, held, err)
		}
	}

	// Refused: a second hold; units not named, whatever their role; bad
	// input.
	if _, err := frHolder.PlaceHold(ctx, id, "again", "other ref"); !isAPIError(err, 409, "already-held") ||
		!strings.Contains(err.Error(), "by FR/prosecutor") || !strings.Contains(err.Error(), "LG Berlin 12 O 34/26") {
		t.Errorf("second hold: %v, want 409 already-held naming the first", err)
	}
	frOperator, _ := tw.Client("FR", "operator")
	frAuditor, _ := tw.Client("FR", "auditor")
	for _, c := range []*client.Client{frOperator, frAuditor} {
		if _, err := c.ReleaseHold(ctx, id, "not mine"); !isAPIError(err, 403, "forbidden") || !strings.Contains(err.Error(), "only FR/prosecutor may") {
			t.Errorf("release by a unit not named: %v, want 403 forbidden saying who may", err)
		}
		if _, err := c.PlaceHold(ctx, id, "not mine", "ref"); !isAPIError(err, 403, "forbidden") {
			t.Errorf("hold by a unit not named: %v, want 403 forbidden", err)
		}
	}
	if _, err := frAuditor.Holds(ctx); !isAPIError(err, 403, "forbidden") {
		t.Errorf("list by an auditor: %v, want 403 forbidden", err)
	}
	unknown := crypto.NewBundleID()
	for _, tc := range []struct {
		id, reason, ref string
		status          int
		code            string
	}{
		{unknown, "r", "ref", 404, "not-found"},
		{id, "", "ref", 400, "bad-reason"},
		{id, "two\nlines", "ref", 400, "bad-reason"},
		{id, strings.Repeat("r", api.MaxHoldReason+1), "ref", 400, "bad-reason"},
		{id, "r", "", 400, "bad-reference"},
		{id, "r", strings.Repeat("x", api.MaxHoldReference+1), 400, "bad-reference"},
		{id, "r", " ref", 400, "bad-reference"},
		{id, "r", "see /etc/passwd", 400, "bad-reference"},
		{id, "r", "tab\there", 400, "bad-reference"},
	} {
		if _, err := frHolder.PlaceHold(ctx, tc.id, tc.reason, tc.ref); !isAPIError(err, tc.status, tc.code) {
			t.Errorf("hold %.12s… reason %q ref %q: %v, want %d %s", tc.id, tc.reason, tc.ref, err, tc.status, tc.code)
		}
	}
	if _, err := frHolder.ReleaseHold(ctx, unknown, "r"); !isAPIError(err, 404, "not-found") {
		t.Errorf("release of an unknown bundle: %v, want 404 not-found", err)
	}
	if _, err := frHolder.ReleaseHold(ctx, id, ""); !isAPIError(err, 400, "bad-reason") {
		t.Errorf("release without a reason: %v, want 400 bad-reason", err)
	}
	for _, bad := range []string{"../../agreements/suspensions", strings.ToUpper(id), id + "/x", ""} {
		if _, err := tw.gw("FR").PlaceHold(ctx, bad, "r", "ref", "FR/prosecutor"); !isAPIError(err, 0, "not-found") {
			t.Errorf("hold of bundle %q: %v, want not-found", bad, err)
		}
		if _, err := tw.gw("FR").ReleaseHold(ctx, bad, "r", "FR/prosecutor"); !isAPIError(err, 0, "not-found") {
			t.Errorf("release of bundle %q: %v, want not-found", bad, err)
		}
	}
	if _, err := frHolder.PlaceHold(ctx, "../x", "r", "ref"); err == nil || isAPIError(err, 404, "not-found") {
		t.Error("the client sent a hold of a bundle id that is none")
	}

	// It survives a restart; operators list it too.
	tw.Stop(t, "FR")
	tw.Start(t, "FR")
	frHolder, _ = tw.Client("FR", "prosecutor")
	frOperator, _ = tw.Client("FR", "operator")
	for _, c := range []*client.Client{frHolder, frOperator} {
		l, err := c.Holds(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if l.Gateway != "FR" || len(l.Holds) != 1 || l.Holds[0].BundleID != id || l.Holds[0].Reference != "LG Berlin 12 O 34/26" || l.Truncated {
			t.Errorf("holds listed after a restart: %+v", l)
		}
	}
	if held, err := tw.gw("FR").isHeld(ctx, id); err != nil || !held {
		t.Errorf("isHeld after a restart = %v, %v; want true", held, err)
	}

	// Released: the record and the storage's holds go.
	r, err := frHolder.ReleaseHold(ctx, id, "judgment final")
	if err != nil {
		t.Fatal(err)
	}
	if r.Released == nil || r.Released.By != "FR/prosecutor" || r.Released.Reason != "judgment final" || r.Reference != "LG Berlin 12 O 34/26" {
		t.Errorf("release: %+v", r)
	}
	wantStorageHolds(t, tw.Stores["FR"], inboxPrefix, id, false)
	if held, err := tw.gw("FR").isHeld(ctx, id); err != nil || held {
		t.Errorf("isHeld after release = %v, %v; want false", held, err)
	}
	if l, err := frOperator.Holds(ctx); err != nil || len(l.Holds) != 0 {
		t.Errorf("holds listed after release: %+v, %v", l, err)
	}
	if _, err := frHolder.ReleaseHold(ctx, id, "again"); !isAPIError(err, 409, "not-held") {
		t.Errorf("second release: %v, want 409 not-held", err)
	}
	if _, err := deHolder.ReleaseHold(ctx, id, "done"); err != nil {
		t.Fatal(err)
	}
	wantStorageHolds(t, tw.Stores["DE"], outboxPrefix, id, false)
	// Placed again after a release: a new hold.
	if _, err := frHolder.PlaceHold(ctx, id, "appeal", "KG 3 U 7/26"); err != nil {
		t.Fatal(err)
	}
	wantStorageHolds(t, tw.Stores["FR"], inboxPrefix, id, true, inboxHeld...)

	for _, tc := range []struct {
		country string
		want    []string
	}{
		{"FR", []string{
			"hold-placed | unit:FR/prosecutor | preserve for the trial | LG Berlin 12 O 34/26",
			"hold-released | unit:FR/prosecutor | judgment final | LG Berlin 12 O 34/26",
			"hold-placed | unit:FR/prosecutor | appeal | KG 3 U 7/26",
		}},
		{"DE", []string{
			"hold-placed | unit:DE/operator | the sender's copy too | case 2026-114",
			"hold-released | unit:DE/operator | done | case 2026-114",
		}},
	} {
		if got := holdEvents(t, tw.gw(tc.country), id); !slices.Equal(got, tc.want) {
			t.Errorf("%s's hold entries:\n%s\nwant:\n%s", tc.country, strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
		}
	}
	// The last hold is released, so that the test's bucket can be
	// removed.
	if _, err := frHolder.ReleaseHold(ctx, id, "end of test"); err != nil {
		t.Fatal(err)
	}
}

// A storage hold that cannot be set leaves the hold placed, by its record:
// the bundle is kept, and placing it again completes the storage's holds.
// One that cannot be cleared leaves it placed too, until a release that
// succeeds.
func TestHoldStorageFailure(t *testing.T) {
	var faulty *storagetest.FaultyLocker
	newStore := func(tb testing.TB, country string) storage.Backend {
		d := diskStore(tb, country)
		if country != "FR" {
			return d
		}
		faulty = newFaulty(tb, d)
		return faulty
	}
	tw, id := holdWorld(t, newStore)
	ctx := t.Context()
	fr, _ := tw.Client("FR", "prosecutor")
	payload := inboxPrefix + id + "/" + payloadName(t, faulty, inboxPrefix, id)

	faulty.InjectError(storagetest.OpHold, payload, storagetest.BeforePersist, storage.ErrUnavailable)
	if _, err := fr.PlaceHold(ctx, id, "keep", "ref 1"); !isAPIError(err, 503, "storage-unavailable") || !strings.Contains(err.Error(), "is placed") {
		t.Fatalf("hold whose storage hold fails: %v, want 503 storage-unavailable saying it is placed", err)
	}
	if held, err := tw.gw("FR").isHeld(ctx, id); err != nil || !held {
		t.Errorf("isHeld after a storage hold failed = %v, %v; want true", held, err)
	}
	if _, err := fr.PlaceHold(ctx, id, "keep", "ref 1"); !isAPIError(err, 409, "already-held") {
		t.Errorf("hold placed again: %v, want 409 already-held", err)
	}
	wantStorageHolds(t, faulty, inboxPrefix, id, true, recordFile, "ack-FR_prosecutor.json")

	faulty.InjectError(storagetest.OpHold, payload, storagetest.BeforePersist, storage.ErrUnavailable)
	if _, err := fr.ReleaseHold(ctx, id, "done"); !isAPIError(err, 503, "storage-unavailable") {
		t.Fatalf("release whose storage hold fails: %v, want 503 storage-unavailable", err)
	}
	if held, err := tw.gw("FR").isHeld(ctx, id); err != nil || !held {
		t.Errorf("isHeld after a release failed = %v, %v; want true", held, err)
	}
	if _, err := fr.ReleaseHold(ctx, id, "done"); err != nil {
		t.Fatal(err)
	}
	wantStorageHolds(t, faulty, inboxPrefix, id, false)
	if held, err := tw.gw("FR").isHeld(ctx, id); err != nil || held {
		t.Errorf("isHeld after release = %v, %v; want false", held, err)
	}
	// The failed attempts were recorded as what they were asked to be:
	// one hold placed (the second was refused), two releases asked, one
	// of which took effect.
	if got := holdEvents(t, tw.gw("FR"), id); len(got) != 3 {
		t.Errorf("hold entries: %q, want 3", got)
	}
}

// Without hold units configured, nobody may place holds, and the refusal
// says so.
func TestHoldNoUnits(t *testing.T) {
	g := &Gateway{opts: Options{ID: "FR"}}
	err := g.mayHold(User{Unit: "FR/operator", Role: api.RoleOperator})
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeForbidden || !strings.Contains(ae.Message, "retention.hold_units") {
		t.Errorf("mayHold without hold units: %v, want forbidden naming retention.hold_units", err)
	}
}

// A reason the transfer log may not hold, such as one that names a file,
// is withheld from the hold's entry, which stays valid; any other is
// recorded as given.
func TestHoldEntryReason(t *testing.T) {
	for _, tc := range []struct{ reason, logged string }{
		{"preserve for the trial", "preserve for the trial"},
		{"order filed at /srv/orders/77", "reason withheld from the log: it looks like a path or a key"},
	} {
		e := holdEntry(audit.EventHoldPlaced, "FR/operator", tc.reason, "LG Berlin 12 O 34/26")
		if e.Reason != tc.logged || e.Reference != "LG Berlin 12 O 34/26" || e.Actor != "unit:FR/operator" {
			t.Errorf("entry of a hold for %q: %+v", tc.reason, e)
		}
	}
}
