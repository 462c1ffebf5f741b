package config

import (
	"slices"
	"strings"
	"testing"
	"time"

	"evx/agreement"
)

// agreementsDoc is head, the peer FR at line 6, and agreements from line 8.
func agreementsDoc(items ...string) string {
	return peersDoc(peerFR) + "agreements:\n" + strings.Join(items, "")
}

// agFR is a valid agreement with FR on one line, with %s for more keys.
const agFR = "  - {peer: FR, version: 1, ref: x, outbound: [prosecution], handling: [H2], tlp: ['TLP:RED'], max_retention: {prosecution: 365d}%s}\n"

func ag(more string) string { return strings.Replace(agFR, "%s", more, 1) }

// The errors of agreements[] and users[].purposes join errorCases, so
// that TestParseErrors checks them and FuzzLoad starts from them.
func init() {
	errorCases = append(errorCases, []struct {
		name  string
		yaml  string
		line  int
		field string
		msg   string
		never string
	}{
		{name: "agreement with no peer configured", yaml: agreementsDoc("  - {peer: NL, version: 1, ref: x}\n"), line: 8, field: "agreements[0].peer",
			msg: `bad value "NL": no peer has this id; an agreement is with one of peers[].id`},
		{name: "two agreements for one peer", yaml: agreementsDoc(ag(""), ag("")), line: 9, field: "agreements[1].peer",
			msg: `bad value "FR": agreements[0] is already the agreement with FR; a peer has one agreement`},
		{name: "agreement without peer", yaml: agreementsDoc("  - {version: 1, ref: x}\n"), line: 8, field: "agreements[0].peer", msg: "missing required field"},
		{name: "agreement without version", yaml: agreementsDoc("  - peer: FR\n    ref: x\n"), line: 8, field: "agreements[0].version", msg: "missing required field"},
		{name: "agreement version 0", yaml: agreementsDoc("  - peer: FR\n    version: 0\n    ref: x\n"), line: 9, field: "agreements[0].version", msg: `bad value "0": want a whole number from 1`},
		{name: "agreement version not a number", yaml: agreementsDoc("  - peer: FR\n    version: v3\n    ref: x\n"), line: 9, field: "agreements[0].version", msg: `want a whole number, got "v3"`},
		{name: "agreement without ref", yaml: agreementsDoc("  - {peer: FR, version: 2}\n"), line: 8, field: "agreements[0].ref", msg: "missing required field"},
		{name: "agreement ref on two lines", yaml: agreementsDoc("  - {peer: FR, version: 2, ref: \"a\\nb\"}\n"), line: 8, field: "agreements[0].ref", msg: `bad value "a\nb": want one line of printable characters`},
		{name: "unknown agreement key", yaml: agreementsDoc("  - peer: FR\n    version: 1\n    ref: x\n    purposes: [prosecution]\n"), line: 11, field: "agreements[0].purposes",
			msg: "unknown key (expected one of: peer, version, ref, status, reason, outbound, inbound, handling, tlp, max_retention, max_bundle_size, rate, valid_from, valid_until)"},
		{name: "unknown outbound purpose", yaml: agreementsDoc("  - peer: FR\n    version: 1\n    ref: x\n    outbound:\n      - prosecution\n      - sightseeing\n"), line: 13, field: "agreements[0].outbound[1]",
			msg: `unknown purpose "sightseeing" (accepted: criminal-investigation, prosecution, mutual-legal-assistance, expedited-preservation, incident-response, victim-identification)`},
		{name: "unknown inbound purpose", yaml: agreementsDoc(ag(", inbound: [Prosecution]")), line: 8, field: "agreements[0].inbound[0]", msg: `unknown purpose "Prosecution"`},
		{name: "purpose listed twice", yaml: agreementsDoc(ag(", inbound: [prosecution, prosecution]")), line: 8, field: "agreements[0].inbound[1]", msg: `bad value "prosecution": listed twice`},
		{name: "unknown handling code", yaml: agreementsDoc("  - {peer: FR, version: 1, ref: x, handling: [H2, H4]}\n"), line: 8, field: "agreements[0].handling[1]", msg: `unknown handling code "H4" (accepted: H0, H1, H2, H3)`},
		{name: "TLP label not canonical", yaml: agreementsDoc("  - {peer: FR, version: 1, ref: x, tlp: [red]}\n"), line: 8, field: "agreements[0].tlp[0]", msg: `unknown TLP label "red" (accepted: TLP:RED, `},
		{name: "purposes without handling", yaml: agreementsDoc("  - peer: FR\n    version: 1\n    ref: x\n    inbound: [prosecution]\n    tlp: [TLP:RED]\n    max_retention: {prosecution: 30d}\n"), line: 8, field: "agreements[0].handling",
			msg: "missing required field (an agreement that allows a purpose lists the handling codes it accepts: H0, H1, H2, H3)"},
		{name: "purposes without TLP", yaml: agreementsDoc("  - peer: FR\n    version: 1\n    ref: x\n    inbound: [prosecution]\n    handling: [H1]\n    max_retention: {prosecution: 30d}\n"), line: 8, field: "agreements[0].tlp",
			msg: "missing required field (an agreement that allows a purpose lists the TLP labels it accepts"},
		{name: "outbound purpose without cap", yaml: agreementsDoc("  - peer: FR\n    version: 1\n    ref: x\n    outbound: [prosecution, criminal-investigation]\n    handling: [H2]\n    tlp: [TLP:RED]\n    max_retention:\n      prosecution: 365d\n"),
			line: 14, field: "agreements[0].max_retention", msg: `missing the cap of purpose "criminal-investigation", which outbound allows`},
		{name: "inbound purpose without any cap", yaml: agreementsDoc("  - peer: FR\n    version: 1\n    ref: x\n    inbound: [prosecution]\n    handling: [H2]\n    tlp: [TLP:RED]\n"),
			line: 8, field: "agreements[0].max_retention", msg: `missing the cap of purpose "prosecution", which inbound allows`},
		{name: "cap of an unknown purpose", yaml: agreementsDoc("  - peer: FR\n    version: 1\n    ref: x\n    max_retention:\n      sightseeing: 1d\n"), line: 12, field: "agreements[0].max_retention.sightseeing", msg: `unknown purpose "sightseeing" (accepted: `},
		{name: "cap of a purpose not allowed", yaml: agreementsDoc(ag(", inbound: []")+"") + "", line: 0, field: "", msg: ""},
		{name: "cap above the limit", yaml: agreementsDoc("  - peer: FR\n    version: 1\n    ref: x\n    max_retention:\n      prosecution: 3651d\n"), line: 12, field: "agreements[0].max_retention.prosecution", msg: `bad value "3651d": want days, weeks or hours, such as 365d, 52w or 36h, at most 3650d`},
		{name: "cap in years", yaml: agreementsDoc("  - peer: FR\n    version: 1\n    ref: x\n    max_retention: {prosecution: 1y}\n"), line: 11, field: "agreements[0].max_retention.prosecution", msg: `bad value "1y": want days, weeks or hours`},
		{name: "cap without value", yaml: agreementsDoc("  - peer: FR\n    version: 1\n    ref: x\n    outbound: [prosecution]\n    max_retention:\n      prosecution:\n"), line: 13, field: "agreements[0].max_retention.prosecution", msg: "missing value"},
		{name: "cap twice", yaml: agreementsDoc("  - peer: FR\n    version: 1\n    ref: x\n    max_retention:\n      prosecution: 1d\n      prosecution: 2d\n"), line: 13, field: "agreements[0].max_retention.prosecution", msg: "duplicate key (first at line 12)"},
		{name: "caps as a list", yaml: agreementsDoc("  - peer: FR\n    version: 1\n    ref: x\n    max_retention: [365d]\n"), line: 11, field: "agreements[0].max_retention", msg: "want a mapping, got a list"},
		{name: "unknown status", yaml: agreementsDoc(ag(", status: paused")), line: 8, field: "agreements[0].status", msg: `bad value "paused": want one of active, suspended, terminated`},
		{name: "suspended without reason", yaml: agreementsDoc(ag(", status: suspended")), line: 8, field: "agreements[0].reason", msg: "missing required field (a suspended agreement says why)"},
		{name: "terminated without reason", yaml: agreementsDoc(ag(", status: terminated")), line: 8, field: "agreements[0].reason", msg: "missing required field (a terminated agreement says why)"},
		{name: "active with a reason", yaml: agreementsDoc(ag(", reason: renewed")), line: 8, field: "agreements[0].reason", msg: "an active agreement has no reason"},
		{name: "reason with a control character", yaml: agreementsDoc(ag(", status: suspended, reason: \"audit\\x1b[31m\"")), line: 8, field: "agreements[0].reason", msg: `bad value "audit\x1b[31m": want one line of printable characters`},
		{name: "valid_from after valid_until", yaml: agreementsDoc(ag(", valid_from: 2027-01-01, valid_until: 2026-12-31")), line: 8, field: "agreements[0].valid_until",
			msg: `bad value "2026-12-31": want a time after valid_from (2027-01-01)`},
		{name: "valid_from equal to valid_until", yaml: agreementsDoc(ag(", valid_from: 2027-01-01, valid_until: '2027-01-01T01:00:00+01:00'")), line: 8, field: "agreements[0].valid_until", msg: `bad value "2027-01-01T01:00:00+01:00": want a time after valid_from (2027-01-01)`},
		{name: "date in another form", yaml: agreementsDoc(ag(", valid_until: 31.12.2027")), line: 8, field: "agreements[0].valid_until",
			msg: `bad value "31.12.2027": want a date such as 2027-01-01 or an RFC 3339 time such as 2027-01-01T12:00:00+01:00`},
		{name: "agreement size 0", yaml: agreementsDoc(ag(", max_bundle_size: 0")), line: 8, field: "agreements[0].max_bundle_size", msg: `bad value "0B": want from 1B to 64GiB; leave it out for limits.max_bundle_size`},
		{name: "agreement size above the limit", yaml: agreementsDoc(ag(", max_bundle_size: 1TiB")), line: 8, field: "agreements[0].max_bundle_size", msg: `bad value "1TiB": want from 1B to 64GiB`},
		{name: "no bundles per hour", yaml: agreementsDoc(ag(", rate: {bundles_per_hour: 0}")), line: 8, field: "agreements[0].rate.bundles_per_hour", msg: `bad value "0": want a whole number from 1; leave it out for no limit`},
		{name: "negative bundles per hour", yaml: agreementsDoc(ag(", rate: {bundles_per_hour: -5}")), line: 8, field: "agreements[0].rate.bundles_per_hour", msg: `bad value "-5"`},
		{name: "no bytes per hour", yaml: agreementsDoc(ag(", rate: {bytes_per_hour: 0}")), line: 8, field: "agreements[0].rate.bytes_per_hour", msg: `bad value "0B": want from 1B; leave it out for no limit`},
		{name: "unknown rate key", yaml: agreementsDoc(ag(", rate: {per_day: 5}")), line: 8, field: "agreements[0].rate.per_day", msg: "unknown key (expected one of: bundles_per_hour, bytes_per_hour)"},
		{name: "purposes of a submitter", yaml: head + "users:\n  - {identity: DE/f, role: submitter, public_key: f.pub, purposes: [prosecution]}\n", line: 6, field: "users[0].purposes",
			msg: "only a recipient is authorised for purposes, not a submitter"},
		{name: "unknown purpose of a recipient", yaml: head + "users:\n  - identity: DE/p\n    role: recipient\n    public_key: p.pub\n    purposes:\n      - prosecution\n      - curiosity\n", line: 11, field: "users[0].purposes[1]",
			msg: `unknown purpose "curiosity" (accepted: `},
	}...)
	// The case above without a message is filled in here: a cap for a
	// purpose neither way allows would never apply, and is a mistake.
	for i := range errorCases {
		if errorCases[i].name == "cap of a purpose not allowed" {
			errorCases[i].yaml = agreementsDoc("  - peer: FR\n    version: 1\n    ref: x\n    max_retention:\n      incident-response: 30d\n")
			errorCases[i].line, errorCases[i].field = 12, "agreements[0].max_retention.incident-response"
			errorCases[i].msg = `purpose "incident-response" is neither outbound nor inbound: a cap for it would never apply`
		}
	}
}

