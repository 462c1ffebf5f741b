package gateway

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"evx/audit"
	"evx/crypto"

	"golang.org/x/mod/sumdb/note"
)

// storedEntries returns every entry in the checkpoint of country id's
// transfer log, read from its storage while its gateway is stopped.
func (tw *testWorld) storedEntries(t *testing.T, id string) []*audit.Entry {
	t.Helper()
	ctx := t.Context()
	origin := crypto.LogOrigin(id)
	k := tw.Dev.Country(id).Signing.Signer()
	s, err := k.CheckpointSigner(origin)
	if err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(k.CheckpointVerifierKey(origin))
	if err != nil {
		t.Fatal(err)
	}
	l, err := audit.Open(ctx, tw.Stores[id], audit.Config{Origin: origin, Signer: s, Verifier: v})
	if err != nil {
		t.Fatal(err)
	}
	return checkpointEntries(t, l)
}

// refusedEntries returns the requests-refused entries with code, in log
// order.
func refusedEntries(entries []*audit.Entry, code string) []*audit.Entry {
	var out []*audit.Entry
	for _, e := range entries {
		if e.Event == audit.EventRequestsRefused && e.Code == code {
			out = append(out, e)
		}
	}
	return out
}

// Refused API requests from one source are summed up in the transfer log:
// one requests-refused entry per category and window of a minute, with
// their count, however many there were; the window under way when the
// gateway stops is recorded as it stops. DE's clock stands still but where
// the test moves it.
func TestRefusalsSummedUpInLog(t *testing.T) {
	clock := newTestClock()
	h := newHookLog()
	tw := newTestWorld(t, diskStore, func(id string, o *Options) {
		h.install(id, o)
		o.Now = clock.Now
	})
	tw.Start(t, "DE")
	tw.Start(t, "FR")
	ctx := t.Context()
	start := clock.Now()
	de, _ := tw.Client("DE", "forensics")
	const forbidden, notFound = 7, 3
	for range forbidden {
		if _, err := de.Inbox(ctx); !isAPIError(err, 403, "forbidden") {
			t.Fatalf("a submitter listing an inbox: %v, want 403 forbidden", err)
		}
	}
	for i := range notFound {
		if _, err := de.OutboxStatus(ctx, fmt.Sprintf("%032x", i+1)); !isAPIError(err, 404, "not-found") {
			t.Fatalf("status of an unknown bundle: %v, want 404 not-found", err)
		}
	}
	logged := func() int {
		return h.count(func(e hookEvent) bool { return e.what == "refusals-logged" && e.gateway == "DE" })
	}
	if n := logged(); n != 0 {
		t.Fatalf("refusals summed up in the log %d times within the first minute", n)
	}

	// The window ends once a minute has passed: at the next refusal, or
	// at the gateway's next look.
	clock.Add(refusalLogInterval)
	end := clock.Now()
	if _, err := de.Inbox(ctx); !isAPIError(err, 403, "forbidden") {
		t.Fatalf("a submitter listing an inbox: %v", err)
	}
	ev := h.waitFor(t, "DE's first window of refusals summed up in the log", func(e hookEvent) bool {
		return e.what == "refusals-logged" && e.gateway == "DE"
	})
	if ev.n != 2 {
		t.Errorf("the first window was summed up in %d entries, want 2", ev.n)
	}
	entries := logEntries(t, tw.gw("DE"))
	source := netip.MustParsePrefix("127.0.0.1/32").String()
	for _, c := range []struct {
		code  string
		count int64
	}{{"api-forbidden", forbidden}, {"api-not-found", notFound}} {
		got := refusedEntries(entries, c.code)
		if len(got) != 1 {
			t.Fatalf("%d requests-refused entries with code %s, want 1: %+v", len(got), c.code, got)
		}
		e := got[0]
		if e.Count != c.count || e.Source != source || e.Actor != audit.GatewayActor ||
			!e.WindowStart.Equal(start.Truncate(time.Millisecond)) || !e.WindowEnd.Equal(end.Truncate(time.Millisecond)) {
			t.Errorf("entry %+v; want count %d from %s between %v and %v", e, c.count, source, start, end)
		}
	}

	// The refusal that ended the window began the next one, which DE
	// records as it stops.
	tw.Stop(t, "DE")
	if ev := h.waitCount(t, "DE's last window summed up as it stopped", 2, func(e hookEvent) bool {
		return e.what == "refusals-logged" && e.gateway == "DE"
	}); ev.n != 1 {
		t.Errorf("the last window was summed up in %d entries, want 1", ev.n)
	}
	got := refusedEntries(tw.storedEntries(t, "DE"), "api-forbidden")
	if len(got) != 2 || got[1].Count != 1 || !got[1].WindowEnd.Equal(end.Truncate(time.Millisecond)) {
		t.Fatalf("requests-refused entries of api-forbidden after the stop: %+v, want a second one of the last refusal", got)
	}
}

// However many sources and categories a flood brings, one window adds at
// most maxRefusalSources + maxRefusalCategories entries, and counts every
// refusal: those beyond the bounds under the source or category other.
func TestRefusalSummaryBounded(t *testing.T) {
	clock := newTestClock()
	s := newRefusalSummary(clock.Now)
	const sources, categories = 3 * maxRefusalSources, 3 * maxRefusalCategories
	total := 0
	for i := range sources {
		// Each source in one category, and again in the first.
		s.addAPI(fmt.Sprintf("10.%d.%d.1:4711", i/256, i%256), fmt.Sprintf("code-%d", i%categories))
		s.addAPI(fmt.Sprintf("10.%d.%d.1:4711", i/256, i%256), "code-0")
		total += 2
	}
	s.addPeer("offer", "not-accepted", nil)
	s.add(netip.Prefix{}, "Not A Code\n")
	total += 2
	clock.Add(refusalLogInterval)
	windows, dropped := s.take(false)
	if len(windows) != 1 || dropped != 0 {
		t.Fatalf("%d windows (%d dropped) after a minute, want 1", len(windows), dropped)
	}
	entries := windows[0].entries()
	if len(entries) > maxRefusalSources+maxRefusalCategories {
		t.Errorf("%d entries in one window, want at most %d", len(entries), maxRefusalSources+maxRefusalCategories)
	}
	var counted int64
	bySource, byCategory := map[string]bool{}, map[string]bool{}
	for _, e := range entries {
		counted += e.Count
		byCategory[e.Code] = true
		if e.Source != "other" {
			bySource[e.Source+" "+e.Code] = true
		}
		e.Gateway, e.Time = "DE", e.WindowEnd
		if _, err := e.MarshalCanonical(); err != nil {
			t.Fatalf("entry %+v: %v", e, err)
		}
	}
	if counted != int64(total) {
		t.Errorf("the entries count %d refusals, want %d", counted, total)
	}
	if len(byCategory) != maxRefusalCategories || !byCategory["other"] {
		t.Errorf("%d categories, want %d with other", len(byCategory), maxRefusalCategories)
	}
	if len(bySource) != maxRefusalSources {
		t.Errorf("%d sources counted one by one, want %d", len(bySource), maxRefusalSources)
	}
	if w, _ := s.take(true); len(w) != 0 {
		t.Errorf("a window with no refusal taken: %+v", w)
	}
}
