package agreement

import (
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

const day = 24 * time.Hour

var (
	from  = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	until = time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	now   = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
)

// deFR is DE's agreement with FR, version 3, as the example has it.
func deFR() *Agreement {
	return &Agreement{Peer: "FR", Version: 3, Ref: "2026/114",
		Outbound:     []string{"criminal-investigation", "prosecution"},
		Inbound:      []string{"criminal-investigation", "mutual-legal-assistance"},
		Handling:     []string{"H1", "H2"},
		TLP:          []string{"TLP:RED", "TLP:AMBER"},
		MaxRetention: map[string]time.Duration{"criminal-investigation": 365 * day, "prosecution": 730 * day},
		// mutual-legal-assistance is accepted inbound but has no cap.
		MaxBundleSize: 1 << 30,
		RateBundles:   10, RateBytes: 1 << 40,
		ValidFrom: from, ValidUntil: until, Status: Active}
}

// ok is a request deFR allows outbound.
func ok() Request {
	return Request{Peer: "FR", Direction: Outbound, Purpose: "criminal-investigation", Handling: "H2", TLP: "TLP:RED",
		Retention: 200 * day, Size: 40 << 20,
		Recipients: []Recipient{{Unit: "FR/prosecutor", Purposes: []string{"criminal-investigation", "prosecution"}}}}
}

func TestDecide(t *testing.T) {
	tests := []struct {
		name   string
		edit   func(a *Agreement)
		at     time.Time // now when zero
		req    func(r *Request)
		code   Code
		reason string // the exact reason, when not empty
	}{
		{name: "allowed", code: CodeAllowed, reason: "agreement DE→FR v3 (ref 2026/114) allows it"},
		{name: "allowed inbound", req: func(r *Request) { r.Direction = Inbound }, code: CodeAllowed},
		{name: "allowed without recipients", req: func(r *Request) { r.Recipients = nil }, code: CodeAllowed},

		// Status.
		{name: "suspended with reason", edit: func(a *Agreement) { a.Status, a.StatusReason = Suspended, "audit of FR's storage" },
			code: CodeSuspended, reason: "agreement DE→FR v3 (ref 2026/114) is suspended: audit of FR's storage; nothing flows"},
		{name: "suspended without reason", edit: func(a *Agreement) { a.Status = Suspended },
			code: CodeSuspended, reason: "agreement DE→FR v3 (ref 2026/114) is suspended: nothing flows"},
		{name: "suspended inbound", edit: func(a *Agreement) { a.Status = Suspended }, req: func(r *Request) { r.Direction = Inbound }, code: CodeSuspended},
		{name: "terminated with reason", edit: func(a *Agreement) { a.Status, a.StatusReason = Terminated, "treaty withdrawn" },
			code: CodeTerminated, reason: "agreement DE→FR v3 (ref 2026/114) is terminated: treaty withdrawn; nothing flows"},
		{name: "terminated without reason", edit: func(a *Agreement) { a.Status = Terminated },
			code: CodeTerminated, reason: "agreement DE→FR v3 (ref 2026/114) is terminated: nothing flows"},
		{name: "unknown status", edit: func(a *Agreement) { a.Status = "paused" },
			code: CodeSuspended, reason: `agreement DE→FR v3 (ref 2026/114) has the unknown status "paused": nothing flows`},
		{name: "no status", edit: func(a *Agreement) { a.Status = "" }, code: CodeSuspended},
		// A terminated agreement is terminated whatever its dates.
		{name: "terminated and lapsed", edit: func(a *Agreement) { a.Status = Terminated }, at: until.Add(day), code: CodeTerminated},

		// Validity: ValidFrom inclusive, ValidUntil exclusive.
		{name: "valid_from - 1ns", at: from.Add(-1), code: CodeNotYetValid,
			reason: "agreement DE→FR v3 (ref 2026/114) is valid from 2026-01-01T00:00:00Z"},
		{name: "valid_from", at: from, code: CodeAllowed},
		{name: "valid_from + 1ns", at: from.Add(1), code: CodeAllowed},
		{name: "valid_until - 1ns", at: until.Add(-1), code: CodeAllowed},
		{name: "valid_until", at: until, code: CodeLapsed,
			reason: "agreement DE→FR v3 (ref 2026/114) lapsed at 2027-01-01T00:00:00Z: nothing flows until a new version is in force"},
		{name: "valid_until + 1ns", at: until.Add(1), code: CodeLapsed},
		{name: "no dates", edit: func(a *Agreement) { a.ValidFrom, a.ValidUntil = time.Time{}, time.Time{} }, at: until.Add(100 * 365 * day), code: CodeAllowed},
		{name: "dates in another zone", edit: func(a *Agreement) { a.ValidUntil = until.In(time.FixedZone("CET", 3600)) }, at: until, code: CodeLapsed,
			reason: "agreement DE→FR v3 (ref 2026/114) lapsed at 2027-01-01T00:00:00Z: nothing flows until a new version is in force"},

		// Purpose, each direction against its own list.
		{name: "purpose not allowed outbound", req: func(r *Request) { r.Purpose = "incident-response" }, code: CodePurposeNotAllowed,
			reason: `agreement DE→FR v3 (ref 2026/114) does not allow purpose "incident-response" outbound; allowed: criminal-investigation, prosecution`},
		{name: "inbound purpose not allowed outbound", req: func(r *Request) { r.Purpose = "mutual-legal-assistance" }, code: CodePurposeNotAllowed},
		{name: "purpose not accepted inbound", req: func(r *Request) { r.Direction, r.Purpose = Inbound, "prosecution" }, code: CodePurposeNotAccepted,
			reason: `agreement DE→FR v3 (ref 2026/114) does not allow purpose "prosecution" inbound; allowed: criminal-investigation, mutual-legal-assistance`},
		{name: "no purposes outbound", edit: func(a *Agreement) { a.Outbound = nil }, code: CodePurposeNotAllowed,
			reason: `agreement DE→FR v3 (ref 2026/114) does not allow purpose "criminal-investigation" outbound; allowed: none`},
		{name: "empty purpose", req: func(r *Request) { r.Purpose = "" }, code: CodePurposeNotAllowed},
		{name: "purpose case matters", req: func(r *Request) { r.Purpose = "Criminal-Investigation" }, code: CodePurposeNotAllowed},

		// Handling and TLP.
		{name: "handling not accepted", req: func(r *Request) { r.Handling = "H3" }, code: CodeHandling,
			reason: `agreement DE→FR v3 (ref 2026/114) does not accept handling code "H3"; accepted: H1, H2`},
		{name: "handling accepted", req: func(r *Request) { r.Handling = "H1" }, code: CodeAllowed},
		{name: "no handling codes", edit: func(a *Agreement) { a.Handling = nil }, code: CodeHandling},
		{name: "TLP not accepted", req: func(r *Request) { r.TLP = "TLP:CLEAR" }, code: CodeTLP,
			reason: `agreement DE→FR v3 (ref 2026/114) does not accept TLP label "TLP:CLEAR"; accepted: TLP:RED, TLP:AMBER`},
		{name: "TLP accepted", req: func(r *Request) { r.TLP = "TLP:AMBER" }, code: CodeAllowed},
		{name: "TLP not normalised", req: func(r *Request) { r.TLP = "red" }, code: CodeTLP},

		// Retention: the cap is inclusive, and refused above, not shortened.
		{name: "retention at cap", req: func(r *Request) { r.Retention = 365 * day }, code: CodeAllowed},
		{name: "retention cap + 1ns", req: func(r *Request) { r.Retention = 365*day + 1 }, code: CodeRetention,
			reason: `agreement DE→FR v3 (ref 2026/114) allows a retention of at most 365d for purpose "criminal-investigation"; the bundle asks for 365d1ns (it is refused, not shortened)`},
		{name: "retention over cap", req: func(r *Request) { r.Retention = 400 * day }, code: CodeRetention,
			reason: `agreement DE→FR v3 (ref 2026/114) allows a retention of at most 365d for purpose "criminal-investigation"; the bundle asks for 400d (it is refused, not shortened)`},
		{name: "retention of another purpose's cap", req: func(r *Request) { r.Purpose, r.Retention = "prosecution", 730*day }, code: CodeAllowed},
		{name: "purpose allowed without cap", req: func(r *Request) { r.Direction, r.Purpose = Inbound, "mutual-legal-assistance" }, code: CodeRetention,
			reason: `agreement DE→FR v3 (ref 2026/114) sets no maximum retention for purpose "mutual-legal-assistance", so it allows no bundle for it`},
		{name: "no caps at all", edit: func(a *Agreement) { a.MaxRetention = nil }, code: CodeRetention},

		// Size: at the limit is allowed; 0 leaves it to the gateway.
		{name: "size at limit", req: func(r *Request) { r.Size = 1 << 30 }, code: CodeAllowed},
		{name: "size over limit", req: func(r *Request) { r.Size = 1<<30 + 1 }, code: CodeTooLarge,
			reason: "agreement DE→FR v3 (ref 2026/114) allows bundles of at most 1073741824 bytes; this one has 1073741825"},
		{name: "no size limit", edit: func(a *Agreement) { a.MaxBundleSize = 0 }, req: func(r *Request) { r.Size = 1 << 50 }, code: CodeAllowed},

		// Recipients.
		{name: "recipient authorised for another purpose too", req: func(r *Request) { r.Purpose = "prosecution" }, code: CodeAllowed},
		{name: "recipient not authorised for purpose", req: func(r *Request) {
			r.Recipients = append(r.Recipients, Recipient{Unit: "FR/judge", Purposes: []string{"prosecution"}})
		}, code: CodeRecipient, reason: `recipient FR/judge is not authorised for purpose "criminal-investigation"; it is for: prosecution`},
		{name: "recipient with no purposes", req: func(r *Request) { r.Recipients = []Recipient{{Unit: "FR/clerk"}} }, code: CodeRecipient,
			reason: `recipient FR/clerk is not authorised for purpose "criminal-investigation"; it is for: none`},
		{name: "every recipient authorised", req: func(r *Request) {
			r.Recipients = append(r.Recipients, Recipient{Unit: "FR/judge", Purposes: []string{"criminal-investigation"}})
		}, code: CodeAllowed},

		// Order: the first failing clause decides, in the order of Codes.
		{name: "suspended before lapsed", edit: func(a *Agreement) { a.Status = Suspended }, at: until, code: CodeSuspended},
		{name: "lapsed before purpose", at: until, req: func(r *Request) { r.Purpose = "incident-response" }, code: CodeLapsed},
		{name: "purpose before handling", req: func(r *Request) { r.Purpose, r.Handling = "incident-response", "H3" }, code: CodePurposeNotAllowed},
		{name: "handling before TLP", req: func(r *Request) { r.Handling, r.TLP = "H3", "TLP:CLEAR" }, code: CodeHandling},
		{name: "TLP before retention", req: func(r *Request) { r.TLP, r.Retention = "TLP:CLEAR", 1000*day }, code: CodeTLP},
		{name: "retention before size", req: func(r *Request) { r.Retention, r.Size = 1000*day, 1<<40 }, code: CodeRetention},
		{name: "size before recipient", req: func(r *Request) { r.Size, r.Recipients = 1<<40, []Recipient{{Unit: "FR/clerk"}} }, code: CodeTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := deFR()
			if tc.edit != nil {
				tc.edit(a)
			}
			r := ok()
			if tc.req != nil {
				tc.req(&r)
			}
			at := tc.at
			if at.IsZero() {
				at = now
			}
			d := Decide("DE", a, at, r)
			if d.Code != tc.code {
				t.Fatalf("code %q, want %q (%s)", d.Code, tc.code, d.Reason)
			}
			if tc.reason != "" && d.Reason != tc.reason {
				t.Errorf("reason:\n%s\nwant:\n%s", d.Reason, tc.reason)
			}
			if d.Version != 3 || d.Ref != "2026/114" {
				t.Errorf("decided by v%d ref %q, want v3 ref 2026/114", d.Version, d.Ref)
			}
			if d.Allowed() != (tc.code == CodeAllowed) {
				t.Errorf("Allowed() = %v for %q", d.Allowed(), d.Code)
			}
			if d.Code == CodeRateLimited {
				t.Error("Decide answered rate-limited; rate limits are the gateway's")
			}
		})
	}
}

