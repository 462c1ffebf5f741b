package audit

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"evx/crypto"
)

// The period of the test reports: the first quarter of 2026.
var (
	reportFrom = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	reportTo   = time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)
	inPeriod   = time.Date(2026, 2, 10, 9, 0, 0, 0, time.UTC)
)

// Texts that entries carry and that a report must never show.
const (
	secretLegalBasis = "EIO 2026/4711-LEGALBASIS Art. 18"
	secretReason     = "case-4711 REASON-TEXT"
)

// testLog builds the entries of one gateway's log, as valid entries in
// their canonical bytes, in the order of the calls.
type testLog struct {
	t    testing.TB
	gw   string
	n    int
	ids  []string
	data [][]byte
}

func newTestLog(t testing.TB, gw string) *testLog { return &testLog{t: t, gw: gw} }

// testBundle is what the entries of one test bundle say about it.
type testBundle struct {
	id, peer, purpose, handling string
	size                        int64
}

// newBundle returns a bundle with a fresh, distinctive id.
func (l *testLog) newBundle(peer, purpose, handling string, size int64) testBundle {
	l.n++
	h := sha256.Sum256(fmt.Appendf(nil, "bundle %d of %s", l.n, l.gw))
	id := hex.EncodeToString(h[:16])
	l.ids = append(l.ids, id)
	return testBundle{id, peer, purpose, handling, size}
}

func (l *testLog) add(e Entry) {
	l.t.Helper()
	e.Gateway = l.gw
	l.data = append(l.data, mustMarshal(l.t, &e))
}

func (l *testLog) withBundle(e Entry, b testBundle) Entry {
	e.BundleID = b.id
	e.EnvelopeSHA256 = digest("envelope " + b.id)
	e.Purpose, e.Handling, e.LegalBasis = b.purpose, b.handling, secretLegalBasis
	e.PayloadSHA256, e.PayloadSize = digest("payload "+b.id), b.size
	e.Peer = b.peer
	return e
}

// receipt returns a receipt by b's peer for b, sent by l's gateway.
func (l *testLog) receipt(b testBundle) *crypto.Signed {
	p, e, lh := digest("payload "+b.id), digest("envelope "+b.id), digest("leaf "+b.id)
	body := `{"bundle_id":"` + b.id + `","envelope_sha256":"` + hex.EncodeToString(e[:]) +
		`","format":"evx-receipt/2","log":{"leaf_hash":"` + hex.EncodeToString(lh[:]) + `","leaf_index":7,"tree_size":7},` +
		`"payload_sha256":"` + hex.EncodeToString(p[:]) + `","received_at":"2026-02-10T09:00:00Z","receiver":"` + b.peer + `","sender":"` + l.gw + `"}`
	return &crypto.Signed{Body: []byte(body), Signature: ed25519.Sign(testReceiptKey(), []byte(body))}
}

func (l *testLog) uploadAccepted(at time.Time, b testBundle) {
	l.add(l.withBundle(Entry{Time: at, Actor: UnitActor(l.gw + "/forensics"), Event: EventUploadAccepted}, b))
}

func (l *testLog) offerSent(at time.Time, b testBundle) {
	l.add(Entry{Time: at, Actor: GatewayActor, Event: EventOfferSent, BundleID: b.id, Peer: b.peer, EnvelopeSHA256: digest("envelope " + b.id)})
}

func (l *testLog) delivered(at time.Time, b testBundle) {
	e := l.withBundle(Entry{Time: at, Actor: PeerActor(b.peer), Event: EventDelivered}, b)
	e.Receipt = l.receipt(b)
	l.add(e)
}

func (l *testLog) deliveryRefused(at time.Time, b testBundle, code string) {
	l.add(Entry{Time: at, Actor: PeerActor(b.peer), Event: EventDeliveryRefused, BundleID: b.id, Peer: b.peer, Code: code, Reason: secretReason})
}

func (l *testLog) uploadRefused(at time.Time, peer, code string) {
	l.add(Entry{Time: at, Actor: UnitActor(l.gw + "/forensics"), Event: EventUploadRefused, Peer: peer, Code: code, Reason: secretReason})
}

func (l *testLog) receiptIssued(at time.Time, b testBundle) {
	l.add(l.withBundle(Entry{Time: at, Actor: PeerActor(b.peer), Event: EventReceiptIssued}, b))
}

func (l *testLog) offerRefused(at time.Time, peer, code string) {
	b := l.newBundle(peer, "", "", 0)
	l.add(Entry{Time: at, Actor: PeerActor(peer), Event: EventOfferRefused, Peer: peer, Code: code, BundleID: b.id, Reason: secretReason})
}

func (l *testLog) acknowledged(at time.Time, b testBundle) {
	l.add(Entry{Time: at, Actor: UnitActor(l.gw + "/prosecutor"), Event: EventRetrievalAcknowledged, BundleID: b.id, Peer: b.peer})
}

