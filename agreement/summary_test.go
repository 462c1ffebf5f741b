package agreement

import (
	"bytes"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

var issued = time.Date(2026, 12, 3, 16, 52, 50, 123456000, time.UTC)

// frDE is FR's agreement with DE mirroring deFR: what DE sends, FR
// accepts, and the other way round, with the same caps and limits.
func frDE() *Agreement {
	a := deFR()
	a.Peer = "DE"
	a.Outbound, a.Inbound = slices.Clone(a.Inbound), slices.Clone(a.Outbound)
	a.MaxRetention["mutual-legal-assistance"] = 180 * day
	return a
}

// deFRCapped is deFR with a cap for every purpose it allows, as a
// configuration must have.
func deFRCapped() *Agreement {
	a := deFR()
	a.MaxRetention["mutual-legal-assistance"] = 180 * day
	return a
}

func summaryOf(a *Agreement) *Summary {
	return &Summary{Gateway: "DE", Peer: "FR", Issued: issued, Sequence: 1796316770123456, Agreement: a}
}

func marshal(t *testing.T, s *Summary) []byte {
	t.Helper()
	body, err := s.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return body
}

func TestSummaryRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		edit func(a *Agreement) *Agreement
	}{
		{"the example", func(a *Agreement) *Agreement { return a }},
		{"no agreement", func(*Agreement) *Agreement { return nil }},
		{"suspended", func(a *Agreement) *Agreement {
			a.Status, a.StatusReason = Suspended, `audit of FR's storage, "urgent" <now> & then`
			return a
		}},
		{"terminated", func(a *Agreement) *Agreement { a.Status, a.StatusReason = Terminated, "Vertrag gekündigt"; return a }},
		{"nothing allowed", func(a *Agreement) *Agreement {
			a.Outbound, a.Inbound, a.Handling, a.TLP, a.MaxRetention = nil, nil, nil, nil, map[string]time.Duration{}
			return a
		}},
		{"no limits and no dates", func(a *Agreement) *Agreement {
			a.MaxBundleSize, a.RateBundles, a.RateBytes = 0, 0, 0
			a.ValidFrom, a.ValidUntil = time.Time{}, time.Time{}
			return a
		}},
		{"retention in hours and seconds", func(a *Agreement) *Agreement {
			a.MaxRetention["prosecution"] = 36 * time.Hour
			a.MaxRetention["criminal-investigation"] = time.Second
			return a
		}},
		{"times with fractions", func(a *Agreement) *Agreement {
			a.ValidFrom = from.Add(time.Nanosecond)
			a.ValidUntil = until.Add(999 * time.Millisecond)
			return a
		}},
		{"one start", func(a *Agreement) *Agreement { a.ValidUntil = time.Time{}; return a }},
		{"one end", func(a *Agreement) *Agreement { a.ValidFrom = time.Time{}; return a }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := summaryOf(tt.edit(deFRCapped()))
			body := marshal(t, want)
			got, err := ParseSummary(body, "DE", "FR")
			if err != nil {
				t.Fatalf("%v\n%s", err, body)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("parsed %+v\nwant   %+v", got, want)
			}
			if again := marshal(t, got); !bytes.Equal(again, body) {
				t.Errorf("marshalled again:\n%s\nwant\n%s", again, body)
			}
			if want.Agreement == nil {
				return
			}
			// FR decides what it sends DE under DE's agreement as DE
			// will decide it, inbound.
			for _, at := range []time.Time{from.Add(-time.Second), now, until} {
				for _, r := range []Request{ok(), {Peer: "FR", Direction: Inbound, Purpose: "prosecution", Handling: "H2", TLP: "TLP:RED", Retention: 100 * day},
					{Peer: "FR", Direction: Inbound, Purpose: "mutual-legal-assistance", Handling: "H1", TLP: "TLP:AMBER", Retention: 181 * day}} {
					if d, w := Decide("DE", got.Agreement, at, r), Decide("DE", want.Agreement, at, r); d != w {
						t.Errorf("at %v, %+v: decided %+v from the summary, %+v from the agreement", at, r, d, w)
					}
				}
			}
		})
	}
}

