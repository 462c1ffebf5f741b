package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"evx/audit"
	"evx/config"
	"evx/crypto"
	"evx/gateway"

	"filippo.io/torchwood"
	"go.uber.org/zap"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// runEvx runs the evx command line in the test process and returns its
// stdout, stderr and exit code.
func runEvx(args ...string) (stdout, stderr string, exit int) {
	var o, e bytes.Buffer
	exit = run(args, strings.NewReader(""), &o, &e)
	return o.String(), e.String(), exit
}

// mustEvx runs evx and fails the test unless it exits 0.
func mustEvx(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, exit := runEvx(args...)
	if exit != 0 {
		t.Fatalf("evx %s: exit %d\n%s%s", strings.Join(args, " "), exit, out, errOut)
	}
	return out
}

// auditWorld is evx dev-env's DE and FR, with their gateways running in
// the test process and DE's auditor profile pinning DE's log key and FR's
// witness key.
type auditWorld struct {
	dir     string
	auditor string // DE's auditor profile
	stop    map[string]func()
}

func newAuditWorld(t *testing.T) *auditWorld {
	t.Helper()
	w := &auditWorld{dir: t.TempDir(), stop: map[string]func(){}}
	mustEvx(t, "dev-env", "--dir", w.dir)
	w.auditor = filepath.Join(w.dir, "DE", "auditor", "profile.yaml")
	wantPinned(t, w.auditor, filepath.Join(w.dir, "DE", "gateway.yaml"), filepath.Join(w.dir, "FR", "gateway.yaml"))
	for _, id := range []string{"DE", "FR"} {
		w.start(t, id)
	}
	return w
}

// wantPinned checks that an auditor's profile pins the log key of the
// gateway configured in cfg and the witness keys of those configured in
// witnesses, as evx log-keys prints them: evx dev-env writes them there,
// as the operators would hand them over.
func wantPinned(t *testing.T, profile, cfg string, witnesses ...string) {
	t.Helper()
	key := func(cfg, field string) string {
		out := mustEvx(t, "log-keys", "--config", cfg)
		m := regexp.MustCompile(`(?m)^` + field + `: (\S+)$`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("evx log-keys printed no %s:\n%s", field, out)
		}
		return m[1]
	}
	p, err := config.LoadProfile(profile)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, w := range witnesses {
		want = append(want, key(w, "witness_key"))
	}
	if logKey := key(cfg, "log_key"); p.LogKey != logKey || !slices.Equal(p.WitnessKeys, want) {
		t.Fatalf("%s pins log key %q and witness keys %q, want %q and %q", profile, p.LogKey, p.WitnessKeys, logKey, want)
	}
}

// start runs country id's gateway from its dev-env configuration until
// stopped or the end of the test.
func (w *auditWorld) start(t *testing.T, id string) {
	t.Helper()
	cfg, err := config.Load(filepath.Join(w.dir, id, "gateway.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	opts, err := gatewayOptions(ctx, cfg, zap.NewNop())
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	g, err := gateway.New(opts)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			if err := <-done; err != nil {
				t.Errorf("gateway %s: %v", id, err)
			}
		}
	}
	w.stop[id] = stop
	t.Cleanup(stop)
}