func (l *testLog) requestsRefused(at time.Time, code string, n int64) {
	at = at.Truncate(time.Minute)
	l.add(Entry{Time: at, Actor: GatewayActor, Event: EventRequestsRefused, Code: code, Count: n, Source: "2001:db8:4711::/64",
		WindowStart: at.Add(-time.Minute), WindowEnd: at, Reason: secretReason})
}

// send logs a bundle taken on at at, as a stored upload: accepted, offered
// a millisecond later, and delivered took after at.
func (l *testLog) send(at time.Time, b testBundle, took time.Duration) {
	l.uploadAccepted(at, b)
	l.offerSent(at.Add(time.Millisecond), b)
	l.delivered(at.Add(took), b)
}

// receive logs a bundle received at at, downloaded and acknowledged after
// after, if it is not negative.
func (l *testLog) receive(at time.Time, b testBundle, after time.Duration) {
	l.add(l.withBundle(Entry{Time: at, Actor: PeerActor(b.peer), Event: EventOfferAccepted}, b))
	l.receiptIssued(at, b)
	if after >= 0 {
		l.add(Entry{Time: at.Add(after), Actor: UnitActor(l.gw + "/prosecutor"), Event: EventPayloadDownloaded, BundleID: b.id, Peer: b.peer,
			PayloadSHA256: digest("payload " + b.id), PayloadSize: b.size})
		l.acknowledged(at.Add(after), b)
	}
}

// report tallies l's entries.
func (l *testLog) report(opts ReportOptions) *TransparencyReport {
	l.t.Helper()
	if opts.From.IsZero() {
		opts.From, opts.To = reportFrom, reportTo
	}
	t, err := NewTally(opts)
	if err != nil {
		l.t.Fatal(err)
	}
	for _, d := range l.data {
		if err := t.AddBytes(d); err != nil {
			l.t.Fatal(err)
		}
	}
	return t.Report()
}

// rendered returns r in every format.
func rendered(t testing.TB, r *TransparencyReport) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, f := range ReportFormats {
		var b bytes.Buffer
		if err := r.Write(&b, f); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out[f] = b.String()
	}
	return out
}

func TestReportSuppression(t *testing.T) {
	for _, tc := range []struct {
		threshold, n int
		want         Count
	}{
		{0, 1, Count{Below: 5}},
		{0, 4, Count{Below: 5}},
		{0, 5, Count{N: 5}},
		{0, 6, Count{N: 6}},
		{5, 4, Count{Below: 5}},
		{2, 1, Count{Below: 2}},
		{2, 2, Count{N: 2}},
		{10, 9, Count{Below: 10}},
		{10, 10, Count{N: 10}},
	} {
		t.Run(fmt.Sprintf("threshold %d, %d bundles", tc.threshold, tc.n), func(t *testing.T) {
			l := newTestLog(t, "DE")
			for i := range tc.n {
				b := l.newBundle("FR", "prosecution", "H1", 1000+int64(i))
				l.send(inPeriod, b, time.Second)
			}
			r := l.report(ReportOptions{From: reportFrom, To: reportTo, Threshold: tc.threshold})
			if len(r.Transfers) != 1 {
				t.Fatalf("transfers %+v, want one row", r.Transfers)
			}
			row := r.Transfers[0]
			if row.Bundles != tc.want {
				t.Errorf("bundles %+v, want %+v", row.Bundles, tc.want)
			}
			wantBytes := int64(0)
			if !tc.want.Suppressed() {
				wantBytes = int64(tc.n)*1000 + int64(tc.n*(tc.n-1)/2)
			}
			if row.Bytes != wantBytes {
				t.Errorf("bytes %d, want %d", row.Bytes, wantBytes)
			}
			out := rendered(t, r)
			threshold := r.Threshold
			if tc.want.Suppressed() {
				below := fmt.Sprintf("<%d", threshold)
				if !strings.Contains(out["md"], "| delivered | "+below+" | — |") {
					t.Errorf("markdown row not suppressed:\n%s", out["md"])
				}
				if !strings.Contains(out["csv"], ",delivered,,,"+below+",,\n") {
					t.Errorf("CSV row not suppressed:\n%s", out["csv"])
				}
				if !strings.Contains(out["json"], `"bundles": "`+below+`",`) || !strings.Contains(out["json"], `"bytes": null`) {
					t.Errorf("JSON row not suppressed:\n%s", out["json"])
				}
			} else {
				if !strings.Contains(out["md"], fmt.Sprintf("| delivered | %d | %s |", tc.n, FormatBytes(wantBytes))) {
					t.Errorf("markdown row:\n%s", out["md"])
				}
				if !strings.Contains(out["csv"], fmt.Sprintf(",delivered,,,%d,%d,\n", tc.n, wantBytes)) {
					t.Errorf("CSV row:\n%s", out["csv"])
				}
				if !strings.Contains(out["json"], fmt.Sprintf(`"bundles": %d,`, tc.n)) || !strings.Contains(out["json"], fmt.Sprintf(`"bytes": %d`, wantBytes)) {
					t.Errorf("JSON row:\n%s", out["json"])
				}
			}
			// The exact count is nowhere in a suppressed report, but
			// for its rows, which are suppressed too: no total.
			if tc.want.Suppressed() && strings.Contains(out["json"], fmt.Sprintf(": %d", tc.n)) {
				t.Errorf("the suppressed count %d is in the JSON:\n%s", tc.n, out["json"])
			}
		})
	}
}

