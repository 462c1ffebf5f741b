package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"evx/api"
	"evx/client"
	"evx/crypto"
	"evx/internal/devenv"
	"evx/internal/evxtest"
	"evx/storage"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// testClock is a clock that tests move by hand, for Options.Now.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func newTestClock() *testClock { return &testClock{now: time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)} }

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// served is how many directories country's running gateway has signed for
// its peers since it started.
func (tw *testWorld) served(country string) int64 { return tw.gw(country).dirs.served.Load() }

// lookupsConcurrently looks up n made-up units of FR at DE at once and
// checks that each is unknown.
func lookupsConcurrently(t *testing.T, tw *testWorld, n int, prefix string) {
	t.Helper()
	de, _ := tw.Client("DE", "forensics")
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { _, errs[i] = de.Lookup(context.Background(), fmt.Sprintf("FR/%s-%d", prefix, i)) })
	}
	wg.Wait()
	for i, err := range errs {
		if !isAPIError(err, 404, "unknown-unit") {
			t.Errorf("lookup %d of a made-up unit: %v, want 404 unknown-unit", i, err)
		}
	}
}

// TestPeerDirectoryFetches checks that lookups that miss fetch a peer's
// directory once however many arrive together, not again within the
// minimum interval, and again after it, finding a unit added meanwhile.
func TestPeerDirectoryFetches(t *testing.T) {
	clock := newTestClock()
	var judge *devenv.User
	tw := newTestWorld(t, diskStore, func(id string, o *Options) {
		o.Now = clock.Now
		if id == "FR" && judge != nil {
			o.Users = append(o.Users, User{Unit: judge.Unit, Role: judge.Role, Key: judge.Key.Public()})
		}
	})
	tw.Start(t, "DE")
	tw.Start(t, "FR")
	ctx := context.Background()
	de, _ := tw.Client("DE", "forensics")

	lookupsConcurrently(t, tw, 16, "made-up")
	if n := tw.served("FR"); n != 1 {
		t.Fatalf("16 concurrent lookups made FR sign %d directories, want 1", n)
	}
	for i := range 5 {
		if _, err := de.Lookup(ctx, fmt.Sprintf("FR/again-%d", i)); !isAPIError(err, 404, "unknown-unit") {
			t.Fatalf("lookup of a made-up unit: %v, want 404 unknown-unit", err)
		}
	}
	if _, err := de.Lookup(ctx, "FR/prosecutor"); err != nil {
		t.Fatal(err)
	}
	if n := tw.served("FR"); n != 1 {
		t.Fatalf("more lookups within %v made FR sign %d directories, want 1", peerDirectoryMinRefresh, n)
	}

	// A unit added at FR is not found before the interval is over, and
	// is found after it.
	judge = tw.newUser(t, "FR", "judge", api.RoleRecipient)
	tw.Stop(t, "FR")
	tw.Start(t, "FR")
	if _, err := de.Lookup(ctx, "FR/judge"); !isAPIError(err, 404, "unknown-unit") {
		t.Fatalf("lookup of FR/judge within the interval: %v, want 404 unknown-unit from the cached directory", err)
	}
	if n := tw.served("FR"); n != 0 {
		t.Fatalf("a lookup within the interval made FR sign %d directories, want 0", n)
	}
	clock.Add(peerDirectoryMinRefresh)
	e, err := de.Lookup(ctx, "FR/judge")
	if err != nil {
		t.Fatalf("lookup of FR/judge after the interval: %v", err)
	}
	if e.Role != "recipient" || e.AgeRecipient != judge.Key.Public().AgeRecipient {
		t.Errorf("FR/judge resolved to %+v", e)
	}
	if n := tw.served("FR"); n != 1 {
		t.Fatalf("a lookup after the interval made FR sign %d directories, want 1", n)
	}

	// Known units are answered from the cache until it is stale.
	if _, err := de.Lookup(ctx, "FR/prosecutor"); err != nil {
		t.Fatal(err)
	}
	clock.Add(peerDirectoryMinRefresh)
	if _, err := de.Lookup(ctx, "FR/prosecutor"); err != nil {
		t.Fatal(err)
	}
	if n := tw.served("FR"); n != 1 {
		t.Fatalf("lookups of known units in a fresh cache made FR sign %d directories, want 1", n)
	}
	clock.Add(peerDirectoryTTL)
	lookupsConcurrently(t, tw, 8, "stale")
	if n := tw.served("FR"); n != 2 {
		t.Fatalf("lookups with a stale cache made FR sign %d directories in all, want 2", n)
	}
}

// liveGateways makes the directory of a running peer unreachable on demand (a fault injected
// through Options.directoryFault), while deliveries still reach it.
type liveGateways struct {
	mu          sync.Mutex
	unreachable map[string]bool // directory requests to these fail
}

