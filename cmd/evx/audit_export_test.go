package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"evx/audit"
	"evx/crypto"

	"filippo.io/torchwood"
	"golang.org/x/mod/sumdb/tlog"
)

// Tests of evx audit on export directories built here, with no gateway:
// logs of any size and content, and sources that misbehave.

// testEntry returns a valid entry of DE's log: an upload of bundle i.
func testEntry(t testing.TB, i int) []byte {
	t.Helper()
	var id [16]byte
	binary.BigEndian.PutUint64(id[8:], uint64(i))
	e := &audit.Entry{
		Time:    time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Millisecond),
		Gateway: "DE", Actor: audit.UnitActor("DE/forensics"), Event: audit.EventUploadAccepted,
		BundleID: fmt.Sprintf("%x", id), EnvelopeSHA256: sha256.Sum256(id[:]), Purpose: "mutual-legal-assistance",
		Handling: "H2", LegalBasis: "EIO FR-2026-0042 (Directive 2014/41/EU)", PayloadSHA256: sha256.Sum256(append(id[:], 1)),
		PayloadSize: 65536 + int64(i), Peer: "FR",
	}
	data, err := e.MarshalCanonical()
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// testExport is an export directory of DE's log built from entries,
// signed with a new key.
type testExport struct {
	dir    string
	logKey string // the verifier key
}