// TestReportPartition checks what keeps a suppressed count from being
// recovered: each event is counted in one row of one table, and nothing
// else, so that no published number is a sum of others. It tallies with
// a threshold of 1 (set inside the package: NewTally refuses it) to see
// every row.
func TestReportPartition(t *testing.T) {
	l := newTestLog(t, "DE")
	counted := map[Event]int64{}
	for i := range 40 {
		at := inPeriod.Add(time.Duration(i) * time.Hour)
		peer := []string{"FR", "NL", "IT"}[i%3]
		purpose := crypto.Purposes[i%len(crypto.Purposes)]
		handling := crypto.HandlingCodes[i%len(crypto.HandlingCodes)]
		switch i % 7 {
		case 0, 1:
			l.send(at, l.newBundle(peer, purpose, handling, 100), time.Second)
			counted[EventDelivered]++
		case 2:
			b := l.newBundle(peer, purpose, handling, 100)
			l.uploadAccepted(at, b)
			l.deliveryRefused(at.Add(time.Second), b, "not-accepted")
			counted[EventDeliveryRefused]++
		case 3:
			l.receive(at, l.newBundle(peer, purpose, handling, 100), time.Minute)
			counted[EventReceiptIssued]++
		case 4:
			l.offerRefused(at, peer, "unknown-sender")
			counted[EventOfferRefused]++
		case 5:
			l.uploadRefused(at, peer, "unknown-recipient")
			counted[EventUploadRefused]++
		case 6:
			l.requestsRefused(at, "api-handshake", int64(i))
			counted[EventRequestsRefused] += int64(i)
		}
	}
	tl, err := NewTally(ReportOptions{From: reportFrom, To: reportTo})
	if err != nil {
		t.Fatal(err)
	}
	tl.threshold = 1
	for _, d := range l.data {
		if err := tl.AddBytes(d); err != nil {
			t.Fatal(err)
		}
	}
	r := tl.Report()
	sums := map[string]int64{}
	for _, row := range r.Transfers {
		sums[row.Outcome] += row.Bundles.N
	}
	for _, row := range r.Refusals {
		sums[string(row.Stage)] += row.Count.N
	}
	want := map[string]int64{
		OutcomeDelivered:      counted[EventDelivered],
		OutcomeReceived:       counted[EventReceiptIssued],
		string(StageDelivery): counted[EventDeliveryRefused],
		string(StageOffer):    counted[EventOfferRefused],
		string(StageUpload):   counted[EventUploadRefused],
		string(StageRequest):  counted[EventRequestsRefused],
	}
	if !reflect.DeepEqual(sums, want) {
		t.Errorf("the rows sum to %v, want each event counted once: %v", sums, want)
	}

	// The report's JSON has these members and no others: no totals, and
	// no number of timed bundles beside a median.
	var doc map[string]any
	if err := json.Unmarshal([]byte(rendered(t, r)["json"]), &doc); err != nil {
		t.Fatal(err)
	}
	keys := func(m map[string]any) []string {
		var k []string
		for name := range m {
			k = append(k, name)
		}
		slices.Sort(k)
		return k
	}
	if got, want := keys(doc), []string{"delivery_times", "from", "gateway", "refusals", "retrieval_times", "threshold", "to", "transfers", "unread_entries"}; !slices.Equal(got, want) {
		t.Errorf("report members %v, want %v", got, want)
	}
	for table, want := range map[string][]string{
		"transfers":       {"bundles", "bytes", "direction", "handling", "outcome", "peer", "purpose"},
		"refusals":        {"code", "count", "direction", "peer", "stage"},
		"delivery_times":  {"median_ms", "peer"},
		"retrieval_times": {"median_ms", "peer"},
	} {
		rows := doc[table].([]any)
		if len(rows) == 0 {
			t.Fatalf("no %s", table)
		}
		if got := keys(rows[0].(map[string]any)); !slices.Equal(got, want) {
			t.Errorf("%s members %v, want %v", table, got, want)
		}
	}
}

