package main

import (
	"crypto/sha256"
	"strings"
	"testing"
	"time"

	"evx/audit"
)

// evx audit log shows what the entries of the agreements' events record
// beyond the table's columns: the configurations' digests, the agreement's
// versions and reference, the reason and the lines of changes.
func TestEntryRowAgreementEvents(t *testing.T) {
	at := time.Date(2026, 12, 3, 12, 25, 20, 454_000_000, time.UTC)
	for _, tt := range []struct {
		entry audit.Entry
		want  string
	}{
		{audit.Entry{Time: at, Gateway: "DE", Actor: audit.UnitActor("DE/operator"), Event: audit.EventConfigReloaded,
			ConfigSHA256: sha256.Sum256([]byte("new")), OldConfigSHA256: sha256.Sum256([]byte("old")),
			Changes: []string{"agreement FR: version 3 → 4 (ref 2026/114 → 2026/120)", "user FR/analyst removed"}},
			`config-reloaded	unit:DE/operator	-	-	-	done	config=11507a0e2f5e… old_config=cba06b5736fa… changes="agreement FR: version 3 → 4 (ref 2026/114 → 2026/120)","user FR/analyst removed"`},
		{audit.Entry{Time: at, Gateway: "DE", Actor: audit.GatewayActor, Event: audit.EventAgreementChanged, Peer: "FR",
			AgreementVersion: 4, AgreementRef: "2026/120", OldAgreementVersion: 3, Changes: []string{"outbound + incident-response"}},
			`agreement-changed	gateway	-	FR	-	done	old_agreement=v3 agreement=v4 ref="2026/120" changes="outbound + incident-response"`},
		{audit.Entry{Time: at, Gateway: "DE", Actor: audit.PeerActor("FR"), Event: audit.EventAgreementSuspended, Peer: "FR",
			Reason: "FR suspended cooperation"},
			`agreement-suspended	peer:FR	-	FR	-	done	reason="FR suspended cooperation"`},
		{audit.Entry{Time: at, Gateway: "DE", Actor: audit.UnitActor("DE/operator"), Event: audit.EventAgreementResumed, Peer: "FR",
			AgreementVersion: 4},
			`agreement-resumed	unit:DE/operator	-	FR	-	done	agreement=v4`},
	} {
		data, err := tt.entry.MarshalCanonical()
		if err != nil {
			t.Fatal(err)
		}
		e, err := audit.ParseEntry(data)
		if err != nil {
			t.Fatal(err)
		}
		row := entryRow(auditEntry{Index: 7, Data: data, Entry: e})
		if want := "7\t2026-12-03T12:25:20.454Z\t" + tt.want; row != want {
			t.Errorf("row\n%s\nwant\n%s", row, want)
		}
		if strings.Contains(row, "\n") {
			t.Errorf("row of several lines: %q", row)
		}
	}
}

// evx audit log shows what the entries of retention's events record
// beyond the table's columns: the end of the retention an expiry or a
// recall is about, and a hold's reference and reason.
func TestEntryRowRetentionEvents(t *testing.T) {
	at := time.Date(2026, 12, 3, 12, 25, 20, 454_000_000, time.UTC)
	until := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	bundle := func(e audit.Entry) audit.Entry {
		e.Time, e.Gateway = at, "DE"
		e.BundleID, e.EnvelopeSHA256 = "09038080fe5f290bffa3b504aaa4c609", sha256.Sum256([]byte("envelope"))
		e.Purpose, e.Handling, e.LegalBasis = "prosecution", "H1", "EIO 1"
		e.PayloadSHA256, e.PayloadSize = sha256.Sum256([]byte("payload")), 2285
		return e
	}
	const b = "09038080fe5f290bffa3b504aaa4c609"
	const env = `purpose=prosecution handling=H1 size=2285 legal_basis="EIO 1"`
	for _, tt := range []struct {
		entry audit.Entry
		want  string
	}{
		{bundle(audit.Entry{Actor: audit.GatewayActor, Event: audit.EventBundleExpired, Peer: "FR", RetainUntil: until}),
			`bundle-expired	gateway	` + b + `	FR	inbound	done	` + env + ` retain_until=2026-12-03T12:00:00.000Z`},
		{bundle(audit.Entry{Actor: audit.GatewayActor, Event: audit.EventKeyShredded, Peer: "FR"}),
			`key-shredded	gateway	` + b + `	FR	inbound	done	` + env},
		{bundle(audit.Entry{Actor: audit.UnitActor("DE/operator"), Event: audit.EventHoldPlaced, Reference: "LG Berlin 2026/0815", Reason: "appeal lodged"}),
			`hold-placed	unit:DE/operator	` + b + `	-	-	done	` + env + ` reference="LG Berlin 2026/0815" reason="appeal lodged"`},
		{bundle(audit.Entry{Actor: audit.UnitActor("DE/forensics"), Event: audit.EventRecallRequested, Peer: "FR", RetainUntil: until}),
			`recall-requested	unit:DE/forensics	` + b + `	FR	outbound	accepted	` + env + ` retain_until=2026-12-03T12:00:00.000Z`},
		{bundle(audit.Entry{Actor: audit.PeerActor("FR"), Event: audit.EventRecallDeclined, Peer: "FR", Code: "held", Reason: "FR declined the recall"}),
			`recall-declined	peer:FR	` + b + `	FR	outbound	refused (held)	` + env + ` reason="FR declined the recall"`},
	} {
		data, err := tt.entry.MarshalCanonical()
		if err != nil {
			t.Fatal(err)
		}
		e, err := audit.ParseEntry(data)
		if err != nil {
			t.Fatal(err)
		}
		row := entryRow(auditEntry{Index: 7, Data: data, Entry: e})
		if want := "7\t2026-12-03T12:25:20.454Z\t" + tt.want; row != want {
			t.Errorf("row\n%s\nwant\n%s", row, want)
		}
	}
}