// TestDecisionError checks the form of a refusal as an error, which is
// the form the issue gives.
func TestDecisionError(t *testing.T) {
	r := ok()
	r.Purpose = "incident-response"
	d := Decide("DE", deFR(), now, r)
	want := `purpose-not-allowed: agreement DE→FR v3 (ref 2026/114) does not allow purpose "incident-response" outbound; allowed: criminal-investigation, prosecution`
	if d.Error() != want {
		t.Errorf("Error():\n%s\nwant:\n%s", d.Error(), want)
	}
}

func TestDecideNoAgreement(t *testing.T) {
	for _, dir := range []Direction{Outbound, Inbound} {
		r := ok()
		r.Direction = dir
		d := Decide("DE", nil, now, r)
		if d.Code != CodeNoAgreement || d.Allowed() || d.Version != 0 || d.Ref != "" {
			t.Errorf("%s: %+v, want no-agreement without version", dir, d)
		}
		if want := "gateway DE has no agreement with FR: nothing flows with it"; d.Reason != want {
			t.Errorf("reason %q, want %q", d.Reason, want)
		}
	}
}

func TestDays(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0:                  "0d",
		day:                "1d",
		365 * day:          "365d",
		36 * time.Hour:     "1d12h0m0s",
		12 * time.Hour:     "12h0m0s",
		3650*day + 1:       "3650d1ns",
		90*day + time.Hour: "90d1h0m0s",
	} {
		if got := Days(d); got != want {
			t.Errorf("Days(%v) = %q, want %q", d, got, want)
		}
	}
}

