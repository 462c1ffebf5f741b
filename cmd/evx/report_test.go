package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"evx/audit"
	"evx/config"
	"evx/crypto"

	"filippo.io/torchwood"
	"github.com/spf13/cobra"
	"golang.org/x/mod/sumdb/tlog"
)

// reportLegalBasis is the legal basis of the bundles of reportEntries,
// which no report may show.
const reportLegalBasis = "EIO FR-2026-0042-CONFIDENTIAL"

// reportEntries returns the entries of DE's log in the first quarter of
// 2026: n bundles delivered to FR for mutual legal assistance, each
// uploaded, offered and delivered a second later, one delivered to FR for
// a prosecution, and the ids of the bundles.
func reportEntries(t testing.TB, n int) ([][]byte, []string) {
	t.Helper()
	var entries [][]byte
	var ids []string
	add := func(e *audit.Entry) {
		e.Gateway = "DE"
		data, err := e.MarshalCanonical()
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, data)
	}
	at := time.Date(2026, 2, 1, 10, 0, 0, 0, time.UTC)
	for i := range n + 1 {
		h := sha256.Sum256(fmt.Appendf(nil, "report bundle %d", i))
		id := hex.EncodeToString(h[:16])
		ids = append(ids, id)
		purpose := "mutual-legal-assistance"
		if i == n {
			purpose = "prosecution"
		}
		bundle := func(e *audit.Entry) *audit.Entry {
			e.BundleID, e.EnvelopeSHA256, e.Purpose, e.Handling = id, sha256.Sum256([]byte("envelope "+id)), purpose, "H2"
			e.LegalBasis, e.PayloadSHA256, e.PayloadSize, e.Peer = reportLegalBasis, sha256.Sum256([]byte("payload "+id)), 1000, "FR"
			return e
		}
		start := at.Add(time.Duration(i) * time.Hour)
		add(bundle(&audit.Entry{Time: start, Actor: audit.UnitActor("DE/forensics"), Event: audit.EventUploadAccepted}))
		add(&audit.Entry{Time: start, Actor: audit.GatewayActor, Event: audit.EventOfferSent, BundleID: id, Peer: "FR"})
		add(bundle(&audit.Entry{Time: start.Add(time.Second), Actor: audit.PeerActor("FR"), Event: audit.EventDelivered, Receipt: reportReceipt(id)}))
	}
	return entries, ids
}

// reportReceipt returns a receipt by FR of bundle id from DE.
func reportReceipt(id string) *crypto.Signed {
	e, p, l := sha256.Sum256([]byte("envelope "+id)), sha256.Sum256([]byte("payload "+id)), sha256.Sum256([]byte("leaf "+id))
	body := `{"bundle_id":"` + id + `","envelope_sha256":"` + hex.EncodeToString(e[:]) +
		`","format":"evx-receipt/2","log":{"leaf_hash":"` + hex.EncodeToString(l[:]) + `","leaf_index":3,"tree_size":3},` +
		`"payload_sha256":"` + hex.EncodeToString(p[:]) + `","received_at":"2026-02-01T10:00:01Z","receiver":"FR","sender":"DE"}`
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, ed25519.SeedSize))
	return &crypto.Signed{Body: []byte(body), Signature: ed25519.Sign(key, []byte(body))}
}