// TestReportDifferencing is the attack TestReportPartition prevents, on
// one example: a peer with one large row and one small one. With a total
// per peer, the small row would be the total minus the large one.
func TestReportDifferencing(t *testing.T) {
	l := newTestLog(t, "DE")
	for range 11 {
		l.send(inPeriod, l.newBundle("FR", "prosecution", "H1", 1<<20), time.Second)
	}
	for range 3 {
		l.send(inPeriod, l.newBundle("FR", "incident-response", "H3", 777), time.Second)
	}
	for range 2 {
		b := l.newBundle("FR", "prosecution", "H1", 1<<20)
		l.uploadAccepted(inPeriod, b)
		l.deliveryRefused(inPeriod, b, "not-accepted")
	}
	r := l.report(ReportOptions{})
	// Every number in the report, in every format, is one of those
	// published: none is 14 (all delivered), 16 (all sent) or 13
	// (refused plus shown), nor a volume that holds the suppressed row's
	// 3×777 bytes.
	for f, out := range rendered(t, r) {
		for _, n := range []string{"14", "16", "13", fmt.Sprint(11<<20 + 3*777), fmt.Sprint(3 * 777)} {
			if containsNumber(out, n) {
				t.Errorf("%s holds %s:\n%s", f, n, out)
			}
		}
	}
}

// containsNumber reports whether s holds n as a whole number.
func containsNumber(s, n string) bool {
	isDigit := func(b byte) bool { return '0' <= b && b <= '9' }
	for i := 0; ; {
		j := strings.Index(s[i:], n)
		if j < 0 {
			return false
		}
		j += i
		if (j == 0 || !isDigit(s[j-1])) && (j+len(n) == len(s) || !isDigit(s[j+len(n)])) {
			return true
		}
		i = j + 1
	}
}

// TestReportHoldsNoCase checks that no format shows anything that could
// identify a case: bundle ids, legal bases, reasons, digests, receipts,
// sources, configuration digests.
func TestReportHoldsNoCase(t *testing.T) {
	l := newTestLog(t, "DE")
	var bundles []testBundle
	for i := range 12 {
		b := l.newBundle([]string{"FR", "NL"}[i%2], "mutual-legal-assistance", "H2", 4096)
		bundles = append(bundles, b)
		l.send(inPeriod.Add(time.Duration(i)*time.Minute), b, time.Duration(i+1)*time.Second)
	}
	for i := range 6 {
		b := l.newBundle("FR", "prosecution", "H1", 4096)
		bundles = append(bundles, b)
		l.receive(inPeriod.Add(time.Duration(i)*time.Minute), b, time.Hour)
	}
	b := l.newBundle("FR", "prosecution", "H1", 1)
	bundles = append(bundles, b)
	l.uploadAccepted(inPeriod, b)
	l.deliveryRefused(inPeriod, b, "not-accepted")
	l.uploadRefused(inPeriod, "FR", "unknown-recipient")
	l.offerRefused(inPeriod, "NL", "unknown-sender")
	l.requestsRefused(inPeriod, "api-handshake", 9)
	l.add(Entry{Time: inPeriod, Actor: GatewayActor, Event: EventGatewayStarted, ConfigSHA256: digest("config")})
	l.add(Entry{Time: inPeriod, Actor: GatewayActor, Event: EventSecurity, Kind: KindReceiptNotIncluded, Peer: "FR",
		BundleID: bundles[0].id, Receipt: l.receipt(bundles[0]), Reason: secretReason})

	r := l.report(ReportOptions{Threshold: MinThreshold})
	secrets := []string{secretLegalBasis, "LEGALBASIS", "4711", "REASON", "2001:db8", "evx-receipt", "forensics", "prosecutor"}
	for _, id := range l.ids {
		secrets = append(secrets, id, id[:8])
	}
	for _, b := range bundles {
		for _, d := range []string{"envelope ", "payload ", "leaf "} {
			h := digest(d + b.id)
			secrets = append(secrets, hex.EncodeToString(h[:])[:16], base64.StdEncoding.EncodeToString(h[:])[:16])
		}
		rc := l.receipt(b)
		secrets = append(secrets, base64.StdEncoding.EncodeToString(rc.Body)[:24], base64.StdEncoding.EncodeToString(rc.Signature)[:24])
	}
	h := digest("config")
	secrets = append(secrets, hex.EncodeToString(h[:])[:16])
	for f, out := range rendered(t, r) {
		for _, s := range secrets {
			if strings.Contains(out, s) {
				t.Errorf("the %s report shows %q:\n%s", f, s, out)
			}
		}
		// Not vacuous: the report shows what it counts.
		for _, s := range []string{"FR", "NL", "mutual-legal-assistance", "H2", "not-accepted", "unknown-sender", "api-handshake"} {
			if !strings.Contains(out, s) {
				t.Errorf("the %s report lacks %q:\n%s", f, s, out)
			}
		}
	}
}

