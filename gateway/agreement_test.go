package gateway

import (
	"encoding/base64"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"evx/agreement"
	"evx/api"
	"evx/audit"
	"evx/client"
	"evx/crypto"
	"evx/internal/devenv"
	"evx/internal/evxtest"
	"evx/storage"
	"evx/transfer"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// The bundles of these tests are sealed with evxtest.SealOptions:
// mutual-legal-assistance, H2, TLP:RED, kept 24 hours, to FR/prosecutor.

// agreementWith returns a copy of the dev-env agreement with peer, changed
// by edit.
func agreementWith(peer string, edit func(a *agreement.Agreement)) *agreement.Agreement {
	a := devenv.DevAgreement(peer)
	if edit != nil {
		edit(a)
	}
	return a
}

// clock is a gateway clock that a test moves on, from the real time.
type clock struct{ offset atomic.Int64 }

func (c *clock) now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *clock) advance(d time.Duration) { c.offset.Add(int64(d)) }

// decisions returns the agreement-decision entries of g's log about bundle.
func decisions(t *testing.T, g *Gateway, bundle string) []*audit.Entry {
	t.Helper()
	var out []*audit.Entry
	for _, e := range logEntries(t, g) {
		if e.Event == audit.EventAgreementDecision && e.BundleID == bundle {
			out = append(out, e)
		}
	}
	return out
}

// wantDecisions checks that g's log holds n agreement-decisions about
// bundle, each with code, the dev-env agreement's version and reference
// (none for no-agreement), and the outcome and direction that follow.
func wantDecisions(t *testing.T, g *Gateway, bundle, code string, dir audit.Direction, n int) {
	t.Helper()
	ds := decisions(t, g, bundle)
	var found []string
	for _, e := range ds {
		found = append(found, e.Code+" "+string(e.Direction()))
	}
	if len(ds) != n {
		t.Fatalf("%s's decisions about %s: %q, want %d %s %s", g.opts.ID, bundle, found, n, code, dir)
	}
	for _, e := range ds {
		if e.Code != code || e.Direction() != dir {
			t.Fatalf("%s's decisions about %s: %q, want %d %s %s", g.opts.ID, bundle, found, n, code, dir)
		}
		checkDecision(t, g, e, code)
	}
}

// checkDecision checks the members of an agreement-decision with code.
func checkDecision(t *testing.T, g *Gateway, e *audit.Entry, code string) {
	t.Helper()
	wantVersion, wantRef := int64(1), "dev-env"
	if code == string(agreement.CodeNoAgreement) {
		wantVersion, wantRef = 0, ""
	}
	if e.AgreementVersion != wantVersion || e.AgreementRef != wantRef {
		t.Errorf("%s's decision names agreement v%d ref %q, want v%d ref %q", g.opts.ID, e.AgreementVersion, e.AgreementRef, wantVersion, wantRef)
	}
	wantOutcome := audit.OutcomeRefused
	if code == string(agreement.CodeAllowed) {
		wantOutcome = audit.OutcomeAccepted
	} else if e.Reason == "" {
		t.Errorf("%s's refusal %s has no reason", g.opts.ID, code)
	}
	if e.Outcome() != wantOutcome {
		t.Errorf("%s's decision has outcome %s, want %s", g.opts.ID, e.Outcome(), wantOutcome)
	}
}

// inboxKeys returns what g's storage holds of bundle in the inbox.
func inboxKeys(t *testing.T, tw *testWorld, country, bundle string) []string {
	t.Helper()
	return storedKeys(t, tw.Stores[country], inboxPrefix+bundle)
}

// bundleObjects is objects without the peers' directories, which a lookup
// of the recipients keeps before the agreement decides.
func bundleObjects(t *testing.T, tw *testWorld, country string) []storage.Info {
	t.Helper()
	return slices.DeleteFunc(objects(t, tw.Stores[country]), func(in storage.Info) bool {
		return strings.HasPrefix(in.Key, "directories/")
	})
}