func TestSummaryForm(t *testing.T) {
	body := marshal(t, summaryOf(deFRCapped()))
	want := `{"agreement":{"handling":["H1","H2"],"inbound":["criminal-investigation","mutual-legal-assistance"],` +
		`"max_bundle_size":1073741824,"max_retention":{"criminal-investigation":31536000,"mutual-legal-assistance":15552000,"prosecution":63072000},` +
		`"outbound":["criminal-investigation","prosecution"],"rate_bundles_per_hour":10,"rate_bytes_per_hour":1099511627776,` +
		`"reason":"","ref":"2026/114","status":"active","tlp":["TLP:RED","TLP:AMBER"],` +
		`"valid_from":"2026-01-01T00:00:00Z","valid_until":"2027-01-01T00:00:00Z","version":3},` +
		`"format":"evx-agreement-summary/1","gateway":"DE","issued":"2026-12-03T16:52:50.123456Z","peer":"FR","sequence":1796316770123456}`
	if string(body) != want {
		t.Errorf("body\n%s\nwant\n%s", body, want)
	}
	none := marshal(t, summaryOf(nil))
	if want := `{"agreement":null,"format":"evx-agreement-summary/1","gateway":"DE","issued":"2026-12-03T16:52:50.123456Z","peer":"FR","sequence":1796316770123456}`; string(none) != want {
		t.Errorf("body\n%s\nwant\n%s", none, want)
	}
	// Issued in another zone is written in UTC.
	s := summaryOf(nil)
	s.Issued = issued.In(time.FixedZone("CET", 3600))
	if got := marshal(t, s); !bytes.Equal(got, none) {
		t.Errorf("issued in CET: %s", got)
	}
}