func TestReportPeriod(t *testing.T) {
	l := newTestLog(t, "DE")
	// Five bundles at each edge of the period, each edge under its own
	// purpose.
	edges := []struct {
		at      time.Time
		purpose string
		in      bool
	}{
		{reportFrom.Add(-time.Millisecond), "criminal-investigation", false},
		{reportFrom, "prosecution", true},
		{reportTo.Add(-time.Millisecond), "mutual-legal-assistance", true},
		{reportTo, "incident-response", false},
	}
	for _, e := range edges {
		for range 5 {
			b := l.newBundle("FR", e.purpose, "H1", 10)
			l.uploadAccepted(e.at.Add(-time.Hour), b)
			l.delivered(e.at, b)
			l.uploadRefused(e.at, "FR", e.purpose)
		}
	}
	r := l.report(ReportOptions{From: reportFrom, To: reportTo})
	var got []string
	for _, row := range r.Transfers {
		got = append(got, fmt.Sprintf("%s %s", row.Purpose, row.Bundles))
	}
	if want := []string{"mutual-legal-assistance 5", "prosecution 5"}; !slices.Equal(got, want) {
		t.Errorf("transfers %v, want %v", got, want)
	}
	got = nil
	for _, row := range r.Refusals {
		got = append(got, fmt.Sprintf("%s %s", row.Code, row.Count))
	}
	if want := []string{"mutual-legal-assistance 5", "prosecution 5"}; !slices.Equal(got, want) {
		t.Errorf("refusals %v, want %v", got, want)
	}
	// Started an hour before the period, delivered at its start: timed.
	if want := []TimeRow{{Peer: "FR", Median: Median{D: time.Hour}}, {Median: Median{D: time.Hour}}}; !reflect.DeepEqual(r.DeliveryTimes, want) {
		t.Errorf("delivery times %+v, want %+v", r.DeliveryTimes, want)
	}
	out := rendered(t, r)
	if !strings.Contains(out["md"], "Period: from 2026-01-01 to 2026-04-01, the end excluded (UTC).") {
		t.Errorf("markdown period:\n%s", out["md"])
	}
	if !strings.Contains(out["csv"], "\nDE,2026-01-01,2026-04-01,transfers,") {
		t.Errorf("CSV period:\n%s", out["csv"])
	}
	if !strings.Contains(out["json"], `"from": "2026-01-01T00:00:00Z",`) || !strings.Contains(out["json"], `"to": "2026-04-01T00:00:00Z",`) {
		t.Errorf("JSON period:\n%s", out["json"])
	}
}

func TestReportOptions(t *testing.T) {
	for _, tc := range []struct {
		opts ReportOptions
		err  string
	}{
		{ReportOptions{From: reportFrom, To: reportTo, Threshold: 1}, "threshold 1 would publish single cases: want from 2 to 1000"},
		{ReportOptions{From: reportFrom, To: reportTo, Threshold: -3}, "threshold -3 would publish single cases"},
		{ReportOptions{From: reportFrom, To: reportTo, Threshold: 1001}, "threshold 1001: want from 2 to 1000"},
		{ReportOptions{From: reportFrom}, "a report needs the start and the end of its period"},
		{ReportOptions{From: reportTo, To: reportFrom}, "empty period: it starts at 2026-04-01T00:00:00Z and ends at 2026-01-01T00:00:00Z"},
		{ReportOptions{From: reportFrom, To: reportFrom}, "empty period"},
	} {
		_, err := NewTally(tc.opts)
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("NewTally(%+v): %v, want %q", tc.opts, err, tc.err)
		}
	}
	tl, err := NewTally(ReportOptions{From: reportFrom, To: reportTo})
	if err != nil {
		t.Fatal(err)
	}
	if r := tl.Report(); r.Threshold != DefaultThreshold {
		t.Errorf("threshold %d, want %d", r.Threshold, DefaultThreshold)
	}
}