// TestAgreementRefusesUpload checks each refusal of the sender's own
// agreement at an upload: the API's code is the agreement's, with its
// sentence; nothing is stored at either gateway; both the decision (with
// the agreement's version) and the refused upload are in the sender's log.
func TestAgreementRefusesUpload(t *testing.T) {
	day := 24 * time.Hour
	for _, tc := range []struct {
		name   string
		edit   func(a *agreement.Agreement)
		none   bool          // DE has no agreement with FR
		ahead  time.Duration // DE's clock runs this far ahead
		code   api.Code
		status int
		reason string
	}{
		{name: "no agreement", none: true, code: api.CodeNoAgreement, status: 403, reason: "gateway DE has no agreement with FR"},
		{name: "purpose", edit: func(a *agreement.Agreement) { a.Outbound = []string{"prosecution"} },
			code: api.CodePurposeNotAllowed, status: 403, reason: `agreement DE→FR v1 (ref dev-env) does not allow purpose "mutual-legal-assistance" outbound; allowed: prosecution`},
		{name: "retention above the cap", edit: func(a *agreement.Agreement) { a.MaxRetention["mutual-legal-assistance"] = 12 * time.Hour },
			code: api.CodeRetentionTooLong, status: 403, reason: "refused, not shortened"},
		{name: "handling", edit: func(a *agreement.Agreement) { a.Handling = []string{"H1"} }, code: api.CodeHandlingNotAccepted, status: 403, reason: `handling code "H2"`},
		{name: "tlp", edit: func(a *agreement.Agreement) { a.TLP = []string{"TLP:CLEAR"} }, code: api.CodeTLPNotAccepted, status: 403, reason: `TLP label "TLP:RED"`},
		{name: "size", edit: func(a *agreement.Agreement) { a.MaxBundleSize = 100 }, code: api.CodeTooLarge, status: 413, reason: "at most 100 bytes"},
		{name: "suspended", edit: func(a *agreement.Agreement) { a.Status, a.StatusReason = agreement.Suspended, "under review" },
			code: api.CodeAgreementSuspended, status: 403, reason: "is suspended: under review"},
		{name: "terminated", edit: func(a *agreement.Agreement) { a.Status = agreement.Terminated }, code: api.CodeAgreementTerminated, status: 403, reason: "is terminated"},
		{name: "lapsed", edit: func(a *agreement.Agreement) { a.ValidUntil = time.Now().Add(day) }, ahead: 2 * day,
			code: api.CodeAgreementLapsed, status: 403, reason: "lapsed at"},
		{name: "not yet valid", edit: func(a *agreement.Agreement) { a.ValidFrom = time.Now().Add(day) },
			code: api.CodeAgreementNotYet, status: 403, reason: "is valid from"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &clock{}
			c.advance(tc.ahead)
			tw := newTestWorld(t, diskStore, func(id string, o *Options) {
				if id != "DE" {
					return
				}
				o.Now = c.now
				o.Agreements = nil
				if !tc.none {
					o.Agreements = []*agreement.Agreement{agreementWith("FR", tc.edit)}
				}
			})
			tw.Start(t, "DE")
			tw.Start(t, "FR")
			ctx := t.Context()
			de, deKey := tw.Client("DE", "forensics")
			b := evxtest.Seal(t, deKey, []crypto.PublicKey{tw.recipientKey("FR", "prosecutor")}, 1000)
			for _, mode := range []api.DeliveryMode{api.Queue, api.Direct} {
				deBefore, frBefore := bundleObjects(t, tw, "DE"), bundleObjects(t, tw, "FR")
				_, err := uploadMode(ctx, de, b, mode)
				var ae *api.Error
				if !errors.As(err, &ae) || ae.Code != tc.code || ae.HTTPStatus != tc.status || !strings.Contains(ae.Message, tc.reason) {
					t.Fatalf("%s upload: %v, want %d %s saying %q", mode, err, tc.status, tc.code, tc.reason)
				}
				wantUnchanged(t, "DE's storage", deBefore, bundleObjects(t, tw, "DE"))
				wantUnchanged(t, "FR's storage", frBefore, bundleObjects(t, tw, "FR"))
			}
			ds := decisions(t, tw.gw("DE"), b.Env.BundleID)
			if len(ds) != 2 {
				t.Fatalf("DE logged %d decisions about the bundle, want 2 (one per upload)", len(ds))
			}
			for _, e := range ds {
				if e.Code != string(tc.code) || e.Direction() != audit.Outbound || e.Actor != audit.UnitActor("DE/forensics") || e.Outcome() != audit.OutcomeRefused {
					t.Errorf("DE's decision: %+v", e)
				}
				if v, ref := e.AgreementVersion, e.AgreementRef; !tc.none && (v != 1 || ref != "dev-env") || tc.none && (v != 0 || ref != "") {
					t.Errorf("DE's decision names agreement v%d ref %q", v, ref)
				}
			}
			var refused int
			for _, e := range logEntries(t, tw.gw("DE")) {
				if e.Event == audit.EventUploadRefused && e.BundleID == b.Env.BundleID && e.Code == string(tc.code) {
					refused++
				}
			}
			if refused != 2 {
				t.Errorf("DE logged %d upload-refused %s entries, want 2", refused, tc.code)
			}
			if got := testutil.ToFloat64(tw.gw("DE").metrics.agreementDecisions.WithLabelValues("FR", "outbound", string(tc.code))); got != 2 {
				t.Errorf("evx_agreement_decisions_total{FR,outbound,%s} = %v, want 2", tc.code, got)
			}
		})
	}
}