// writeExport writes an export of entries into dir, with an earlier
// checkpoint every historyEvery entries (none if 0).
func writeExport(t testing.TB, dir string, entries [][]byte, historyEvery int) testExport {
	t.Helper()
	k, err := crypto.GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	origin := crypto.LogOrigin("DE")
	signer, err := k.CheckpointSigner(origin)
	if err != nil {
		t.Fatal(err)
	}
	tf, err := buildTree(entries)
	if err != nil {
		t.Fatal(err)
	}
	write := func(p string, data []byte) {
		name := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(name), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(name, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for p, data := range tf.tiles {
		write(p, data)
	}
	n := int64(len(entries))
	if historyEvery > 0 {
		for size := int64(historyEvery); size < n; size += int64(historyEvery) {
			signed, err := tf.signCheckpoint(origin, size, signer)
			if err != nil {
				t.Fatal(err)
			}
			write("checkpoints/"+strconv.FormatInt(size, 10), signed)
		}
	}
	ex := testExport{dir: dir, logKey: k.CheckpointVerifierKey(origin)}
	keys, err := audit.Keys{Log: ex.logKey}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	write("keys", keys)
	signed, err := tf.signCheckpoint(origin, n, signer)
	if err != nil {
		t.Fatal(err)
	}
	write("checkpoint", signed)
	return ex
}

func testEntries(t testing.TB, n int) [][]byte {
	entries := make([][]byte, n)
	for i := range entries {
		entries[i] = testEntry(t, i)
	}
	return entries
}

// changingSource serves an export, but an entry bundle read a second time
// with one entry changed: a gateway that answers otherwise after
// verification.
type changingSource struct {
	audit.Dir
	path  string
	reads atomic.Int32
}

func (s *changingSource) ReadFile(ctx context.Context, path string) ([]byte, error) {
	data, err := s.Dir.ReadFile(ctx, path)
	if err == nil && path == s.path && s.reads.Add(1) > 1 {
		data = bytes.Replace(data, []byte(`"handling":"H2"`), []byte(`"handling":"H3"`), 1)
	}
	return data, err
}

// TestAuditEntriesChecked checks that the entries of a verified log are
// checked again against the verified tree as they are read: a source that
// changes an entry bundle after verification ends the iteration with an
// error, after the entries of the bundles before it only.
func TestAuditEntriesChecked(t *testing.T) {
	entries := testEntries(t, 600)
	ex := writeExport(t, t.TempDir(), entries, 0)
	keys := auditKeys{Log: ex.logKey, From: "test"}
	opts, err := keys.verifyOptions()
	if err != nil {
		t.Fatal(err)
	}
	second := torchwood.TilePath(tlog.Tile{H: torchwood.TileHeight, L: -1, N: 1, W: torchwood.TileWidth})
	src := &changingSource{Dir: audit.Dir(ex.dir), path: second}
	signed, err := src.ReadFile(t.Context(), "checkpoint")
	if err != nil {
		t.Fatal(err)
	}
	l, err := verifyPinned(t.Context(), pinnedSource{src, signed}, "DE", keys, "test", opts, &auditState{})
	if err != nil {
		t.Fatalf("the log did not verify: %v", err)
	}
	var got int
	var iterErr error
	for e, err := range l.Entries(t.Context()) {
		if err != nil {
			iterErr = err
			break
		}
		if !bytes.Equal(e.Data, entries[e.Index]) || e.Index != int64(got) || e.Entry == nil {
			t.Fatalf("entry %d: %q (%v), want %q", e.Index, e.Data, e.Err, entries[got])
		}
		got++
	}
	if got != torchwood.TileWidth {
		t.Errorf("%d entries yielded before the changed bundle, want %d", got, torchwood.TileWidth)
	}
	if !errors.Is(iterErr, audit.ErrEntryChanged) || !strings.Contains(iterErr.Error(), "entry 256, read again from "+second+", is not the one verified") {
		t.Errorf("iteration ended with %v, want an error naming entry 256 as changed", iterErr)
	}
}

// TestAuditEntriesUnreadable checks what evx audit verify makes of entries
// that do not read: one of a newer format is reported, a malformed one or
// one of another gateway fails the verification.
func TestAuditEntriesUnreadable(t *testing.T) {
	newer := bytes.Replace(testEntry(t, 1), []byte(audit.EntryFormat), []byte("evx-log-entry/9"), 1)
	other := bytes.Replace(testEntry(t, 1), []byte(`"gateway":"DE"`), []byte(`"gateway":"IT"`), 1)
	malformed := bytes.Replace(testEntry(t, 1), []byte(`{`), []byte(`{ `), 1)
	for _, c := range []struct {
		name  string
		entry []byte
		exit  int
		want  string
	}{
		{"newer format", newer, 0, "entries      3 entries, each the tree's leaf, in order; not readable by this evx (verified, not shown): 1 of a format unknown to this evx\n"},
		{"other gateway", other, exitVerify, "failed verification: entry 1 is in the tree but says it is of gateway IT\n"},
		{"malformed", malformed, exitVerify, "failed verification: entry 1 is in the tree but is not a valid entry: "},
	} {
		t.Run(c.name, func(t *testing.T) {
			ex := writeExport(t, t.TempDir(), [][]byte{testEntry(t, 0), c.entry, testEntry(t, 2)}, 0)
			out, errOut, exit := runEvx("audit", "verify", "--dir", ex.dir, "--log-key", ex.logKey)
			if exit != c.exit || !strings.Contains(out+errOut, c.want) {
				t.Errorf("exit %d, want %d; output:\n%s%s\nwant it to contain %q", exit, c.exit, out, errOut, c.want)
			}
		})
	}
}

// TestAuditStateLocked checks that a second evx audit command on the same
// saved checkpoint fails at once, naming it, rather than race the first.
func TestAuditStateLocked(t *testing.T) {
	ex := writeExport(t, t.TempDir(), testEntries(t, 3), 0)
	saved := filepath.Join(t.TempDir(), "seen.checkpoint")
	mustEvx(t, "audit", "verify", "--dir", ex.dir, "--log-key", ex.logKey, "--saved", saved)
	before, err := os.ReadFile(saved)
	if err != nil {
		t.Fatal(err)
	}
	st, err := lockAuditState(saved)
	if err != nil {
		t.Fatal(err)
	}
	_, errOut, exit := runEvx("audit", "verify", "--dir", ex.dir, "--log-key", ex.logKey, "--saved", saved)
	if want := "evx: the saved checkpoint " + saved + " is in use by another evx audit or evx report command: try again when it is done\n"; exit != 1 || errOut != want {
		t.Errorf("exit %d, stderr %q; want 1, %q", exit, errOut, want)
	}
	st.unlock()
	mustEvx(t, "audit", "verify", "--dir", ex.dir, "--log-key", ex.logKey, "--saved", saved)
	after, err := os.ReadFile(saved)
	if err != nil || !bytes.Equal(before, after) {
		t.Errorf("saved checkpoint %q (%v), want %q", after, err, before)
	}
}

// BenchmarkAuditVerifyDir1M runs evx audit verify --dir on an export of
// 1,000,000 entries (EVX_BENCH_LOG_SIZE sets another size) with an earlier
// checkpoint every 1,000 entries, as an offline auditor does: the whole
// verification of audit.Verify, then the reading of every entry.
func BenchmarkAuditVerifyDir1M(b *testing.B) {
	size := 1_000_000
	if s := os.Getenv("EVX_BENCH_LOG_SIZE"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			b.Fatalf("EVX_BENCH_LOG_SIZE=%q", s)
		}
		size = n
	}
	ex := writeExport(b, filepath.Join(b.TempDir(), "export"), testEntries(b, size), 1000)
	want := fmt.Sprintf("  entries      %d entries, each the tree's leaf, in order; all readable\n", size)
	b.ResetTimer()
	for b.Loop() {
		out, errOut, exit := runEvx("audit", "verify", "--dir", ex.dir, "--log-key", ex.logKey)
		if exit != 0 || !strings.Contains(out, want) {
			b.Fatalf("exit %d\n%s%s", exit, out, errOut)
		}
	}
	b.ReportMetric(float64(size)*float64(b.N)/b.Elapsed().Seconds(), "entries/s")
}

// TestAuditProofOutput checks that evx audit proof prints, for each entry
// about the bundle, a tlog-proof that verifies offline on its own: the
// entry in its extra data, its index, its proof in the checkpoint, with
// proofs separated by an empty line.
func TestAuditProofOutput(t *testing.T) {
	entries := testEntries(t, 300)
	// Entries 5, 17 and 280 are about one bundle.
	id := fmt.Sprintf("%032x", 5)
	for _, i := range []int{17, 280} {
		e, err := audit.ParseEntry(entries[i])
		if err != nil {
			t.Fatal(err)
		}
		e.BundleID = id
		if entries[i], err = e.MarshalCanonical(); err != nil {
			t.Fatal(err)
		}
	}
	ex := writeExport(t, t.TempDir(), entries, 100)
	out := mustEvx(t, "audit", "proof", "--dir", ex.dir, "--log-key", ex.logKey, "--bundle", id)
	texts := strings.SplitAfter(out, "\n\nc2sp.org/tlog-proof@v1\n")
	if len(texts) != 3 {
		t.Fatalf("%d proofs, want 3:\n%s", len(texts), out)
	}
	opts, err := (auditKeys{Log: ex.logKey}).verifyOptions()
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []int64{5, 17, 280} {
		text := texts[i]
		if i > 0 {
			text = "c2sp.org/tlog-proof@v1\n" + text
		}
		text = strings.TrimSuffix(text, "\nc2sp.org/tlog-proof@v1\n")
		p, err := audit.ParseProof([]byte(text))
		if err != nil {
			t.Fatalf("proof %d: %v\n%s", i, err, text)
		}
		if p.Index != want || !bytes.Equal(p.Extra, entries[want]) {
			t.Errorf("proof %d: index %d, extra %q; want %d, %q", i, p.Index, p.Extra, want, entries[want])
		}
		if tree, err := audit.VerifyProof(p, p.Extra, opts); err != nil || tree.N != int64(len(entries)) {
			t.Errorf("proof %d does not verify in the tree of %d entries: %v, %v", i, len(entries), tree, err)
		}
	}
}