func TestReportMedians(t *testing.T) {
	l := newTestLog(t, "DE")
	send := func(peer string, took ...time.Duration) {
		for _, d := range took {
			l.send(inPeriod, l.newBundle(peer, "prosecution", "H2", 1), d)
		}
	}
	s := time.Second
	send("FR", 1*s, 2*s, 100*s, 3*s, 4*s)    // median 3 s
	send("NL", 6*s, 1*s, 2*s, 3*s, 4*s, 5*s) // 3.5 s
	send("IT", 10*s, 20*s, 30*s, 40*s)       // four: withheld
	// A direct upload is offered before it is accepted: timed from the
	// offer.
	b := l.newBundle("PL", "prosecution", "H2", 1)
	l.offerSent(inPeriod, b)
	l.uploadAccepted(inPeriod.Add(700*time.Millisecond), b)
	l.delivered(inPeriod.Add(2*s), b)
	// A delivery logged before its upload, by a clock set back: 0.
	b = l.newBundle("PL", "prosecution", "H2", 1)
	l.uploadAccepted(inPeriod.Add(time.Minute), b)
	l.delivered(inPeriod, b)
	// A delivery whose start the log does not hold is counted, not timed.
	b = l.newBundle("PL", "prosecution", "H2", 1)
	l.delivered(inPeriod, b)
	// A refusal ends a bundle: its later delivery is not timed from the
	// first upload.
	b = l.newBundle("PL", "prosecution", "H2", 1)
	l.uploadAccepted(inPeriod.Add(-time.Hour), b)
	l.deliveryRefused(inPeriod, b, "not-accepted")
	l.delivered(inPeriod, b)
	send("PL", 1*s, 1*s, 1*s)

	// Retrievals: from the receipt to the first acknowledgement.
	recv := func(peer string, after ...time.Duration) {
		for _, d := range after {
			l.receive(inPeriod, l.newBundle(peer, "prosecution", "H1", 1), d)
		}
	}
	h := time.Hour
	recv("FR", h, 2*h, 3*h, 4*h, 5*h, 6*h)
	recv("NL", -1, -1, -1)         // never retrieved
	recv("NL", 3*time.Millisecond) // one: withheld
	b = l.newBundle("NL", "prosecution", "H1", 1)
	l.receive(inPeriod, b, 5*h)
	l.acknowledged(inPeriod.Add(50*h), b) // a second acknowledgement: not timed

	r := l.report(ReportOptions{})
	// All 20 delivery times: 0, 1, 1, 1, 1, 1, 2, 2, 2, 3, 3, 4, 4, 5, 6,
	// 10, 20, 30, 40 and 100 s.
	wantDelivery := []TimeRow{
		{Peer: "FR", Median: Median{D: 3 * s}},
		{Peer: "IT", Median: Median{Below: 5}},
		{Peer: "NL", Median: Median{D: 3500 * time.Millisecond}},
		{Peer: "PL", Median: Median{D: 1 * s}}, // 0, 1, 1, 1, 2
		{Median: Median{D: 3 * s}},
	}
	if !reflect.DeepEqual(r.DeliveryTimes, wantDelivery) {
		t.Errorf("delivery times\n%+v, want\n%+v", r.DeliveryTimes, wantDelivery)
	}
	wantRetrieval := []TimeRow{
		{Peer: "FR", Median: Median{D: 3*h + 30*time.Minute}},
		{Peer: "NL", Median: Median{Below: 5}},
		{Median: Median{D: 3*h + 30*time.Minute}}, // 3 ms, 1 to 6 h, and 5 h
	}
	if !reflect.DeepEqual(r.RetrievalTimes, wantRetrieval) {
		t.Errorf("retrieval times\n%+v, want\n%+v", r.RetrievalTimes, wantRetrieval)
	}
	out := rendered(t, r)
	for _, want := range []string{"| delivery | FR | 3.0 s |", "| delivery | IT | — (fewer than 5) |", "| delivery | NL | 3.5 s |",
		"| delivery | all | 3.0 s |", "| retrieval | FR | 3 h 30 min |", "| retrieval | all | 3 h 30 min |"} {
		if !strings.Contains(out["md"], want) {
			t.Errorf("markdown lacks %q:\n%s", want, out["md"])
		}
	}
	for _, want := range []string{"DE,2026-01-01,2026-04-01,delivery-time,,NL,,,,,,,,3500\n", "delivery-time,,IT,,,,,,,,<5\n", "retrieval-time,,all,,,,,,,,12600000\n"} {
		if !strings.Contains(out["csv"], want) {
			t.Errorf("CSV lacks %q:\n%s", want, out["csv"])
		}
	}
	for _, want := range []string{`"peer": "IT",
      "median_ms": null`, `"peer": "all",
      "median_ms": 3000`} {
		if !strings.Contains(out["json"], want) {
			t.Errorf("JSON lacks %q:\n%s", want, out["json"])
		}
	}
}

func TestReportMedianEven(t *testing.T) {
	tl, err := NewTally(ReportOptions{From: reportFrom, To: reportTo, Threshold: 2})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ds   []time.Duration
		want Median
	}{
		{[]time.Duration{time.Millisecond}, Median{Below: 2}},
		{[]time.Duration{2 * time.Millisecond, time.Millisecond}, Median{D: time.Millisecond}}, // 1.5 ms, to the millisecond
		{[]time.Duration{4 * time.Second, time.Second, 3 * time.Second}, Median{D: 3 * time.Second}},
		{[]time.Duration{1<<62 + 2, 1<<62 + 4}, Median{D: (1<<62 + 3) / time.Millisecond * time.Millisecond}}, // no overflow
	} {
		if got := tl.median(tc.ds); got != tc.want {
			t.Errorf("median(%v) = %+v, want %+v", tc.ds, got, tc.want)
		}
	}
}