// TestAgreementRefusesOffer checks each refusal of the receiver's own
// agreement at an offer, while the sender's allows the bundle: FR rejects
// with the agreement's code, which DE stores as a final refusal that the
// submitter sees; FR stores nothing of the bundle; each side logs its
// decision with the agreement's version.
func TestAgreementRefusesOffer(t *testing.T) {
	day := 24 * time.Hour
	for _, tc := range []struct {
		name   string
		edit   func(a *agreement.Agreement)
		none   bool
		ahead  time.Duration // FR's clock runs this far ahead
		users  func(u *User)
		code   string
		reason string
	}{
		// DE allows mutual-legal-assistance outbound; FR does not accept
		// it inbound: DE's submitter reads FR's code.
		{name: "purpose", edit: func(a *agreement.Agreement) { a.Inbound = []string{"criminal-investigation", "prosecution"} },
			code: transfer.CodePurposeNotAccepted, reason: `agreement FR→DE v1 (ref dev-env) does not allow purpose "mutual-legal-assistance" inbound`},
		{name: "recipient not authorised", users: func(u *User) {
			if u.Unit == "FR/prosecutor" {
				u.Purposes = []string{"prosecution"}
			}
		}, code: transfer.CodeRecipientNotAuth, reason: `recipient FR/prosecutor is not authorised for purpose "mutual-legal-assistance"; it is for: prosecution`},
		{name: "retention above the cap", edit: func(a *agreement.Agreement) { a.MaxRetention["mutual-legal-assistance"] = 23 * time.Hour },
			code: transfer.CodeRetentionTooLong, reason: "allows a retention of at most"},
		{name: "no agreement", none: true, code: transfer.CodeNoAgreement, reason: "gateway FR has no agreement with DE"},
		{name: "lapsed", edit: func(a *agreement.Agreement) { a.ValidUntil = time.Now().Add(day) }, ahead: 2 * day,
			code: transfer.CodeAgreementLapsed, reason: "lapsed at"},
		{name: "not yet valid", edit: func(a *agreement.Agreement) { a.ValidFrom = time.Now().Add(day) },
			code: transfer.CodeAgreementNotYetValid, reason: "is valid from"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &clock{}
			c.advance(tc.ahead)
			held := make(chan error, 100)
			tw := newTestWorld(t, diskStore, func(id string, o *Options) {
				if id == "DE" {
					o.onDeliveryFailed = func(_ string, err error) { held <- err }
					// DE decides as if it knew nothing of FR's agreement,
					// as a sender on older code does: FR's own checks are
					// what these cases test.
					o.withoutPeerViews = true
				}
				if id != "FR" {
					return
				}
				o.Now = c.now
				o.Agreements = nil
				if !tc.none {
					o.Agreements = []*agreement.Agreement{agreementWith("DE", tc.edit)}
				}
				if tc.users != nil {
					for i := range o.Users {
						tc.users(&o.Users[i])
					}
				}
			})
			tw.Start(t, "DE")
			tw.Start(t, "FR")
			ctx := t.Context()
			de, deKey := tw.Client("DE", "forensics")
			for _, mode := range []api.DeliveryMode{api.Queue, api.Direct} {
				b := evxtest.Seal(t, deKey, []crypto.PublicKey{tw.recipientKey("FR", "prosecutor")}, 1000)
				if _, err := uploadMode(ctx, de, b, mode); err != nil {
					t.Fatalf("%s upload: %v", mode, err)
				}
				if heldBy(tc.code) {
					// Cooperation FR has paused holds the bundle at DE,
					// queued, until FR's agreement is in force again: a
					// direct upload that FR holds at its offer is stored
					// and held too.
					for {
						var rej *transfer.Rejection
						if err := <-held; errors.As(err, &rej) && rej.Code == tc.code {
							break
						}
					}
					if st, err := de.OutboxStatus(ctx, b.Env.BundleID); err != nil || st.State != api.StateQueued {
						t.Fatalf("held bundle: %+v, %v; want queued", st, err)
					}
					if keys := inboxKeys(t, tw, "FR", b.Env.BundleID); len(keys) != 0 {
						t.Errorf("FR stored %q of a bundle it refused", keys)
					}
					continue
				}
				_, err := client.WaitDelivered(ctx, de, b.Env.BundleID, 20*time.Second)
				var refused *client.RefusedError
				if !errors.As(err, &refused) || refused.RefusalCode() != tc.code || !strings.Contains(refused.Refusal.Reason, tc.reason) {
					t.Fatalf("%s: %v, want FR's refusal %s saying %q", mode, err, tc.code, tc.reason)
				}
				if keys := inboxKeys(t, tw, "FR", b.Env.BundleID); len(keys) != 0 {
					t.Errorf("%s: FR stored %q of a bundle it refused", mode, keys)
				}
				// A queued bundle is decided at its upload and again at
				// its delivery.
				n := 2
				if mode == api.Direct {
					n = 1
				}
				wantDecisions(t, tw.gw("DE"), b.Env.BundleID, "allowed", audit.Outbound, n)
				wantDecisions(t, tw.gw("FR"), b.Env.BundleID, tc.code, audit.Inbound, 1)
				var deRefused bool
				for _, e := range logEntries(t, tw.gw("DE")) {
					deRefused = deRefused || e.Event == audit.EventDeliveryRefused && e.BundleID == b.Env.BundleID && e.Code == tc.code
				}
				if !deRefused {
					t.Errorf("%s: DE's log has no delivery-refused %s entry", mode, tc.code)
				}
			}
			got := testutil.ToFloat64(tw.gw("FR").metrics.agreementDecisions.WithLabelValues("DE", "inbound", tc.code))
			if want := 2.0; got != want && !(heldBy(tc.code) && got >= want) {
				t.Errorf("FR's evx_agreement_decisions_total{DE,inbound,%s} = %v, want 2 (more while a bundle is held)", tc.code, got)
			}
		})
	}
}