// TestCodes checks that Codes lists every code once, allowed first and
// rate-limited last, and that every code is in the documented form.
func TestCodes(t *testing.T) {
	if Codes[0] != CodeAllowed || Codes[len(Codes)-1] != CodeRateLimited {
		t.Errorf("Codes = %v", Codes)
	}
	seen := map[Code]bool{}
	for _, c := range Codes {
		if seen[c] {
			t.Errorf("%q listed twice", c)
		}
		seen[c] = true
		if strings.Trim(string(c), "abcdefghijklmnopqrstuvwxyz-") != "" {
			t.Errorf("code %q is not lower-case words joined by '-'", c)
		}
	}
	if len(seen) != 14 {
		t.Errorf("%d codes; a new code needs a test and a row in docs/agreements.md", len(seen))
	}
}

// violates reports whether r breaks a clause of a at time at, judged
// independently of Decide: the oracle of the property test.
func violates(a *Agreement, at time.Time, r Request) bool {
	if a == nil || a.Status != Active {
		return true
	}
	if !a.ValidFrom.IsZero() && at.Before(a.ValidFrom) || !a.ValidUntil.IsZero() && !at.Before(a.ValidUntil) {
		return true
	}
	purposes := a.Inbound
	if r.Direction == Outbound {
		purposes = a.Outbound
	}
	if !slices.Contains(purposes, r.Purpose) || !slices.Contains(a.Handling, r.Handling) || !slices.Contains(a.TLP, r.TLP) {
		return true
	}
	if max, ok := a.MaxRetention[r.Purpose]; !ok || r.Retention > max {
		return true
	}
	if a.MaxBundleSize > 0 && r.Size > a.MaxBundleSize {
		return true
	}
	for _, rc := range r.Recipients {
		if !slices.Contains(rc.Purposes, r.Purpose) {
			return true
		}
	}
	return false
}