// largest returns the largest summary within the bounds: every list and
// string at its limit, with the characters JSON escapes most.
func largest() *Summary {
	words := func(prefix string) []string {
		ws := make([]string, MaxSummaryItems)
		for i := range ws {
			w := fmt.Sprintf("%s%d-", prefix, i)
			ws[i] = w + strings.Repeat("x", MaxSummaryWord-len(w))
		}
		return ws
	}
	a := deFR()
	a.Outbound, a.Inbound, a.Handling, a.TLP = words("o"), words("i"), words("h"), words("t")
	a.MaxRetention = map[string]time.Duration{}
	for _, p := range a.Outbound {
		a.MaxRetention[p] = MaxSummaryRetention
	}
	a.Ref = strings.Repeat(`"`, MaxSummaryRef)
	a.Status, a.StatusReason = Terminated, strings.Repeat(`\`, MaxSummaryReason)
	a.Version, a.MaxBundleSize, a.RateBundles, a.RateBytes = MaxSummaryNumber, MaxSummaryNumber, MaxSummaryNumber, MaxSummaryNumber
	a.ValidFrom, a.ValidUntil = from.Add(time.Nanosecond), until.Add(time.Nanosecond)
	s := summaryOf(a)
	s.Gateway, s.Peer, s.Sequence = strings.Repeat("D", MaxSummaryWord), strings.Repeat("F", MaxSummaryWord), MaxSummaryNumber
	a.Peer = s.Peer
	return s
}

// TestLargestSummary checks that the bounds admit only summaries under
// MaxSummarySize, so that a summary within them is never refused for its
// size.
func TestLargestSummary(t *testing.T) {
	s := largest()
	body := marshal(t, s)
	// docs/protocol.md 7.4 promises under 25 KiB.
	if len(body) >= 25<<10 {
		t.Errorf("the largest summary has %d bytes, 25 KiB or more", len(body))
	}
	got, err := ParseSummary(body, s.Gateway, s.Peer)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, s) {
		t.Errorf("the largest summary does not round-trip")
	}
}

func TestMarshalRefuses(t *testing.T) {
	long := strings.Repeat("x", MaxSummaryWord+1)
	tests := []struct {
		name string
		edit func(s *Summary)
		want string
	}{
		{"another peer's agreement", func(s *Summary) { s.Agreement.Peer = "IT" }, `the agreement is with "IT", the summary for "FR"`},
		{"retention of a fraction of a second", func(s *Summary) { s.Agreement.MaxRetention["prosecution"] = 2*day + time.Millisecond }, "not whole seconds"},
		{"retention of 0", func(s *Summary) { s.Agreement.MaxRetention["prosecution"] = 0 }, `max_retention of "prosecution" is 0 seconds`},
		{"negative retention", func(s *Summary) { s.Agreement.MaxRetention["prosecution"] = -day }, "is -86400 seconds"},
		{"retention over its bound", func(s *Summary) { s.Agreement.MaxRetention["prosecution"] = MaxSummaryRetention + time.Second }, "want 1 to 3153600000"},
		{"too many purposes", func(s *Summary) {
			for i := range MaxSummaryItems {
				s.Agreement.Outbound = append(s.Agreement.Outbound, fmt.Sprint("p", i))
			}
		}, "outbound of 66 items, at most 64"},
		{"too many caps", func(s *Summary) {
			for i := range MaxSummaryItems {
				s.Agreement.MaxRetention[fmt.Sprint("p", i)] = day
			}
		}, "max_retention of 67 purposes"},
		{"a purpose twice", func(s *Summary) { s.Agreement.Inbound = append(s.Agreement.Inbound, "criminal-investigation") }, `inbound lists "criminal-investigation" twice`},
		{"a long handling code", func(s *Summary) { s.Agreement.Handling = []string{long} }, "handling \"xxx"},
		{"an empty TLP label", func(s *Summary) { s.Agreement.TLP = []string{""} }, "tlp \"\" of 0 bytes"},
		{"a TLP label with a space", func(s *Summary) { s.Agreement.TLP = []string{"TLP: RED"} }, `has the character ' '`},
		{"a purpose with a quote", func(s *Summary) { s.Agreement.Outbound = []string{`a"b`} }, `has the character '"'`},
		{"no ref", func(s *Summary) { s.Agreement.Ref = "" }, "ref is empty"},
		{"a long ref", func(s *Summary) { s.Agreement.Ref = strings.Repeat("r", MaxSummaryRef+1) }, "ref of 257 bytes"},
		{"a ref on two lines", func(s *Summary) { s.Agreement.Ref = "2026\n114" }, "printable"},
		{"a ref not in UTF-8", func(s *Summary) { s.Agreement.Ref = "2026\xff" }, "not UTF-8"},
		{"version 0", func(s *Summary) { s.Agreement.Version = 0 }, "version 0 out of range"},
		{"a version over 2^53", func(s *Summary) { s.Agreement.Version = MaxSummaryNumber + 1 }, "version 9007199254740992 out of range"},
		{"an unknown status", func(s *Summary) { s.Agreement.Status = "paused" }, `unknown status "paused"`},
		{"no status", func(s *Summary) { s.Agreement.Status = "" }, `unknown status ""`},
		{"a reason while active", func(s *Summary) { s.Agreement.StatusReason = "x" }, "for an active agreement"},
		{"suspended without reason", func(s *Summary) { s.Agreement.Status = Suspended }, "a suspended agreement without a reason"},
		{"a long reason", func(s *Summary) {
			s.Agreement.Status, s.Agreement.StatusReason = Suspended, strings.Repeat("é", MaxSummaryReason/2)+"x"
		}, "reason of 513 bytes"},
		{"a negative size", func(s *Summary) { s.Agreement.MaxBundleSize = -1 }, "max_bundle_size -1"},
		{"a negative rate", func(s *Summary) { s.Agreement.RateBundles = -1 }, "rate_bundles_per_hour -1"},
		{"a rate over 2^53", func(s *Summary) { s.Agreement.RateBytes = MaxSummaryNumber + 1 }, "rate_bytes_per_hour 9007199254740992"},
		{"valid until before valid from", func(s *Summary) { s.Agreement.ValidUntil = from }, "is not after valid_from"},
		{"sequence 0", func(s *Summary) { s.Sequence = 0 }, "sequence 0 out of range"},
		{"a sequence over 2^53", func(s *Summary) { s.Sequence = MaxSummaryNumber + 1 }, "sequence 9007199254740992"},
		{"no issuer", func(s *Summary) { s.Gateway = "" }, "gateway \"\" of 0 bytes"},
		{"no peer", func(s *Summary) { s.Peer, s.Agreement = "", nil }, "peer \"\" of 0 bytes"},
		{"no issuing time", func(s *Summary) { s.Issued = time.Time{} }, "issued is the zero time"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := summaryOf(deFRCapped())
			tt.edit(s)
			body, err := s.Marshal()
			if err == nil || !strings.HasPrefix(err.Error(), "agreement summary: ") || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("body %s, err = %v, want an error with %q", body, err, tt.want)
			}
		})
	}
}