// TestReportExport runs evx report on an export, in every format: the
// counts, with the one below the threshold suppressed, and none of the
// bundles' ids or legal basis.
func TestReportExport(t *testing.T) {
	entries, ids := reportEntries(t, 5)
	ex := writeExport(t, t.TempDir(), entries, 4)
	for format, want := range map[string][]string{
		"md": {"| outbound | FR | mutual-legal-assistance | H2 | delivered | 5 | 4.9 KiB |\n",
			"| outbound | FR | prosecution | H2 | delivered | <5 | — |\n", "| delivery | FR | 1.0 s |\n",
			"Computed from the verified transfer log evx.transfer-log/DE, checkpoint of size 18, root hash "},
		"csv": {"DE,2026-01-01,2026-04-01,transfers,outbound,FR,mutual-legal-assistance,H2,delivered,,,5,5000,\n",
			"DE,2026-01-01,2026-04-01,transfers,outbound,FR,prosecution,H2,delivered,,,<5,,\n",
			"DE,2026-01-01,2026-04-01,delivery-time,,all,,,,,,,,1000\n"},
		"json": {`"bundles": 5,`, `"bundles": "<5",`, `"bytes": 5000`, `"bytes": null`, `"size": 18,`},
	} {
		out, errOut, exit := runEvx("report", "--dir", ex.dir, "--log-key", ex.logKey, "--from", "2026-01-01", "--to", "2026-04-01", "--format", format)
		if exit != 0 {
			t.Fatalf("%s: exit %d\n%s%s", format, exit, out, errOut)
		}
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("the %s report lacks %q:\n%s", format, w, out)
			}
		}
		for _, s := range append(ids, reportLegalBasis, "CONFIDENTIAL", "FR-2026-0042") {
			if strings.Contains(out, s) {
				t.Errorf("the %s report shows %q:\n%s", format, s, out)
			}
		}
		if want := "verified: transfer log of DE, checkpoint of size 18\n"; errOut != want {
			t.Errorf("stderr %q, want %q: the period has ended, no warning", errOut, want)
		}
	}
}

// TestReportRefusesUnverified checks that evx report writes nothing from
// a log that does not verify, or whose entries do not read as entries of
// its gateway.
func TestReportRefusesUnverified(t *testing.T) {
	entries, _ := reportEntries(t, 5)
	other, err := crypto.GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	otherKey := other.CheckpointVerifierKey(crypto.LogOrigin("DE"))
	changed := func(data []byte) [][]byte {
		es := append([][]byte(nil), entries...)
		es[1] = data
		return es
	}
	for _, c := range []struct {
		name    string
		entries [][]byte
		tamper  func(dir string)
		key     string
		want    string
	}{
		{name: "another log key", entries: entries, key: otherKey,
			want: "failed verification: checkpoint not signed by the log key evx.transfer-log/DE+"},
		{name: "changed entry", entries: entries, tamper: func(dir string) {
			f := exportFiles(dir).path("tile/entries/000.p/18")
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(f, bytes.Replace(data, []byte(`"purpose":"prosecution"`), []byte(`"purpose":"Prosecution"`), 1), 0o600); err != nil {
				t.Fatal(err)
			}
		}, want: "failed verification: entry changed: entry 15 does not hash to the tree's leaf 15"},
		{name: "malformed entry", entries: changed(bytes.Replace(entries[1], []byte(`{`), []byte(`{ `), 1)),
			want: "failed verification: entry 1 is in the tree but is not a valid entry: "},
		{name: "entry of another gateway", entries: changed(bytes.Replace(entries[1], []byte(`"gateway":"DE"`), []byte(`"gateway":"IT"`), 1)),
			want: "failed verification: entry 1 is in the tree but says it is of gateway IT"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ex := writeExport(t, t.TempDir(), c.entries, 0)
			if c.tamper != nil {
				c.tamper(ex.dir)
			}
			key := ex.logKey
			if c.key != "" {
				key = c.key
			}
			out, errOut, exit := runEvx("report", "--dir", ex.dir, "--log-key", key, "--from", "2026-01-01", "--to", "2026-04-01")
			if exit == 0 || out != "" || !strings.Contains(errOut, c.want) {
				t.Errorf("exit %d, stdout %q, stderr %q; want a failure naming %q and no report", exit, out, errOut, c.want)
			}
		})
	}

	// An entry of a newer format is verified, reported, not counted.
	ex := writeExport(t, t.TempDir(), changed(bytes.Replace(entries[1], []byte(audit.EntryFormat), []byte("evx-log-entry/9"), 1)), 0)
	out := mustEvx(t, "report", "--dir", ex.dir, "--log-key", ex.logKey, "--from", "2026-01-01", "--to", "2026-04-01")
	if want := "\n1 entries of the log are of a newer format or an unknown event, and were not counted.\n"; !strings.Contains(out, want) {
		t.Errorf("report lacks %q:\n%s", want, out)
	}
}