// A queued bundle is decided again when it is delivered: an agreement that
// lapsed since the upload holds it, queued, neither lost nor failed, and
// nothing reaches the peer; once the agreement is in force again (here the
// clock goes back), it goes out. A terminated agreement refuses it for good
// (TestAgreementTerminatedWhileQueued).
func TestAgreementLapsesWhileQueued(t *testing.T) {
	c := &clock{}
	until := time.Now().Add(24 * time.Hour)
	held := make(chan error, 100)
	tw := newTestWorld(t, diskStore, func(id string, o *Options) {
		if id == "DE" {
			o.Now = c.now
			o.Agreements = []*agreement.Agreement{agreementWith("FR", func(a *agreement.Agreement) { a.ValidUntil = until })}
			o.onDeliveryFailed = func(_ string, err error) { held <- err }
		}
	})
	ctx := t.Context()
	de, b := queueWhileFRDown(t, tw)
	c.advance(48 * time.Hour)
	tw.Start(t, "FR")
	// Attempts fail while FR is down; the one after FR is back is held.
	for {
		err := <-held
		var rej *transfer.Rejection
		if errors.As(err, &rej) && rej.Code == string(agreement.CodeLapsed) {
			break
		}
	}
	if st, err := de.OutboxStatus(ctx, b.Env.BundleID); err != nil || st.State != api.StateQueued {
		t.Fatalf("held bundle: %+v, %v; want queued", st, err)
	}
	if keys := inboxKeys(t, tw, "FR", b.Env.BundleID); len(keys) != 0 {
		t.Errorf("FR stored %q of a bundle DE holds", keys)
	}
	for _, e := range logEntries(t, tw.gw("DE")) {
		if e.BundleID == b.Env.BundleID && e.Event == audit.EventOfferSent {
			t.Error("DE offered a bundle its agreement holds")
		}
	}
	g := tw.gw("DE")
	if v := testutil.ToFloat64(g.metrics.agreementStatus.WithLabelValues("FR", "lapsed")); v != 1 {
		t.Errorf(`evx_agreement_status{FR,lapsed} = %v, want 1`, v)
	}
	if v := testutil.ToFloat64(g.metrics.agreementStatus.WithLabelValues("FR", "active")); v != 0 {
		t.Errorf(`evx_agreement_status{FR,active} = %v, want 0`, v)
	}
	if v := testutil.ToFloat64(g.metrics.agreementDaysLeft.WithLabelValues("FR")); v > -0.99 || v < -1.01 {
		t.Errorf("evx_agreement_days_until_valid_until{FR} = %v, want about -1", v)
	}

	// In force again: the next attempt delivers it.
	c.advance(-48 * time.Hour)
	if _, err := client.WaitDelivered(ctx, de, b.Env.BundleID, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	var codes []string
	for _, e := range decisions(t, tw.gw("DE"), b.Env.BundleID) {
		codes = append(codes, e.Actor+" "+e.Code)
	}
	if len(codes) < 3 || codes[0] != "unit:DE/forensics allowed" || codes[1] != "gateway agreement-lapsed" || codes[len(codes)-1] != "gateway allowed" {
		t.Errorf("DE's decisions: %q, want allowed at the upload, lapsed while held, allowed at the delivery", codes)
	}
}

// The rate limits count allowed bundles per peer and direction over a
// sliding hour: over the limit, an upload is refused with rate-limited, a
// Retry-After header and the wait in its reason, until the hour has
// passed.
// queueWhileFRDown starts DE and FR, pushes once (so that DE keeps FR's
// directory), stops FR and uploads a bundle DE queues for it: DE's client
// and the bundle.
func queueWhileFRDown(t *testing.T, tw *testWorld) (*client.Client, *evxtest.Bundle) {
	t.Helper()
	tw.Start(t, "DE")
	tw.Start(t, "FR")
	ctx := t.Context()
	de, deKey := tw.Client("DE", "forensics")
	first := evxtest.Seal(t, deKey, []crypto.PublicKey{tw.recipientKey("FR", "prosecutor")}, 1000)
	if _, err := uploadMode(ctx, de, first, api.Direct); err != nil {
		t.Fatal(err)
	}
	tw.Stop(t, "FR")
	b := evxtest.Seal(t, deKey, []crypto.PublicKey{tw.recipientKey("FR", "prosecutor")}, 1000)
	if _, err := upload(ctx, de, b); err != nil {
		t.Fatal(err)
	}
	return de, b
}

// A bundle queued under an agreement that is terminated before it goes out
// (the gateway restarted with the new configuration) is refused for good:
// a terminated agreement is not resumed, only replaced.
func TestAgreementTerminatedWhileQueued(t *testing.T) {
	var terminated atomic.Bool
	tw := newTestWorld(t, diskStore, func(id string, o *Options) {
		if id == "DE" && terminated.Load() {
			o.Agreements = []*agreement.Agreement{agreementWith("FR", func(a *agreement.Agreement) {
				a.Status, a.StatusReason = agreement.Terminated, "decision 2026/200"
			})}
		}
	})
	ctx := t.Context()
	_, b := queueWhileFRDown(t, tw)
	tw.Stop(t, "DE")
	terminated.Store(true)
	tw.Start(t, "DE")
	tw.Start(t, "FR")
	de, _ := tw.Client("DE", "forensics")
	_, err := client.WaitDelivered(ctx, de, b.Env.BundleID, 20*time.Second)
	var refused *client.RefusedError
	if !errors.As(err, &refused) || refused.RefusalCode() != string(agreement.CodeTerminated) ||
		!strings.Contains(refused.Refusal.Reason, "decision 2026/200") {
		t.Fatalf("queued bundle: %v; want refused agreement-terminated with the reason", err)
	}
	if keys := inboxKeys(t, tw, "FR", b.Env.BundleID); len(keys) != 0 {
		t.Errorf("FR stored %q of a bundle DE refused", keys)
	}
}

func TestAgreementRateLimitUpload(t *testing.T) {
	c := &clock{}
	tw := newTestWorld(t, diskStore, func(id string, o *Options) {
		if id == "DE" {
			o.Now = c.now
			o.Agreements = []*agreement.Agreement{agreementWith("FR", func(a *agreement.Agreement) { a.RateBundles, a.RateBytes = 2, 1<<20 })}
		}
	})
	tw.Start(t, "DE")
	tw.Start(t, "FR")
	ctx := t.Context()
	de, deKey := tw.Client("DE", "forensics")
	seal := func() *evxtest.Bundle {
		return evxtest.Seal(t, deKey, []crypto.PublicKey{tw.recipientKey("FR", "prosecutor")}, 1000)
	}
	for range 2 {
		if _, err := uploadMode(ctx, de, seal(), api.Direct); err != nil {
			t.Fatal(err)
		}
	}
	c.advance(30 * time.Minute)
	b := seal()
	before := bundleObjects(t, tw, "DE")
	resp := rawUpload(t, tw, b)
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("third upload: status %d, want 429", resp.StatusCode)
	}
	// The first two leave the window 30 minutes from now, or a little
	// less: the window slides by the minute.
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || s <= 29*60 || s > 30*60 {
		t.Errorf("Retry-After %q, want about 1800 seconds", resp.Header.Get("Retry-After"))
	}
	_, err := upload(ctx, de, b)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeRateLimited || !strings.Contains(ae.Message, "allows 2 bundles an hour outbound") || !strings.Contains(ae.Message, "retry after") {
		t.Fatalf("third upload: %v, want rate-limited with a retry-after", err)
	}
	wantUnchanged(t, "DE's storage", before, bundleObjects(t, tw, "DE"))
	// Refusals do not count: an hour after the first two, one more fits.
	c.advance(31 * time.Minute)
	if _, err := uploadMode(ctx, de, b, api.Direct); err != nil {
		t.Fatalf("an hour later: %v", err)
	}
	// Bytes count too: 1 MiB an hour, of which 3,000 bytes are used.
	big := evxtest.Seal(t, deKey, []crypto.PublicKey{tw.recipientKey("FR", "prosecutor")}, 1<<20-1000)
	if _, err := upload(ctx, de, big); !errors.As(err, &ae) || ae.Code != api.CodeRateLimited || !strings.Contains(ae.Message, "bytes an hour") {
		t.Fatalf("a bundle over the byte limit: %v, want rate-limited", err)
	}
	ds := decisions(t, tw.gw("DE"), b.Env.BundleID)
	if len(ds) != 3 || ds[0].Code != "rate-limited" || ds[1].Code != "rate-limited" || ds[2].Code != "allowed" {
		t.Errorf("DE's decisions about the third bundle: %d, want rate-limited twice then allowed", len(ds))
	}
}