func TestParseSummaryRefuses(t *testing.T) {
	good := string(marshal(t, summaryOf(deFRCapped())))
	none := string(marshal(t, summaryOf(nil)))
	edit := func(body, old, new string) string {
		if !strings.Contains(body, old) {
			t.Fatalf("%q is not in %s", old, body)
		}
		return strings.Replace(body, old, new, 1)
	}
	tests := []struct {
		name     string
		body     string
		from, to string
		want     string
	}{
		{"issued by another gateway", good, "IT", "FR", `agreement summary of IT: issued by "DE"`},
		{"meant for another peer", good, "DE", "IT", `agreement summary of DE: meant for "FR", not IT`},
		{"over the size limit", good + strings.Repeat(" ", MaxSummarySize-len(good)+1), "DE", "FR", "32769 bytes, over the limit of 32768"},
		{"an unknown member", edit(good, `"format"`, `"extra":1,"format"`), "DE", "FR", "unknown field"},
		{"an unknown member in the agreement", edit(good, `"handling"`, `"purposes":[],"handling"`), "DE", "FR", "unknown field"},
		{"a member missing", edit(good, `"reason":"",`, ``), "DE", "FR", "not in canonical form"},
		{"a list missing", edit(good, `"handling":["H1","H2"],`, ``), "DE", "FR", "handling missing"},
		{"a null list", edit(good, `"tlp":["TLP:RED","TLP:AMBER"]`, `"tlp":null`), "DE", "FR", "tlp missing"},
		{"a null map", edit(good, `"max_retention":{`, `"max_retention":null,"x":{`), "DE", "FR", "unknown field"},
		{"caps missing", edit(none, `"agreement":null`, `"agreement":{"handling":[],"inbound":[],"max_bundle_size":0,"outbound":[],"rate_bundles_per_hour":0,"rate_bytes_per_hour":0,"reason":"","ref":"r","status":"active","tlp":[],"valid_from":"","valid_until":"","version":1}`), "DE", "FR", "max_retention missing"},
		{"a member twice", edit(good, `"format"`, `"gateway":"IT","format"`), "DE", "FR", "not in canonical form"},
		{"a member twice in another case", edit(good, `"peer":"FR"`, `"peer":"FR","Peer":"FR"`), "DE", "FR", "not in canonical form"},
		{"a member in another case", edit(none, `"peer"`, `"PEER"`), "DE", "FR", "not in canonical form"},
		{"members out of order", edit(good, `"format":"evx-agreement-summary/1","gateway":"DE"`, `"gateway":"DE","format":"evx-agreement-summary/1"`), "DE", "FR", "not in canonical form"},
		{"white space", edit(good, `"peer":"FR"`, `"peer": "FR"`), "DE", "FR", "not in canonical form"},
		{"an escaped character", edit(good, `"ref":"2026/114"`, `"ref":"2026\/114"`), "DE", "FR", "not in canonical form"},
		{"a number with a fraction", edit(good, `"version":3`, `"version":3.0`), "DE", "FR", "malformed body"},
		{"a number with an exponent", edit(good, `"rate_bundles_per_hour":10`, `"rate_bundles_per_hour":1e1`), "DE", "FR", "malformed body"},
		{"a negative sequence", edit(none, `"sequence":1796316770123456`, `"sequence":-1`), "DE", "FR", "malformed body"},
		{"a sequence over 2^53", edit(none, `"sequence":1796316770123456`, `"sequence":9007199254740992`), "DE", "FR", "sequence 9007199254740992 out of range"},
		{"a retention in days", edit(good, `"prosecution":63072000`, `"prosecution":"730d"`), "DE", "FR", "malformed body"},
		{"another format", edit(good, `evx-agreement-summary/1`, `evx-agreement-summary/2`), "DE", "FR", `unsupported format "evx-agreement-summary/2"`},
		{"a time in another zone", edit(good, `"valid_from":"2026-01-01T00:00:00Z"`, `"valid_from":"2026-01-01T01:00:00+01:00"`), "DE", "FR", "want RFC 3339 in UTC"},
		{"a date", edit(good, `"valid_from":"2026-01-01T00:00:00Z"`, `"valid_from":"2026-01-01"`), "DE", "FR", "valid_from: malformed time"},
		{"a fraction with trailing zeros", edit(good, `16:52:50.123456Z`, `16:52:50.123456000Z`), "DE", "FR", "issued: malformed time"},
		{"an unknown status", edit(good, `"status":"active"`, `"status":"paused"`), "DE", "FR", `unknown status "paused"`},
		{"a purpose twice", edit(good, `"outbound":["criminal-investigation"`, `"outbound":["prosecution","criminal-investigation"`), "DE", "FR", `outbound lists "prosecution" twice`},
		{"a string not in UTF-8", edit(good, `"ref":"2026/114"`, "\"ref\":\"2026/\xff\""), "DE", "FR", "not in canonical form"},
		{"data after the object", good + `{}`, "DE", "FR", "data after the JSON object"},
		{"null", `null`, "DE", "FR", "unsupported format"},
		{"an array", `[]`, "DE", "FR", "malformed body"},
		{"empty", ``, "DE", "FR", "malformed body"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ParseSummary([]byte(tt.body), tt.from, tt.to)
			if err == nil || !strings.HasPrefix(err.Error(), "agreement summary of "+tt.from+": ") || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("summary %+v, err = %v, want an error with %q", s, err, tt.want)
			}
		})
	}
}