func TestAgreementDefaultsAndModel(t *testing.T) {
	doc := agreementsDoc(`  - peer: FR
    version: 3
    ref: 2026/114
    outbound: [criminal-investigation, prosecution]
    inbound: [criminal-investigation]
    handling: [H1, H2]
    tlp: [TLP:RED, TLP:AMBER+STRICT]
    max_retention:
      criminal-investigation: 365d
      prosecution: 52w
    max_bundle_size: 40GiB
    rate: {bundles_per_hour: 100, bytes_per_hour: 1TiB}
    valid_from: 2026-01-01
    valid_until: 2027-06-30T12:00:00+02:00
`) + "users:\n  - {identity: DE/p, role: recipient, public_key: p.pub, purposes: [prosecution]}\n  - {identity: DE/q, role: recipient, public_key: q.pub}\n"
	g, err := Parse([]byte(doc), "/etc/evx")
	if err != nil {
		t.Fatal(err)
	}
	if g.Agreements[0].Status != agreement.Active {
		t.Errorf("status %q, want the default active", g.Agreements[0].Status)
	}
	a := g.Agreement("FR")
	want := &agreement.Agreement{Peer: "FR", Version: 3, Ref: "2026/114",
		Outbound: []string{"criminal-investigation", "prosecution"}, Inbound: []string{"criminal-investigation"},
		Handling: []string{"H1", "H2"}, TLP: []string{"TLP:RED", "TLP:AMBER+STRICT"},
		MaxRetention:  map[string]time.Duration{"criminal-investigation": 365 * 24 * time.Hour, "prosecution": 52 * 7 * 24 * time.Hour},
		MaxBundleSize: 40 << 30, RateBundles: 100, RateBytes: 1 << 40,
		ValidFrom:  time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		ValidUntil: time.Date(2027, 6, 30, 10, 0, 0, 0, time.UTC),
		Status:     agreement.Active}
	if a == nil || a.Peer != want.Peer || a.Version != want.Version || a.Ref != want.Ref ||
		!slices.Equal(a.Outbound, want.Outbound) || !slices.Equal(a.Inbound, want.Inbound) ||
		!slices.Equal(a.Handling, want.Handling) || !slices.Equal(a.TLP, want.TLP) ||
		len(a.MaxRetention) != 2 || a.MaxRetention["criminal-investigation"] != want.MaxRetention["criminal-investigation"] ||
		a.MaxRetention["prosecution"] != want.MaxRetention["prosecution"] ||
		a.MaxBundleSize != want.MaxBundleSize || a.RateBundles != want.RateBundles || a.RateBytes != want.RateBytes ||
		!a.ValidFrom.Equal(want.ValidFrom) || !a.ValidUntil.Equal(want.ValidUntil) || a.Status != want.Status || a.StatusReason != "" {
		t.Errorf("Agreement(FR) = %+v\nwant %+v", a, want)
	}
	if g.Agreement("NL") != nil {
		t.Error("an agreement with a peer that has none")
	}
	// The model is a copy: deciding cannot change the configuration.
	a.Outbound[0] = "incident-response"
	a.MaxRetention["incident-response"] = time.Hour
	if g.Agreements[0].Outbound[0] != "criminal-investigation" || len(g.Agreements[0].MaxRetention) != 2 {
		t.Error("the model shares its lists with the configuration")
	}
	if list := g.AgreementList(); len(list) != 1 || list[0].Peer != "FR" {
		t.Errorf("AgreementList = %v", list)
	}
	if u, _ := g.User("DE/p"); !slices.Equal(u.Purposes, []string{"prosecution"}) {
		t.Errorf("DE/p purposes %v", u.Purposes)
	}
	// The configuration decides as the model does.
	d := agreement.Decide(g.ID, g.Agreement("FR"), time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC), agreement.Request{
		Peer: "FR", Direction: agreement.Outbound, Purpose: "prosecution", Handling: "H2", TLP: "TLP:RED", Retention: 365 * 24 * time.Hour})
	if d.Code != agreement.CodeRetention {
		t.Errorf("decision %v, want retention-too-long (52w < 365d)", d)
	}
	// A recipient without purposes is valid, and warned of.
	ws := g.Warnings(time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC))
	if len(ws) != 1 || ws[0] != "recipient DE/q is authorised for no purpose: no bundle may be addressed to it" {
		t.Errorf("warnings %q", ws)
	}
}