func TestReportRefusals(t *testing.T) {
	l := newTestLog(t, "DE")
	for range 6 {
		l.uploadRefused(inPeriod, "FR", "unknown-recipient")
	}
	for range 2 {
		l.uploadRefused(inPeriod, "", "bad-request")
	}
	for range 5 {
		b := l.newBundle("FR", "prosecution", "H1", 1)
		l.uploadAccepted(inPeriod, b)
		l.deliveryRefused(inPeriod, b, "not-accepted")
	}
	for range 7 {
		l.offerRefused(inPeriod, "NL", "unknown-sender")
	}
	l.offerRefused(inPeriod, "FR", "unknown-sender")
	for _, n := range []int64{1000, 234, 1} {
		l.requestsRefused(inPeriod, "api-handshake", n)
	}
	l.requestsRefused(inPeriod, "peer-connections", 4)
	r := l.report(ReportOptions{})
	want := []RefusalRow{
		{StageUpload, "", "bad-request", Count{Below: 5}},
		{StageUpload, "FR", "unknown-recipient", Count{N: 6}},
		{StageDelivery, "FR", "not-accepted", Count{N: 5}},
		{StageOffer, "FR", "unknown-sender", Count{Below: 5}},
		{StageOffer, "NL", "unknown-sender", Count{N: 7}},
		{StageRequest, "", "api-handshake", Count{N: 1235}},
		{StageRequest, "", "peer-connections", Count{Below: 5}},
	}
	if !reflect.DeepEqual(r.Refusals, want) {
		t.Errorf("refusals\n%+v, want\n%+v", r.Refusals, want)
	}
	if len(r.Transfers) != 0 {
		t.Errorf("refused bundles counted as transfers: %+v", r.Transfers)
	}
	out := rendered(t, r)
	for _, want := range []string{"| upload | outbound | — | bad-request | <5 |", "| delivery | outbound | FR | not-accepted | 5 |",
		"| offer | inbound | NL | unknown-sender | 7 |", "| request | — | — | api-handshake | 1235 |"} {
		if !strings.Contains(out["md"], want) {
			t.Errorf("markdown lacks %q:\n%s", want, out["md"])
		}
	}
	if !strings.Contains(out["csv"], "DE,2026-01-01,2026-04-01,refusals,inbound,NL,,,,offer,unknown-sender,7,,\n") {
		t.Errorf("CSV:\n%s", out["csv"])
	}
	if !strings.Contains(out["json"], `"stage": "request",
      "code": "api-handshake",
      "count": 1235`) {
		t.Errorf("JSON:\n%s", out["json"])
	}
}

func TestReportReadsEntries(t *testing.T) {
	l := newTestLog(t, "DE")
	l.send(inPeriod, l.newBundle("FR", "prosecution", "H1", 1), time.Second)
	tl, err := NewTally(ReportOptions{From: reportFrom, To: reportTo})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range l.data {
		if err := tl.AddBytes(d); err != nil {
			t.Fatal(err)
		}
	}
	// Entries a newer evx wrote are reported, not counted.
	for _, d := range []string{`{"format":"evx-log-entry/9","anything":1}`,
		strings.Replace(string(l.data[0]), `"event":"upload-accepted"`, `"event":"upload-vetted"`, 1)} {
		if err := tl.AddBytes([]byte(d)); err != nil {
			t.Errorf("AddBytes(%s): %v", d, err)
		}
	}
	if r := tl.Report(); r.Unread != 2 {
		t.Errorf("unread %d, want 2", r.Unread)
	}
	if err := tl.AddBytes([]byte(`{"format":"evx-log-entry/1"}`)); err == nil {
		t.Error("a malformed entry was counted")
	}
	if err := tl.AddBytes(bytes.Replace(l.data[0], []byte(`"gateway":"DE"`), []byte(`"gateway":"NL"`), 1)); err == nil ||
		!strings.Contains(err.Error(), `an entry of gateway "NL" in the log of "DE"`) {
		t.Errorf("entry of another gateway: %v", err)
	}
	var b bytes.Buffer
	if err := tl.Report().Write(&b, "xml"); err == nil || !strings.Contains(err.Error(), `unknown report format "xml": want one of md, csv, json`) {
		t.Errorf("format xml: %v", err)
	}
}