func TestNextSequence(t *testing.T) {
	at := time.Unix(1800000000, 123456789)
	for _, tt := range []struct {
		last uint64
		at   time.Time
		want uint64
	}{
		{0, at, 1800000000123456},
		{1800000000123455, at, 1800000000123456},
		// The same microsecond, or a clock set back: one more.
		{1800000000123456, at, 1800000000123457},
		{1900000000000000, at, 1900000000000001},
		{0, time.Unix(-5, 0), 1},
		{0, time.Date(2255, 6, 1, 0, 0, 0, 0, time.UTC), 9006768000000000},
	} {
		if got := NextSequence(tt.last, tt.at); got != tt.want {
			t.Errorf("NextSequence(%d, %v) = %d, want %d", tt.last, tt.at, got, tt.want)
		}
		if got := NextSequence(tt.last, tt.at); got > MaxSummaryNumber {
			t.Errorf("NextSequence(%d, %v) = %d, over MaxSummaryNumber", tt.last, tt.at, got)
		}
	}
}

func TestDiff(t *testing.T) {
	tests := []struct {
		name         string
		ours, theirs func(de, fr *Agreement) *Agreement // nil leaves one as it is
		want         []string
	}{
		{name: "mirrors", want: nil},
		{name: "mirrors with lists in another order", theirs: func(_, fr *Agreement) *Agreement {
			slices.Reverse(fr.Handling)
			slices.Reverse(fr.TLP)
			slices.Reverse(fr.Outbound)
			return fr
		}},
		{name: "neither has one", ours: func(*Agreement, *Agreement) *Agreement { return nil }, theirs: func(*Agreement, *Agreement) *Agreement { return nil }},
		{name: "they have none", theirs: func(*Agreement, *Agreement) *Agreement { return nil },
			want: []string{"FR has no agreement with DE"}},
		{name: "we have none", ours: func(*Agreement, *Agreement) *Agreement { return nil },
			want: []string{"DE has no agreement with FR"}},
		{name: "a purpose we send they do not accept", theirs: func(_, fr *Agreement) *Agreement { fr.Inbound = []string{"criminal-investigation"}; return fr },
			want: []string{`DE allows "prosecution" outbound; FR does not accept it inbound`}},
		{name: "a purpose they send we do not accept", ours: func(de, _ *Agreement) *Agreement { de.Inbound = []string{"criminal-investigation"}; return de },
			want: []string{`FR allows "mutual-legal-assistance" outbound; DE does not accept it inbound`}},
		{name: "nothing accepted either way", ours: func(de, _ *Agreement) *Agreement { de.Inbound = nil; return de },
			theirs: func(_, fr *Agreement) *Agreement { fr.Inbound = nil; return fr },
			want: []string{
				`DE allows "criminal-investigation" outbound; FR does not accept it inbound`,
				`DE allows "prosecution" outbound; FR does not accept it inbound`,
				`FR allows "criminal-investigation" outbound; DE does not accept it inbound`,
				`FR allows "mutual-legal-assistance" outbound; DE does not accept it inbound`,
			}},
		{name: "a purpose accepted but not sent", theirs: func(_, fr *Agreement) *Agreement {
			fr.Inbound = append(fr.Inbound, "incident-response")
			fr.MaxRetention["incident-response"] = day
			return fr
		}},
		{name: "caps", theirs: func(_, fr *Agreement) *Agreement {
			fr.MaxRetention["criminal-investigation"] = 180 * day
			fr.MaxRetention["prosecution"] = 36 * time.Hour
			return fr
		}, want: []string{
			`maximum retention for "criminal-investigation": DE 365d, FR 180d`,
			`maximum retention for "prosecution": DE 730d, FR 1d12h0m0s`,
		}},
		{name: "handling codes", theirs: func(_, fr *Agreement) *Agreement { fr.Handling = []string{"H2", "H3"}; return fr },
			want: []string{"handling codes accepted: DE H1, H2; FR H2, H3"}},
		{name: "handling codes, one side none", ours: func(de, _ *Agreement) *Agreement { de.Handling = nil; return de },
			want: []string{"handling codes accepted: DE none; FR H1, H2"}},
		{name: "TLP labels", theirs: func(_, fr *Agreement) *Agreement { fr.TLP = []string{"TLP:RED"}; return fr },
			want: []string{"TLP labels accepted: DE TLP:RED, TLP:AMBER; FR TLP:RED"}},
		{name: "sizes and rates", theirs: func(_, fr *Agreement) *Agreement {
			fr.MaxBundleSize, fr.RateBundles, fr.RateBytes = 0, 100, 500<<30
			return fr
		}, want: []string{
			"maximum bundle size: DE 1GiB, FR its gateway's limit",
			"bundles per hour: DE 10, FR 100",
			"bytes per hour: DE 1TiB, FR 500GiB",
		}},
		{name: "odd sizes and no limit", ours: func(de, _ *Agreement) *Agreement {
			de.MaxBundleSize, de.RateBundles, de.RateBytes = 1000, 0, 0
			return de
		},
			want: []string{
				"maximum bundle size: DE 1000B, FR 1GiB",
				"bundles per hour: DE no limit, FR 10",
				"bytes per hour: DE no limit, FR 1TiB",
			}},
		{name: "validity", theirs: func(_, fr *Agreement) *Agreement {
			fr.ValidFrom, fr.ValidUntil = from.AddDate(0, 2, 0), time.Time{}
			return fr
		}, want: []string{
			"valid from: DE 2026-01-01T00:00:00Z, FR 2026-03-01T00:00:00Z",
			"valid until: DE 2027-01-01T00:00:00Z, FR without end",
		}},
		{name: "validity without start", ours: func(de, _ *Agreement) *Agreement { de.ValidFrom = time.Time{}; return de },
			want: []string{"valid from: DE without start, FR 2026-01-01T00:00:00Z"}},
		{name: "the same instants in other zones", theirs: func(_, fr *Agreement) *Agreement {
			fr.ValidFrom, fr.ValidUntil = from.In(time.FixedZone("CET", 3600)), until.Local()
			return fr
		}},
		{name: "versions", theirs: func(_, fr *Agreement) *Agreement { fr.Version, fr.Ref = 2, "2026/99"; return fr },
			want: []string{"FR's agreement is version 2 (ref 2026/99); DE's is version 3 (ref 2026/114)"}},
		{name: "refs", theirs: func(_, fr *Agreement) *Agreement { fr.Ref = "2026/115"; return fr },
			want: []string{"FR's agreement is version 3 (ref 2026/115); DE's is version 3 (ref 2026/114)"}},
		{name: "they suspended", theirs: func(_, fr *Agreement) *Agreement {
			fr.Status, fr.StatusReason = Suspended, "audit of DE's storage"
			return fr
		},
			want: []string{"FR has suspended cooperation: audit of DE's storage"}},
		{name: "we terminated", ours: func(de, _ *Agreement) *Agreement {
			de.Status, de.StatusReason = Terminated, "treaty withdrawn"
			return de
		},
			want: []string{"DE has terminated cooperation: treaty withdrawn"}},
		{name: "both suspended, one without reason", ours: func(de, _ *Agreement) *Agreement { de.Status = Suspended; return de },
			theirs: func(_, fr *Agreement) *Agreement { fr.Status, fr.StatusReason = Suspended, "renegotiation"; return fr },
			want:   []string{"DE has suspended cooperation", "FR has suspended cooperation: renegotiation"}},
		{name: "an unknown status", theirs: func(_, fr *Agreement) *Agreement { fr.Status = "paused"; return fr },
			want: []string{`FR's agreement has the unknown status "paused": nothing flows`}},
		{name: "everything at once, in order", theirs: func(_, fr *Agreement) *Agreement {
			fr.Version = 4
			fr.Status, fr.StatusReason = Suspended, "x"
			fr.Inbound = nil
			fr.MaxRetention["criminal-investigation"] = day
			fr.Handling, fr.TLP = nil, nil
			fr.MaxBundleSize, fr.RateBundles, fr.RateBytes = 1, 1, 1
			fr.ValidFrom, fr.ValidUntil = time.Time{}, time.Time{}
			return fr
		}, want: []string{
			"FR's agreement is version 4 (ref 2026/114); DE's is version 3 (ref 2026/114)",
			"FR has suspended cooperation: x",
			`DE allows "criminal-investigation" outbound; FR does not accept it inbound`,
			`DE allows "prosecution" outbound; FR does not accept it inbound`,
			`maximum retention for "criminal-investigation": DE 365d, FR 1d`,
			"handling codes accepted: DE H1, H2; FR none",
			"TLP labels accepted: DE TLP:RED, TLP:AMBER; FR none",
			"maximum bundle size: DE 1GiB, FR 1B",
			"bundles per hour: DE 10, FR 1",
			"bytes per hour: DE 1TiB, FR 1B",
			"valid from: DE 2026-01-01T00:00:00Z, FR without start",
			"valid until: DE 2027-01-01T00:00:00Z, FR without end",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			de, fr := deFRCapped(), frDE()
			ours, theirs := de, fr
			if tt.ours != nil {
				ours = tt.ours(de, fr)
			}
			if tt.theirs != nil {
				theirs = tt.theirs(de, fr)
			}
			got := Diff("DE", ours, "FR", theirs)
			if !slices.Equal(got, tt.want) {
				t.Errorf("Diff =\n\t%s\nwant\n\t%s", strings.Join(got, "\n\t"), strings.Join(tt.want, "\n\t"))
			}
			// Seen from the other side, the same mismatches.
			back := Diff("FR", theirs, "DE", ours)
			if len(back) != len(got) {
				t.Errorf("from FR's side, %d mismatches:\n\t%s", len(back), strings.Join(back, "\n\t"))
			}
		})
	}
}