// TestReportEntriesChanged checks that the report counts the verified
// entries only: a source that answers otherwise when the entries are read
// after verification gives no report.
func TestReportEntriesChanged(t *testing.T) {
	entries, _ := reportEntries(t, 100) // 303 entries: two bundles
	ex := writeExport(t, t.TempDir(), entries, 0)
	keys := auditKeys{Log: ex.logKey, From: "test"}
	opts, err := keys.verifyOptions()
	if err != nil {
		t.Fatal(err)
	}
	second := torchwood.TilePath(tlog.Tile{H: torchwood.TileHeight, L: -1, N: 1, W: len(entries) - torchwood.TileWidth})
	src := &changingSource{Dir: audit.Dir(ex.dir), path: second}
	signed, err := src.ReadFile(t.Context(), "checkpoint")
	if err != nil {
		t.Fatal(err)
	}
	l, err := verifyPinned(t.Context(), pinnedSource{src, signed}, "DE", keys, "test", opts, &auditState{})
	if err != nil {
		t.Fatalf("the log did not verify: %v", err)
	}
	tally, err := audit.NewTally(audit.ReportOptions{From: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), To: time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)})
	if err != nil {
		t.Fatal(err)
	}
	cmd := &cobra.Command{}
	cmd.SetContext(t.Context())
	r, err := report(cmd, l, tally)
	var vf *verifyFailure
	if r != nil || !errors.As(err, &vf) || !errors.Is(err, audit.ErrEntryChanged) {
		t.Errorf("report %v, error %v; want no report and a verification failure naming a changed entry", r, err)
	}
}

func TestReportOptionsFlags(t *testing.T) {
	for _, c := range []struct {
		from, to  string
		threshold int
		want      string // "" for valid options
	}{
		{"2026-01-01", "2026-04-01", 5, ""},
		{"2026-01-01", "2026-01-02", 2, ""},
		{"2026-01-01", "2026-01-02", 1000, ""},
		{"2026-01-01", "2026-01-02", 1, "--threshold 1: want from 2 to 1000; a report with a threshold of 1 would single out cases"},
		{"2026-01-01", "2026-01-02", 0, "--threshold 0: want from 2 to 1000"},
		{"2026-01-01", "2026-01-02", 1001, "--threshold 1001: want from 2 to 1000"},
		{"", "2026-01-02", 5, "give the period with --from DATE and --to DATE"},
		{"2026-01-01", "", 5, "give the period with --from DATE and --to DATE"},
		{"2026-1-1", "2026-01-02", 5, `--from "2026-1-1": want a date such as 2026-01-01 (YYYY-MM-DD, UTC)`},
		{"2026-01-01", "2026-02-30", 5, `--to "2026-02-30": want a date`},
		{"2026-01-01", "tomorrow", 5, `--to "tomorrow": want a date`},
		{"2026-01-01", "2025-12-31", 5, "--from 2026-01-01 is not before --to 2025-12-31: the period is empty"},
	} {
		opts, err := reportOptions(c.from, c.to, c.threshold)
		var ue usageError
		switch {
		case c.want == "" && err != nil:
			t.Errorf("reportOptions(%q, %q, %d): %v", c.from, c.to, c.threshold, err)
		case c.want == "" && (opts.From.Format(time.DateOnly) != c.from || opts.To.Format(time.DateOnly) != c.to || opts.From.Location() != time.UTC || opts.Threshold != c.threshold):
			t.Errorf("reportOptions(%q, %q, %d) = %+v", c.from, c.to, c.threshold, opts)
		case c.want != "" && (err == nil || !errors.As(err, &ue) || !strings.Contains(err.Error(), c.want)):
			t.Errorf("reportOptions(%q, %q, %d): %v, want a usage error %q", c.from, c.to, c.threshold, err, c.want)
		}
	}
}

// The bounds of evx report's --threshold and of a profile's
// report_threshold are the same.
func TestReportThresholdBounds(t *testing.T) {
	if audit.MinThreshold != config.MinReportThreshold || audit.MaxThreshold != config.MaxReportThreshold {
		t.Errorf("--threshold from %d to %d, report_threshold from %d to %d", audit.MinThreshold, audit.MaxThreshold,
			config.MinReportThreshold, config.MaxReportThreshold)
	}
}