// rawUpload uploads b to DE without the client, for the response's
// headers.
func rawUpload(t *testing.T, tw *testWorld, b *evxtest.Bundle) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, tw.URL("DE")+"/v1/bundles", strings.NewReader(string(b.Payload)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(api.HeaderEnvelope, base64.StdEncoding.EncodeToString(b.EnvJSON))
	req.Header.Set(api.HeaderSignature, base64.StdEncoding.EncodeToString(b.Sig))
	resp, err := tw.apiHTTPClient(t, "DE", "forensics", false).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

// A receiver's rate limit is temporary for the sender: the offer over it
// is refused with rate-limited, stored nowhere, and the sender keeps the
// bundle queued and tries again.
func TestAgreementRateLimitOffer(t *testing.T) {
	failed := make(chan error, 16)
	tw := newTestWorld(t, diskStore, func(id string, o *Options) {
		switch id {
		case "FR":
			o.Agreements = []*agreement.Agreement{agreementWith("DE", func(a *agreement.Agreement) { a.RateBundles = 1 })}
		case "DE":
			o.onDeliveryFailed = func(_ string, err error) {
				select {
				case failed <- err:
				default:
				}
			}
		}
	})
	tw.Start(t, "DE")
	tw.Start(t, "FR")
	ctx := t.Context()
	de, deKey := tw.Client("DE", "forensics")
	if _, err := uploadMode(ctx, de, evxtest.Seal(t, deKey, []crypto.PublicKey{tw.recipientKey("FR", "prosecutor")}, 1000), api.Direct); err != nil {
		t.Fatal(err)
	}
	b := evxtest.Seal(t, deKey, []crypto.PublicKey{tw.recipientKey("FR", "prosecutor")}, 1000)
	if _, err := upload(ctx, de, b); err != nil {
		t.Fatal(err)
	}
	err := <-failed
	var rej *transfer.Rejection
	if !errors.As(err, &rej) || rej.Code != transfer.CodeRateLimited || !strings.Contains(rej.Reason, "retry after") {
		t.Fatalf("delivery over FR's limit: %v, want rate-limited", err)
	}
	if st, err := de.OutboxStatus(ctx, b.Env.BundleID); err != nil || st.State != api.StateQueued {
		t.Errorf("status: %+v, %v; want queued", st, err)
	}
	if keys := inboxKeys(t, tw, "FR", b.Env.BundleID); len(keys) != 0 {
		t.Errorf("FR stored %q of a bundle over its limit", keys)
	}
	if ds := decisions(t, tw.gw("FR"), b.Env.BundleID); len(ds) == 0 || ds[0].Code != "rate-limited" || ds[0].Direction() != audit.Inbound {
		t.Errorf("FR's decisions about the bundle: %v", ds)
	}
}

// With the dev-env agreement every peer's status is active, without an
// end; a peer without an agreement is none.
func TestAgreementGauges(t *testing.T) {
	tw := newTestWorld(t, diskStore, func(id string, o *Options) {
		if id == "FR" {
			o.Agreements = nil
		}
	})
	tw.Start(t, "DE")
	tw.Start(t, "FR")
	for _, tc := range []struct{ id, peer, state string }{{"DE", "FR", "active"}, {"FR", "DE", "none"}} {
		g := tw.gw(tc.id)
		g.setAgreementGauges()
		for _, s := range agreementStates {
			want := 0.0
			if s == tc.state {
				want = 1
			}
			if v := testutil.ToFloat64(g.metrics.agreementStatus.WithLabelValues(tc.peer, s)); v != want {
				t.Errorf("%s: evx_agreement_status{%s,%s} = %v, want %v", tc.id, tc.peer, s, v, want)
			}
		}
		if n := testutil.CollectAndCount(g.metrics.agreementDaysLeft); n != 0 {
			t.Errorf("%s: %d series of evx_agreement_days_until_valid_until, want none", tc.id, n)
		}
	}
}