// TestDiffOfParsedSummary compares DE's agreement with the one FR's
// summary states, as a gateway does.
func TestDiffOfParsedSummary(t *testing.T) {
	fr := frDE()
	fr.Inbound = []string{"criminal-investigation"}
	body := marshal(t, &Summary{Gateway: "FR", Peer: "DE", Issued: issued, Sequence: 7, Agreement: fr})
	s, err := ParseSummary(body, "FR", "DE")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{`DE allows "prosecution" outbound; FR does not accept it inbound`}
	if got := Diff("DE", deFRCapped(), "FR", s.Agreement); !slices.Equal(got, want) {
		t.Errorf("Diff = %q, want %q", got, want)
	}
	// And DE decides an upload under FR's summary as FR will decide the
	// offer.
	r := ok()
	r.Purpose, r.Direction = "prosecution", Inbound
	if d := Decide("FR", s.Agreement, now, r); d.Code != CodePurposeNotAccepted {
		t.Errorf("decision under FR's summary %+v, want %s", d, CodePurposeNotAccepted)
	}
}

// FuzzParseSummary checks that whatever a peer sends, ParseSummary neither
// panics nor accepts a body in any form but the one Marshal writes, within
// the bounds.
func FuzzParseSummary(f *testing.F) {
	for _, a := range []*Agreement{deFRCapped(), nil, largest().Agreement} {
		s := summaryOf(a)
		if a != nil && a.Peer != "FR" {
			s = largest()
		}
		body, err := s.Marshal()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(body, s.Gateway, s.Peer)
	}
	f.Add([]byte(`{"agreement":null}`), "DE", "FR")
	f.Add([]byte(`null`), "DE", "FR")
	f.Fuzz(func(t *testing.T, body []byte, from, to string) {
		s, err := ParseSummary(body, from, to)
		if err != nil {
			if s != nil {
				t.Fatal("a summary with an error")
			}
			return
		}
		if s.Gateway != from || s.Peer != to || len(body) > MaxSummarySize {
			t.Fatalf("accepted %q from %q to %q", body, from, to)
		}
		again, err := s.Marshal()
		if err != nil {
			t.Fatalf("accepted %q, which does not marshal: %v", body, err)
		}
		if !bytes.Equal(again, body) {
			t.Fatalf("accepted %q, which marshals as %q", body, again)
		}
		if a := s.Agreement; a != nil {
			if a.Peer != to || len(a.Outbound) > MaxSummaryItems || len(a.MaxRetention) > MaxSummaryItems || len(a.StatusReason) > MaxSummaryReason {
				t.Fatalf("accepted %+v", a)
			}
			Diff(to, a, from, a)
			Decide(from, a, now, ok())
		}
	})
}