func newLiveGateways() *liveGateways {
	return &liveGateways{unreachable: map[string]bool{}}
}

// fault is Options.directoryFault.
func (lg *liveGateways) fault(peer string) error {
	lg.mu.Lock()
	defer lg.mu.Unlock()
	if lg.unreachable[peer] {
		return fmt.Errorf("test: the directory of %s cannot be fetched", peer)
	}
	return nil
}

func (lg *liveGateways) setUnreachable(id string, down bool) {
	lg.mu.Lock()
	lg.unreachable[id] = down
	lg.mu.Unlock()
}

// getAPI sends GET path to country's API as one of its users and decodes
// the answer into out.
func (tw *testWorld) getAPI(t *testing.T, country, user, path string, out any) {
	t.Helper()
	resp, err := tw.apiHTTPClient(t, country, user, false).Get(tw.URL(country) + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: status %d", path, resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
}

// verifySenderDirectory checks bundle b's inbox entry at FR as a recipient
// can, without asking the sending gateway: the signed directory kept with
// it verifies against the signing key FR's configuration gives for the
// sending gateway, and lists the envelope's sender with its signing key.
func verifySenderDirectory(t *testing.T, tw *testWorld, b *evxtest.Bundle) *api.InboxEntry {
	t.Helper()
	fr, _ := tw.Client("FR", "prosecutor")
	e, err := fr.InboxEntry(context.Background(), b.Env.BundleID)
	if err != nil {
		t.Fatal(err)
	}
	if e.SenderDirectory == nil {
		t.Fatalf("inbox entry of %s has no sender directory", b.Env.BundleID)
	}
	var peers []api.Peer
	tw.getAPI(t, "FR", "prosecutor", "/v1/peers", &peers)
	key := ""
	for _, p := range peers {
		if p.ID == e.From {
			key = p.SigningKey
		}
	}
	if want := crypto.FormatSigningKey(tw.Dev.Country("DE").Signing.SigningPublicKey()); key != want {
		t.Fatalf("GET /v1/peers gives %q for %s, want DE's signing key %s", key, e.From, want)
	}
	d, err := crypto.VerifyDirectory(e.SenderDirectory, key, e.From)
	if err != nil {
		t.Fatal(err)
	}
	u, ok := d.Lookup(b.Env.Sender.Unit)
	if !ok || u.Role != "submitter" || u.SigningKey != b.Env.Sender.Key {
		t.Fatalf("the kept directory lists %+v for %s, want the envelope's signing key %s", u, b.Env.Sender.Unit, b.Env.Sender.Key)
	}
	return e
}

// TestKeptDirectory checks that peer directories are kept in storage, once
// per distinct set of units, and serve lookups and sender checks while the
// peer cannot be reached, also after a restart; that a tampered copy is
// refused; and that a recipient gets the signed directory its bundle's
// sender was checked against.
func TestKeptDirectory(t *testing.T) { forEachBackend(t, testKeptDirectory) }

func testKeptDirectory(t *testing.T, newStore func(testing.TB, string) storage.Backend) {
	clock := newTestClock()
	lg := newLiveGateways()
	tw := newTestWorld(t, newStore, func(id string, o *Options) {
		o.Now = clock.Now
		o.directoryFault = lg.fault
	})
	tw.Start(t, "DE")
	tw.Start(t, "FR")
	ctx := context.Background()
	_, deKey := tw.Client("DE", "forensics")
	to := []crypto.PublicKey{tw.recipientKey("FR", "prosecutor")}
	lookup := func(unit string) error {
		t.Helper()
		de, _ := tw.Client("DE", "forensics")
		_, err := de.Lookup(ctx, unit)
		return err
	}
	kept := func(st storage.Backend, peer string) []string {
		t.Helper()
		return storedKeys(t, st, directoryPrefix(peer))
	}

	if err := lookup("FR/prosecutor"); err != nil {
		t.Fatal(err)
	}
	first := kept(tw.Stores["DE"], "FR")
	if len(first) != 1 || !isDirectoryKey("FR", first[0]) {
		t.Fatalf("DE keeps %q of FR's directories, want one", first)
	}
	// FR signs its directory afresh for each request; the same units are
	// not stored again.
	clock.Add(peerDirectoryTTL)
	if err := lookup("FR/prosecutor"); err != nil {
		t.Fatal(err)
	}
	if n := tw.served("FR"); n != 2 {
		t.Fatalf("FR signed %d directories, want 2", n)
	}
	if got := kept(tw.Stores["DE"], "FR"); len(got) != 1 {
		t.Fatalf("after a refetch of the same units DE keeps %q, want %q", got, first)
	}

	t.Run("push while the peer is down, after a restart", func(t *testing.T) {
		tw.Stop(t, "FR")
		tw.Stop(t, "DE")
		tw.Start(t, "DE")
		if err := lookup("FR/prosecutor"); err != nil {
			t.Fatalf("lookup at a restarted DE while FR is down: %v", err)
		}
		de, _ := tw.Client("DE", "forensics")
		b := evxtest.Seal(t, deKey, to, 20_000)
		st, err := upload(ctx, de, b)
		if err != nil {
			t.Fatalf("upload at a restarted DE while FR is down: %v", err)
		}
		if st.State != api.StateQueued {
			t.Fatalf("state %s, want queued", st.State)
		}
		tw.Start(t, "FR")
		if _, err := client.WaitDelivered(ctx, de, b.Env.BundleID, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		fr, frKey := tw.Client("FR", "prosecutor")
		pulled(t, fr, frKey, b)
		e := verifySenderDirectory(t, tw, b)
		if strings.Contains(e.SenderCheck, "kept") {
			t.Errorf("sender check %q: DE was reachable", e.SenderCheck)
		}
		if got := kept(tw.Stores["DE"], "FR"); len(got) != 1 {
			t.Errorf("DE keeps %q of FR's directories, want %q", got, first)
		}
	})

	t.Run("sender check while the sender's directory cannot be fetched", func(t *testing.T) {
		// FR restarts and cannot fetch DE's directory: it checks the
		// sender against the copy it kept.
		tw.Stop(t, "FR")
		tw.Start(t, "FR")
		lg.setUnreachable("DE", true)
		defer lg.setUnreachable("DE", false)
		de, _ := tw.Client("DE", "forensics")
		b := evxtest.Seal(t, deKey, to, 20_000)
		if _, err := upload(ctx, de, b); err != nil {
			t.Fatal(err)
		}
		if _, err := client.WaitDelivered(ctx, de, b.Env.BundleID, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		// The recipient checks the sender while DE is down altogether.
		tw.Stop(t, "DE")
		e := verifySenderDirectory(t, tw, b)
		if !strings.Contains(e.SenderCheck, "kept") {
			t.Errorf("sender check %q does not say that the kept copy was used", e.SenderCheck)
		}
		fr, frKey := tw.Client("FR", "prosecutor")
		pulled(t, fr, frKey, b)
		tw.Start(t, "DE")
	})

	t.Run("tampered copy", func(t *testing.T) {
		// A newer object in DE's storage, named like a kept directory of
		// FR, with a changed body: it is the latest, so the only one read,
		// and its signature does not verify.
		st := tw.Stores["DE"]
		var signed crypto.Signed
		if err := getJSONLimit(ctx, st, first[0], &signed, maxDirectorySize); err != nil {
			t.Fatal(err)
		}
		signed.Body = []byte(strings.Replace(string(signed.Body), `"recipient"`, `"submitter"`, 1))
		forged := directoryKey("FR", &signed, clock.Now().Add(time.Hour))
		if err := putJSON(ctx, st, forged, &signed); err != nil {
			t.Fatal(err)
		}
		tw.Stop(t, "FR")
		tw.Stop(t, "DE")
		tw.Start(t, "DE")
		if err := lookup("FR/prosecutor"); !isAPIError(err, 503, "unavailable") {
			t.Fatalf("lookup with a tampered kept directory while FR is down: %v, want 503 unavailable", err)
		}
		refused := tw.Logs["DE"].FilterMessage("kept peer directory refused").FilterField(zap.String("key", forged)).Len()
		if refused != 1 {
			t.Errorf("tampered directory refused %d times in the log, want 1:\n%s", refused, dumpLogs(tw.Logs["DE"]))
		}
		tw.Start(t, "FR")
		clock.Add(peerDirectoryMinRefresh)
		if err := lookup("FR/prosecutor"); err != nil {
			t.Fatalf("lookup once FR is back: %v", err)
		}
	})
}

// TestPeerRefused checks that a peer whose certificate is refused is
// reported as such: lookups answer 502 peer-refused, and deliveries, still
// retried, are logged as an authentication failure at error level, once
// per peer per backoff wait.
func TestPeerRefused(t *testing.T) {
	clock := newTestClock()
	lg := newLiveGateways()
	wrongCA := true
	failures := make(chan string, 1000)
	var tw *testWorld
	tw = newTestWorld(t, diskStore, func(id string, o *Options) {
		o.Now = clock.Now
		o.directoryFault = lg.fault
		if id != "DE" {
			return
		}
		o.onDeliveryFailed = func(id string, _ error) {
			select {
			case failures <- id:
			default:
			}
		}
		if wrongCA {
			// FR pinned to DE's CA, which did not issue FR's certificate.
			for i := range o.Peers {
				o.Peers[i].CA = tw.Dev.Country("DE").CAPool()
			}
		}
	})
	tw.Start(t, "DE")
	tw.Start(t, "FR")
	ctx := context.Background()
	de, deKey := tw.Client("DE", "forensics")

	_, err := de.Lookup(ctx, "FR/prosecutor")
	if !isAPIError(err, 502, "peer-refused") {
		t.Fatalf("lookup at a peer with the wrong CA: %v, want 502 peer-refused", err)
	}
	want := "gateway FR's certificate is not issued by the CA configured for it (peers: FR, ca)"
	if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "not a temporary one") {
		t.Errorf("error %q does not say %q", err, want)
	}
	b := evxtest.Seal(t, deKey, []crypto.PublicKey{tw.recipientKey("FR", "prosecutor")}, 1000)
	if _, err := upload(ctx, de, b); !isAPIError(err, 502, "peer-refused") {
		t.Fatalf("upload to a peer with the wrong CA: %v, want 502 peer-refused", err)
	}

	// With FR's directory kept from when the CA was right, the upload is
	// queued, and its deliveries fail.
	wrongCA = false
	tw.Stop(t, "DE")
	tw.Start(t, "DE")
	de, _ = tw.Client("DE", "forensics")
	if _, err := de.Lookup(ctx, "FR/prosecutor"); err != nil {
		t.Fatal(err)
	}
	wrongCA = true
	tw.Stop(t, "DE")
	tw.Start(t, "DE")
	de, _ = tw.Client("DE", "forensics")
	if _, err := upload(ctx, de, b); err != nil {
		t.Fatalf("upload with FR's directory kept: %v", err)
	}
	waitFailures := func(n int) {
		t.Helper()
		timeout := time.After(30 * time.Second)
		for range n {
			select {
			case id := <-failures:
				if id != b.Env.BundleID {
					t.Fatalf("delivery of %s failed, want %s", id, b.Env.BundleID)
				}
			case <-timeout:
				t.Fatalf("fewer than %d delivery failures:\n%s", n, dumpLogs(tw.Logs["DE"]))
			}
		}
	}
	authFailures := func() []observer.LoggedEntry {
		return tw.Logs["DE"].FilterMessage("peer authentication failed").FilterField(zap.String("during", "delivery")).All()
	}
	waitFailures(3)
	got := authFailures()
	if len(got) != 1 {
		t.Fatalf("3 failed deliveries within one backoff logged %d authentication failures, want 1:\n%s", len(got), dumpLogs(tw.Logs["DE"]))
	}
	if e := got[0]; e.Level.String() != "error" || e.ContextMap()["peer"] != "FR" || !strings.Contains(fmt.Sprint(e.ContextMap()["reason"]), want) {
		t.Errorf("logged %s %v, want an error for peer FR saying %q", e.Level, e.ContextMap(), want)
	}
	if n := tw.Logs["DE"].FilterMessage("delivery failed; will retry").Len(); n != 0 {
		t.Errorf("refused deliveries logged %d times as failures to retry", n)
	}
	// Once the longest backoff has passed, the next failure is logged
	// again. Failures already under way may still see the old time; the
	// second one after the move is sure to see the new one.
	clock.Add(time.Hour)
	for len(failures) > 0 {
		<-failures
	}
	waitFailures(2)
	if n := len(authFailures()); n != 2 {
		t.Errorf("after the backoff %d authentication failures are logged, want 2", n)
	}
	st, err := de.OutboxStatus(ctx, b.Env.BundleID)
	if err != nil || st.State != api.StateQueued {
		t.Errorf("outbox status %+v, %v: want still queued", st, err)
	}
}

// A peer that refuses this gateway's certificate is reported as such too:
// the lookup answers 502 peer-refused and says which side must change.
func TestRefusedByPeer(t *testing.T) {
	var tw *testWorld
	tw = newTestWorld(t, diskStore, func(id string, o *Options) {
		if id == "FR" {
			// DE pinned at FR to FR's own CA, which did not issue DE's
			// certificate.
			for i := range o.Peers {
				o.Peers[i].CA = tw.Dev.Country("FR").CAPool()
			}
		}
	})
	tw.Start(t, "DE")
	tw.Start(t, "FR")
	de, _ := tw.Client("DE", "forensics")
	_, err := de.Lookup(context.Background(), "FR/prosecutor")
	if !isAPIError(err, 502, "peer-refused") {
		t.Fatalf("lookup at a peer that refuses DE's certificate: %v, want 502 peer-refused", err)
	}
	if want := "gateway FR refuses this gateway's certificate"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
}