func TestFormatReportValues(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0 ms", 850 * time.Millisecond: "850 ms", 12340 * time.Millisecond: "12.3 s",
		4*time.Minute + 5*time.Second: "4 min 5 s", 3*time.Hour + 12*time.Minute + 59*time.Second: "3 h 12 min",
		51 * time.Hour: "2 d 3 h",
	} {
		if got := FormatDuration(d); got != want {
			t.Errorf("FormatDuration(%v) = %q, want %q", d, got, want)
		}
	}
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536 << 10: "1.5 MiB", 5 << 30: "5.0 GiB", 3 << 40: "3.0 TiB", 3 << 50: "3072.0 TiB"} {
		if got := FormatBytes(n); got != want {
			t.Errorf("FormatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

// FuzzReport tallies logs of any sequence of events and checks what a
// report promises: counts under the threshold and their volumes
// suppressed, each event counted once, and every format well formed and
// free of bundle ids.
func FuzzReport(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17})
	f.Add(bytes.Repeat([]byte{0, 0, 1, 1, 2, 3, 4, 4, 5}, 12))
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) > 3000 {
			return
		}
		threshold := 2 + int(len(ops)%5)
		tl, err := NewTally(ReportOptions{From: reportFrom, To: reportTo, Threshold: threshold})
		if err != nil {
			t.Fatal(err)
		}
		shadow, _ := NewTally(ReportOptions{From: reportFrom, To: reportTo})
		shadow.threshold = 1
		peers := []string{"FR", "NL"}
		var ids []string
		counted := int64(0)
		at := reportFrom.Add(-time.Hour)
		for i := 0; i+1 < len(ops); i += 2 {
			op, arg := ops[i], ops[i+1]
			at = at.Add(time.Duration(arg) * time.Minute)
			if len(ids) == 0 || op&0x80 != 0 {
				h := sha256.Sum256([]byte{byte(i), byte(i >> 8)})
				ids = append(ids, hex.EncodeToString(h[:16]))
			}
			id := ids[int(arg)%len(ids)]
			peer := peers[int(op>>4)%len(peers)]
			e := Entry{Time: at, Gateway: "DE", BundleID: id, Peer: peer, Purpose: crypto.Purposes[int(arg)%len(crypto.Purposes)],
				Handling: "H1", LegalBasis: secretLegalBasis, PayloadSize: int64(arg) + 1, Code: "not-accepted", Count: int64(arg) + 1}
			switch op % 8 {
			case 0:
				e.Event = EventUploadAccepted
			case 1:
				e.Event = EventOfferSent
			case 2:
				e.Event = EventDelivered
			case 3:
				e.Event = EventDeliveryRefused
			case 4:
				e.Event = EventReceiptIssued
			case 5:
				e.Event = EventRetrievalAcknowledged
			case 6:
				e.Event = EventOfferRefused
			case 7:
				e.Event = EventRequestsRefused
			}
			in := !at.Before(reportFrom) && at.Before(reportTo)
			if in && (e.Event == EventDelivered || e.Event == EventReceiptIssued) {
				counted++
			}
			if err := tl.Add(&e); err != nil {
				t.Fatal(err)
			}
			if err := shadow.Add(&e); err != nil {
				t.Fatal(err)
			}
		}
		r := tl.Report()
		checkCount := func(c Count) {
			if c.Suppressed() && (c.N != 0 || c.Below != threshold) || !c.Suppressed() && c.N < int64(threshold) {
				t.Fatalf("count %+v under threshold %d", c, threshold)
			}
		}
		for _, row := range r.Transfers {
			checkCount(row.Bundles)
			if row.Bundles.Suppressed() != (row.Bytes == 0) {
				t.Fatalf("row %+v: bytes not withheld with its count", row)
			}
		}
		for _, row := range r.Refusals {
			checkCount(row.Count)
		}
		for _, row := range slices.Concat(r.DeliveryTimes, r.RetrievalTimes) {
			if row.Median.Suppressed() && (row.Median.D != 0 || row.Median.Below != threshold) {
				t.Fatalf("median %+v", row.Median)
			}
		}
		sum := int64(0)
		for _, row := range shadow.Report().Transfers {
			sum += row.Bundles.N
		}
		if sum != counted {
			t.Fatalf("transfers sum to %d, want %d", sum, counted)
		}
		out := rendered(t, r)
		for f, s := range out {
			for _, id := range ids {
				if strings.Contains(s, id) {
					t.Fatalf("%s shows bundle id %s", f, id)
				}
			}
			if strings.Contains(s, "LEGALBASIS") {
				t.Fatalf("%s shows the legal basis", f)
			}
		}
		if !json.Valid([]byte(out["json"])) {
			t.Fatalf("invalid JSON:\n%s", out["json"])
		}
		recs, err := csv.NewReader(strings.NewReader(out["csv"])).ReadAll()
		if err != nil {
			t.Fatalf("CSV: %v\n%s", err, out["csv"])
		}
		if want := 1 + len(r.Transfers) + len(r.Refusals) + len(r.DeliveryTimes) + len(r.RetrievalTimes); len(recs) != want {
			t.Fatalf("%d CSV records, want %d", len(recs), want)
		}
	})
}