// FuzzDecide checks the property that matters: Decide allows a request
// exactly when it breaks no clause, so that no combination of inputs lets
// a refused bundle through; and a refusal always names a code and a reason
// and the agreement that decided.
func FuzzDecide(f *testing.F) {
	f.Add(uint8(0), uint8(0), uint8(0), uint8(0), uint8(0), int64(200), int64(40<<20), int64(0), uint16(0xffff), uint8(0b111), false)
	f.Add(uint8(1), uint8(4), uint8(3), uint8(4), uint8(1), int64(365), int64(1<<30), int64(-1), uint16(0), uint8(0), true)
	f.Add(uint8(2), uint8(2), uint8(1), uint8(2), uint8(3), int64(366), int64(1<<30+1), int64(1<<40), uint16(0x5555), uint8(0b101), false)
	vocab := []string{"criminal-investigation", "prosecution", "mutual-legal-assistance", "incident-response", ""}
	handling := []string{"H0", "H1", "H2", "H3", ""}
	tlp := []string{"TLP:RED", "TLP:AMBER", "TLP:CLEAR", "red", ""}
	statuses := []Status{Active, Suspended, Terminated, "", "paused"}
	f.Fuzz(func(t *testing.T, status, purpose, hc, label, nRecipients uint8, retentionDays, size, offset int64, lists uint16, recipientBits uint8, inbound bool) {
		a := deFR()
		a.Status = statuses[int(status)%len(statuses)]
		// Each bit of lists drops one entry of the agreement's lists, so
		// that every subset is tried.
		drop := func(vs []string, bit int) []string {
			var out []string
			for i, v := range vs {
				if lists&(1<<(bit+i)) != 0 {
					out = append(out, v)
				}
			}
			return out
		}
		a.Outbound = drop(a.Outbound, 0)
		a.Inbound = drop(a.Inbound, 2)
		a.Handling = drop(a.Handling, 4)
		a.TLP = drop(a.TLP, 6)
		if lists&(1<<8) == 0 {
			delete(a.MaxRetention, "criminal-investigation")
		}
		if lists&(1<<9) == 0 {
			a.MaxBundleSize = 0
		}
		r := Request{Peer: "FR", Direction: Outbound, Purpose: vocab[int(purpose)%len(vocab)],
			Handling: handling[int(hc)%len(handling)], TLP: tlp[int(label)%len(tlp)],
			Retention: time.Duration(retentionDays%5000) * day, Size: size}
		if inbound {
			r.Direction = Inbound
		}
		for i := range int(nRecipients % 4) {
			rc := Recipient{Unit: "FR/r"}
			if recipientBits&(1<<i) != 0 {
				rc.Purposes = []string{r.Purpose}
			}
			r.Recipients = append(r.Recipients, rc)
		}
		at := now.Add(time.Duration(offset%(2*365)) * day)
		d := Decide("DE", a, at, r)
		if d.Allowed() == violates(a, at, r) {
			t.Fatalf("Decide says %s (%s); the oracle says it violates: %v\nagreement %+v\nrequest %+v at %v",
				d.Code, d.Reason, violates(a, at, r), a, r, at)
		}
		if !slices.Contains(Codes, d.Code) || d.Code == CodeRateLimited || d.Reason == "" {
			t.Fatalf("decision %+v", d)
		}
		if d.Version != a.Version || d.Ref != a.Ref {
			t.Fatalf("decision %+v does not name v%d ref %s", d, a.Version, a.Ref)
		}
		if d.Allowed() != (d.Code == CodeAllowed) {
			t.Fatalf("Allowed() disagrees with code %s", d.Code)
		}
		if nilD := Decide("DE", nil, at, r); nilD.Allowed() {
			t.Fatal("allowed with no agreement")
		}
	})
}

// TestDocsListEveryCode keeps docs/agreements.md section 3 in step with
// Codes: one row per code, in the order Decide checks them.
func TestDocsListEveryCode(t *testing.T) {
	data, err := os.ReadFile("../docs/agreements.md")
	if err != nil {
		t.Fatal(err)
	}
	var rows []Code
	for _, line := range strings.Split(string(data), "\n") {
		if code, ok := strings.CutPrefix(line, "| `"); ok {
			code, _, _ = strings.Cut(code, "`")
			if slices.Contains(Codes, Code(code)) {
				rows = append(rows, Code(code))
			}
		}
	}
	if !slices.Equal(rows, Codes) {
		t.Errorf("docs/agreements.md lists codes\n%v\nwant\n%v", rows, Codes)
	}
}