// push has DE's forensic unit push a small bundle to FR's prosecutor and
// returns its id.
func (w *auditWorld) push(t *testing.T) string {
	t.Helper()
	files := filepath.Join(t.TempDir(), "case")
	if err := os.MkdirAll(files, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(files, "notes.txt"), []byte("seized 2026-11-03\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := mustEvx(t, "push", "--profile", filepath.Join(w.dir, "DE", "forensics", "profile.yaml"),
		"--to", "FR/prosecutor", "--purpose", "mutual-legal-assistance", "--legal-basis", "EIO 2026/17", files)
	return strings.TrimSpace(out)
}

// logDir is the directory of DE's transfer log in its storage.
func (w *auditWorld) logDir() string { return filepath.Join(w.dir, "DE", "data", "log") }

// logFiles is a transfer log's files as a tamperer edits them: an export
// directory or a gateway's storage.
type logFiles interface {
	// path returns the file of a log path, as a Source reads it
	// ("checkpoint", "checkpoints/<n>", "tile/...").
	path(p string) string
	// cosignature returns the file holding FR's cosignature of the
	// checkpoint of size n, and the line within it.
	cosignature(t *testing.T, n int64) (file string, line string)
}

// exportFiles are the files of an export directory.
type exportFiles string

func (d exportFiles) path(p string) string { return filepath.Join(string(d), filepath.FromSlash(p)) }
func (d exportFiles) cosignature(t *testing.T, n int64) (string, string) {
	file := d.path("checkpoint")
	return file, cosignatureLine(t, file)
}

// storageFiles are the files of the log in a gateway's disk storage.
type storageFiles string

func (d storageFiles) path(p string) string {
	if n, ok := strings.CutPrefix(p, "checkpoints/"); ok {
		size, _ := strconv.ParseInt(n, 10, 64)
		p = fmt.Sprintf("checkpoints/%020d", size)
	}
	return filepath.Join(string(d), filepath.FromSlash(p))
}
func (d storageFiles) cosignature(t *testing.T, n int64) (string, string) {
	file := filepath.Join(string(d), fmt.Sprintf("cosignatures/%020d", n), "evx.witness", "FR")
	return file, cosignatureLine(t, file)
}

func cosignatureLine(t *testing.T, file string) string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^— evx\.witness/FR \S+\n`).Find(data)
	if m == nil {
		t.Fatalf("no cosignature by FR in %s:\n%s", file, data)
	}
	return string(m)
}

// tamperer edits files and puts them back as they were at the end of the
// test.
type tamperer struct {
	t *testing.T
}

func newTamperer(t *testing.T) *tamperer { return &tamperer{t: t} }

// keep arranges for file to be restored, or removed if it does not exist
// yet, at the end of the test.
func (tp *tamperer) keep(file string) {
	data, err := os.ReadFile(file)
	switch {
	case errors.Is(err, os.ErrNotExist):
		tp.t.Cleanup(func() { os.Remove(file) })
	case err != nil:
		tp.t.Fatal(err)
	default:
		tp.t.Cleanup(func() {
			if err := os.WriteFile(file, data, 0o600); err != nil {
				tp.t.Error(err)
			}
		})
	}
}

func (tp *tamperer) read(file string) []byte {
	data, err := os.ReadFile(file)
	if err != nil {
		tp.t.Fatal(err)
	}
	return data
}

func (tp *tamperer) write(file string, data []byte) {
	tp.keep(file)
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		tp.t.Fatal(err)
	}
	if err := os.WriteFile(file, data, 0o600); err != nil {
		tp.t.Fatal(err)
	}
}

func (tp *tamperer) remove(file string) {
	tp.keep(file)
	if err := os.Remove(file); err != nil {
		tp.t.Fatal(err)
	}
}

// bundlePath is the path of the entry bundle of a tree of n < 256
// entries.
func bundlePath(n int64) string {
	return torchwood.TilePath(tlog.Tile{H: torchwood.TileHeight, L: -1, N: 0, W: int(n)})
}

// splitBundle returns the entries of an entry bundle.
func splitBundle(t *testing.T, data []byte) [][]byte {
	t.Helper()
	var entries [][]byte
	for len(data) > 0 {
		e, rest, err := torchwood.ReadTileEntry(data)
		if err != nil {
			t.Fatal(err)
		}
		entries, data = append(entries, e), rest
	}
	return entries
}

func joinBundle(t *testing.T, entries [][]byte) []byte {
	t.Helper()
	var out []byte
	for _, e := range entries {
		var err error
		if out, err = torchwood.AppendTileEntry(out, e); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// treeFiles computes the tiles and entry bundles of the tree of entries,
// and its hash at every size, as a log would store them.
type treeFiles struct {
	tiles  map[string][]byte // by tile path
	hashes []tlog.Hash       // stored hashes
}

func buildTree(entries [][]byte) (*treeFiles, error) {
	tf := &treeFiles{tiles: map[string][]byte{}}
	hr := tf.hashReader()
	for i, e := range entries {
		hs, err := tlog.StoredHashes(int64(i), e, hr)
		if err != nil {
			return nil, err
		}
		tf.hashes = append(tf.hashes, hs...)
	}
	n := int64(len(entries))
	for _, t := range tlog.NewTiles(torchwood.TileHeight, 0, n) {
		data, err := tlog.ReadTileData(t, hr)
		if err != nil {
			return nil, err
		}
		tf.tiles[torchwood.TilePath(t)] = data
		if t.L == 0 {
			var bundle []byte
			for _, e := range entries[t.N*torchwood.TileWidth : t.N*torchwood.TileWidth+int64(t.W)] {
				if bundle, err = torchwood.AppendTileEntry(bundle, e); err != nil {
					return nil, err
				}
			}
			t.L = -1
			tf.tiles[torchwood.TilePath(t)] = bundle
		}
	}
	return tf, nil
}

func (tf *treeFiles) hashReader() tlog.HashReader {
	return tlog.HashReaderFunc(func(indexes []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(indexes))
		for i, x := range indexes {
			if x >= int64(len(tf.hashes)) {
				return nil, fmt.Errorf("no hash %d", x)
			}
			out[i] = tf.hashes[x]
		}
		return out, nil
	})
}

// signCheckpoint signs the checkpoint of the tree's first n entries.
func (tf *treeFiles) signCheckpoint(origin string, n int64, s note.Signer) ([]byte, error) {
	h, err := tlog.TreeHash(n, tf.hashReader())
	if err != nil {
		return nil, err
	}
	c := torchwood.Checkpoint{Origin: origin, Tree: tlog.Tree{N: n, Hash: h}}
	return note.Sign(&note.Note{Text: c.String()}, s)
}

// forgeCosignature returns a cosignature line with its signature changed.
func forgeCosignature(t *testing.T, line string) string {
	t.Helper()
	name, sig, _ := strings.Cut(strings.TrimSuffix(strings.TrimPrefix(line, "— "), "\n"), " ")
	raw, err := base64.StdEncoding.DecodeString(sig)
	if err != nil {
		t.Fatal(err)
	}
	raw[len(raw)-1] ^= 1
	return "— " + name + " " + base64.StdEncoding.EncodeToString(raw) + "\n"
}

// TestAuditVerifyTampered tampers with DE's transfer log in each way the
// issue names, in an export and in the live gateway's storage, and checks
// that evx audit verify fails, naming the failure, and keeps the checkpoint
// saved before.
func TestAuditVerifyTampered(t *testing.T) {
	w := newAuditWorld(t)
	// The cases need earlier checkpoints in the export: pushes, each
	// verified once a checkpoint newer than the last one verified holds
	// it, leave three sizes at least in the log's history.
	verifiedSize := func() int64 {
		out := mustEvx(t, "audit", "verify", "--profile", w.auditor)
		m := regexp.MustCompile(`(?m)^  checkpoint +size (\d+),`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no size in:\n%s", out)
		}
		n, _ := strconv.ParseInt(m[1], 10, 64)
		return n
	}
	var size int64
	for range 3 {
		w.push(t)
		prev := size
		for attempt := 0; size == prev; attempt++ {
			if attempt == 100 {
				t.Fatalf("the log stayed at size %d after a push", size)
			}
			size = verifiedSize()
		}
	}
	export := filepath.Join(t.TempDir(), "export")
	mustEvx(t, "audit", "export", "--profile", w.auditor, "-o", export)
	// The log may have grown since the last verification (a push's last
	// entries integrated a moment later): the export's checkpoint is the
	// one the cases start from, which export saved beside the profile.
	exported, err := os.ReadFile(filepath.Join(export, "checkpoint"))
	if err != nil {
		t.Fatal(err)
	}
	size = checkpointSize(exported)
	if size < 4 || size >= torchwood.TileWidth {
		t.Fatalf("log of %d entries, want 4 to 255", size)
	}
	state := filepath.Join(filepath.Dir(w.auditor), "audit-state", "DE.checkpoint")
	saved, err := os.ReadFile(state)
	if err != nil {
		t.Fatal(err)
	}
	if got := checkpointSize(saved); got != size {
		t.Fatalf("saved checkpoint of size %d, want the exported one's, %d", got, size)
	}
	sizes, err := audit.Dir(export).CheckpointSizes(context.Background())
	if err != nil || len(sizes) < 2 {
		t.Fatalf("export holds earlier checkpoints %v (%v), want at least 2", sizes, err)
	}
	// The live cases need DE's log to stay as it is: FR, the witness,
	// would add cosignatures back.
	w.stop["FR"]()

	signing, err := crypto.ReadSigningKeyFile(filepath.Join(w.dir, "DE", "gateway-signing.key"))
	if err != nil {
		t.Fatal(err)
	}
	logSigner, err := signing.CheckpointSigner(crypto.LogOrigin("DE"))
	if err != nil {
		t.Fatal(err)
	}
	other, err := crypto.GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	otherSigner, err := other.CheckpointSigner(crypto.LogOrigin("DE"))
	if err != nil {
		t.Fatal(err)
	}
	bundle := bundlePath(size)
	checkpointText := func(tp *tamperer, f logFiles) string {
		text, _, _ := strings.Cut(string(tp.read(f.path("checkpoint"))), "\n\n")
		return text + "\n"
	}

	cases := []struct {
		name   string
		tamper func(t *testing.T, tp *tamperer, f logFiles)
		want   string // in stderr, after "failed verification: "
	}{
		{"entry byte changed", func(t *testing.T, tp *tamperer, f logFiles) {
			entries := splitBundle(t, tp.read(f.path(bundle)))
			entries[2] = bytes.Clone(entries[2])
			entries[2][len(entries[2])/2] ^= 0x01
			tp.write(f.path(bundle), joinBundle(t, entries))
		}, fmt.Sprintf(`entry changed: entry 2 does not hash to the tree's leaf 2 (%s)`, bundle)},

		{"entry dropped", func(t *testing.T, tp *tamperer, f logFiles) {
			entries := splitBundle(t, tp.read(f.path(bundle)))
			tp.write(f.path(bundle), joinBundle(t, slices.Delete(entries, 1, 2)))
		}, fmt.Sprintf(`entry missing: entry 1 is missing: %s holds %d entries, the tree %d`, bundle, size-1, size)},

		{"entries swapped", func(t *testing.T, tp *tamperer, f logFiles) {
			entries := splitBundle(t, tp.read(f.path(bundle)))
			entries[1], entries[3] = entries[3], entries[1]
			tp.write(f.path(bundle), joinBundle(t, entries))
		}, `entries reordered: entries 1 and 3 are swapped`},

		{"fork of the same size", func(t *testing.T, tp *tamperer, f logFiles) {
			// The history rewritten from its first entry on, signed
			// with the log key: tiles, bundle, every checkpoint.
			entries := splitBundle(t, tp.read(f.path(bundle)))
			e, err := audit.ParseEntry(entries[0])
			if err != nil || e.Event != audit.EventGatewayStarted {
				t.Fatalf("entry 0: %v, %v", e, err)
			}
			e.ConfigSHA256[0] ^= 0xff
			if entries[0], err = e.MarshalCanonical(); err != nil {
				t.Fatal(err)
			}
			tf, err := buildTree(entries)
			if err != nil {
				t.Fatal(err)
			}
			for p, data := range tf.tiles {
				tp.write(f.path(p), data)
			}
			for _, n := range append(sizes, size) {
				if n == 0 {
					continue
				}
				signed, err := tf.signCheckpoint(crypto.LogOrigin("DE"), n, logSigner)
				if err != nil {
					t.Fatal(err)
				}
				p := "checkpoint"
				if n < size {
					p = fmt.Sprintf("checkpoints/%d", n)
				}
				tp.write(f.path(p), signed)
			}
		}, fmt.Sprintf(`fork: the log's tree of size %d does not contain the saved checkpoint of size %d`, size, size)},

		{"checkpoint signed by another key", func(t *testing.T, tp *tamperer, f logFiles) {
			signed, err := note.Sign(&note.Note{Text: checkpointText(tp, f)}, otherSigner)
			if err != nil {
				t.Fatal(err)
			}
			tp.write(f.path("checkpoint"), signed)
		}, fmt.Sprintf(`checkpoint not signed by the log key evx.transfer-log/DE+%08x: it is signed by evx.transfer-log/DE+%08x`,
			logSigner.KeyHash(), otherSigner.KeyHash())},

		{"old checkpoint replayed", func(t *testing.T, tp *tamperer, f logFiles) {
			old := sizes[len(sizes)-1]
			tp.write(f.path("checkpoint"), tp.read(f.path(fmt.Sprintf("checkpoints/%d", old))))
		}, fmt.Sprintf(`old checkpoint: the log's checkpoint is of size %d, older than the saved checkpoint of size %d (replayed or rolled back)`, sizes[len(sizes)-1], size)},

		{"cosignature missing", func(t *testing.T, tp *tamperer, f logFiles) {
			file, line := f.cosignature(t, size)
			if data := tp.read(file); string(data) == line {
				tp.remove(file)
			} else {
				tp.write(file, bytes.Replace(data, []byte(line), nil, 1))
			}
		}, fmt.Sprintf(`missing cosignature: checkpoint %d is cosigned by 0 of the 1 witnesses required; none from evx.witness/FR+`, size)},

		{"cosignature forged", func(t *testing.T, tp *tamperer, f logFiles) {
			file, line := f.cosignature(t, size)
			data := tp.read(file)
			tp.write(file, bytes.Replace(data, []byte(line), []byte(forgeCosignature(t, line)), 1))
		}, `invalid cosignature: the cosignature by witness evx.witness/FR+`},
	}
	for _, c := range cases {
		t.Run("export/"+c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "export")
			if err := os.CopyFS(dir, os.DirFS(export)); err != nil {
				t.Fatal(err)
			}
			c.tamper(t, newTamperer(t), exportFiles(dir))
			_, errOut, exit := runEvx("audit", "verify", "--dir", dir, "--profile", w.auditor)
			wantFailure(t, exit, errOut, "evx: the transfer log of DE (export "+dir+") failed verification: "+c.want)
			wantSaved(t, state, saved)
		})
		t.Run("live/"+c.name, func(t *testing.T) {
			c.tamper(t, newTamperer(t), storageFiles(w.logDir()))
			_, errOut, exit := runEvx("audit", "verify", "--profile", w.auditor, "--wait", "0s")
			wantFailure(t, exit, errOut, "failed verification: "+c.want)
			if !strings.HasPrefix(errOut, "evx: the transfer log of DE (the gateway at https://127.0.0.1:") {
				t.Errorf("stderr %q does not say which log failed", errOut)
			}
			wantSaved(t, state, saved)
		})
	}

	// Put back as it was, the log verifies again, live and exported.
	mustEvx(t, "audit", "verify", "--profile", w.auditor, "--wait", "0s")
	mustEvx(t, "audit", "verify", "--dir", export, "--profile", w.auditor)
}

func wantFailure(t *testing.T, exit int, stderr, want string) {
	t.Helper()
	if exit != exitVerify {
		t.Fatalf("evx audit verify exited %d, want %d (verification failed) naming %q\n%s", exit, exitVerify, want, stderr)
	}
	if !strings.Contains(stderr, want) {
		t.Errorf("stderr:\n%s\nwant it to contain\n%s", stderr, want)
	}
}

// wantSaved checks that a failed verification left the saved checkpoint
// as it was.
func wantSaved(t *testing.T, state string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(state)
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("saved checkpoint changed by a failed verification: %q (%v)", got, err)
	}
}