func TestAgreementWarnings(t *testing.T) {
	peerNL := "  - {id: NL, address: 'nl.example.org:7443', ca: nl.pem, signing_key: " + key2 + ", " + nlLogKeys + "}\n"
	now := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name, agreements string
		want             []string
	}{
		{"none", "", []string{"no agreement with FR: nothing flows with it", "no agreement with NL: nothing flows with it"}},
		{"one", ag(""), []string{"no agreement with NL: nothing flows with it"}},
		{"both", ag("") + strings.Replace(ag(""), "peer: FR", "peer: NL", 1), nil},
		{"suspended", ag(", status: suspended, reason: audit") + strings.Replace(ag(""), "peer: FR", "peer: NL", 1),
			[]string{"the agreement with FR is suspended (audit): nothing flows with it"}},
		{"lapsed", ag(", valid_until: 2026-06-01") + strings.Replace(ag(", valid_from: 2026-06-02"), "peer: FR", "peer: NL", 1),
			[]string{"the agreement with FR lapsed at 2026-06-01: nothing flows with it until a new version is in force",
				"the agreement with NL is valid from 2026-06-02: nothing flows with it before"}},
		{"no purpose", "  - {peer: FR, version: 1, ref: x}\n" + strings.Replace(ag(""), "peer: FR", "peer: NL", 1),
			[]string{"the agreement with FR allows no purpose either way: nothing flows with it"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			doc := peersDoc(peerFR, peerNL)
			if tc.agreements != "" {
				doc += "agreements:\n" + tc.agreements
			}
			g, err := Parse([]byte(doc), "/etc/evx")
			if err != nil {
				t.Fatal(err)
			}
			if got := g.Warnings(now); !slices.Equal(got, tc.want) {
				t.Errorf("warnings:\n%q\nwant:\n%q", got, tc.want)
			}
		})
	}
}

func TestAgreementTextForms(t *testing.T) {
	for in, want := range map[string]string{"365d": "365d", "52w": "364d", "36h": "36h", "48h": "2d"} {
		var r Retention
		if err := r.UnmarshalText([]byte(in)); err != nil || r.String() != want {
			t.Errorf("Retention %q: %q, %v; want %q", in, r, err, want)
		}
	}
	for in, want := range map[string]string{
		"2027-01-01":                "2027-01-01",
		"2027-01-01T00:00:00Z":      "2027-01-01",
		"2027-01-01T00:00:00+01:00": "2027-01-01T00:00:00+01:00",
		"2027-01-01T12:30:00Z":      "2027-01-01T12:30:00Z",
	} {
		var tm Time
		if err := tm.UnmarshalText([]byte(in)); err != nil || tm.String() != want {
			t.Errorf("Time %q: %q, %v; want %q", in, tm, err, want)
		}
	}
}
