package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"evx/audit"
	"evx/client"
	"evx/config"
	"evx/crypto"

	"filippo.io/torchwood"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// The transfer log as evx audit (and evx report) read it: first verified
// as a whole, against the keys the auditor pinned and the checkpoint it
// saved last (audit.Verify), then read entry by entry, each checked again
// against the verified tree as it is read. Nothing is shown of a log that
// did not verify, and nothing read after verification is trusted either:
// a gateway could answer differently the second time.
//
// Use:
//
//	l, err := verifyProfileLog(ctx, profile, auditOptions{})
//	...
//	for e, err := range l.Entries(ctx) {
//		if err != nil { ... }   // the log changed under the reader: stop
//		if e.Entry == nil { ... } // e.Err says why it does not read
//	}

// defaultCosignWait is how long a verification of a live log waits, by
// default, for the pinned witnesses to cosign the latest checkpoint:
// gateways ask their peers to cosign each new checkpoint within about a
// second (gateway witnessPoll).
const defaultCosignWait = 10 * time.Second

// cosignPoll is how often the checkpoint is read again while waiting.
const cosignPoll = 250 * time.Millisecond

// maxSavedCheckpoint bounds the saved checkpoint file, as the log bounds a
// checkpoint with its cosignatures.
const maxSavedCheckpoint = 64 << 10

// auditOptions tune how a log is verified.
type auditOptions struct {
	// Wait bounds how long verifying a live log waits for the pinned
	// witnesses to cosign its latest checkpoint before it verifies it
	// anyway (and fails, naming the witness that did not cosign). Zero
	// means defaultCosignWait; negative means no wait.
	Wait time.Duration
	// Progress receives a line when the verification waits; nil for none.
	Progress io.Writer
}

func (o auditOptions) wait() time.Duration {
	switch {
	case o.Wait == 0:
		return defaultCosignWait
	case o.Wait < 0:
		return 0
	}
	return o.Wait
}

// auditKeys are the verifier keys a log is verified with, and where they
// come from.
type auditKeys struct {
	Log       string
	Witnesses []string
	// From says where the keys were pinned, such as "profile
	// env/DE/auditor/profile.yaml" or "--log-key"; "" means they were not
	// pinned at all but read from the export's own keys file, which
	// proves nothing about whose log it is.
	From string
}

// Pinned reports whether the keys were pinned by the auditor.
func (k auditKeys) Pinned() bool { return k.From != "" }

// verifyOptions returns the verifiers of the keys.
func (k auditKeys) verifyOptions() (audit.VerifyOptions, error) {
	opts, err := audit.Keys{Log: k.Log, Witnesses: k.Witnesses}.VerifyOptions()
	if err != nil {
		return audit.VerifyOptions{}, err
	}
	if _, ok := logGateway(opts.Log.Name()); !ok {
		return audit.VerifyOptions{}, fmt.Errorf("log key %q is named %q; a gateway's log key is named %s<gateway id>", k.Log, opts.Log.Name(), crypto.LogOrigin(""))
	}
	return opts, nil
}

// logGateway returns the gateway id of a log's origin.
func logGateway(origin string) (string, bool) {
	id, ok := strings.CutPrefix(origin, crypto.LogOrigin(""))
	return id, ok && crypto.ValidGatewayID(id)
}

// keyID names a verifier key briefly, as its name and key hash.
func keyID(vkey string) string {
	name, rest, _ := strings.Cut(vkey, "+")
	hash, _, _ := strings.Cut(rest, "+")
	return name + "+" + hash
}

// auditedLog is a transfer log that verified: what Verify checked, and a
// source pinned to the verified checkpoint to read its entries from.
type auditedLog struct {
	*audit.Report
	// Gateway is the id of the gateway whose log it is.
	Gateway string
	Keys    auditKeys
	// Where says where the log was read: "the gateway at URL" or
	// "export DIR".
	Where string
	// StatePath is the file the verified checkpoint was saved in, ""
	// when no state is kept; SavedBefore reports whether it held one
	// (then Report.SavedSize is its size).
	StatePath   string
	SavedBefore bool
	// ExportKeys are the keys an export's keys file names, if it has a
	// readable one (exports only).
	ExportKeys *audit.Keys

	src  audit.Source
	opts audit.VerifyOptions
}

// verifyFailure is a transfer log that failed verification. Its message
// says which log and names the failure; it wraps audit's error (such as
// audit.ErrEntryChanged) for callers that tell failures apart.
type verifyFailure struct {
	what string
	err  error
}

func (e *verifyFailure) Error() string {
	return fmt.Sprintf("%s failed verification: %v", e.what, e.err)
}
func (e *verifyFailure) Unwrap() error { return e.err }

// verifyProfileLog verifies the transfer log of the profile's gateway, as
// evx audit verify --profile does: it reads the log through the auditor's
// API, checks it against the log key and witness keys the profile pins and
// against the checkpoint saved beside the profile, and saves the newly
// verified checkpoint there. An empty profile chooses it as every command
// does (--profile, EVX_PROFILE, the default path). The saved checkpoint is
// locked for the whole verification: a second evx audit command of the
// same profile fails rather than wait.
func verifyProfileLog(ctx context.Context, profile string, o auditOptions) (*auditedLog, error) {
	path, from, err := profilePath(profile, os.Getenv)
	if err != nil {
		return nil, err
	}
	l, err := verifyProfileAt(ctx, path, o)
	if err != nil && from == profileEnv {
		err = fmt.Errorf("%s: %w", profileEnv, err)
	}
	return l, err
}

func verifyProfileAt(ctx context.Context, path string, o auditOptions) (*auditedLog, error) {
	p, keys, c, err := profileAuditClient(path)
	if err != nil {
		return nil, err
	}
	return verifyProfileClient(ctx, p, keys, c, o)
}

// verifyProfileClient is verifyProfileLog with the profile read, and a
// client of its gateway, which a caller that verifies again and again
// reuses, with its connections.
func verifyProfileClient(ctx context.Context, p *config.Profile, keys auditKeys, c *client.Client, o auditOptions) (*auditedLog, error) {
	opts, gw, st, err := pinnedState(p, keys)
	if err != nil {
		return nil, err
	}
	defer st.unlock()
	src := c.Log()
	if n := checkpointSize(st.saved); n > 0 {
		// The checkpoints before the saved one were checked then.
		src = src.Since(n)
	}
	where := "the gateway at " + c.Gateway()
	signed, err := waitCosigned(ctx, src, opts, o)
	if err != nil {
		return nil, err
	}
	l, err := verifyPinned(ctx, pinnedSource{src, signed}, gw, keys, where, opts, st)
	var vf *verifyFailure
	if errors.As(err, &vf) && errors.Is(err, audit.ErrMissingCosignature) {
		// Most likely a witness that is down: say so.
		vf.err = fmt.Errorf("%w (waited %s: a witness that is down, or refuses to cosign, leaves the latest checkpoint uncosigned)", vf.err, o.wait())
	}
	return l, err
}

// profileAuditKeys reads the profile at path and the keys it pins.
func profileAuditKeys(path string) (*config.Profile, auditKeys, error) {
	p, err := config.LoadProfile(path)
	if err != nil {
		return nil, auditKeys{}, err
	}
	if p.LogKey == "" {
		return nil, auditKeys{}, p.Errorf("log_key", "the profile pins no log key: evx audit verifies the transfer log against the log_key (and witness_keys) pinned in the profile; ask the gateway's operator for them (evx log-keys --config gateway.yaml prints them) and add them to the profile")
	}
	return p, auditKeys{Log: p.LogKey, Witnesses: p.WitnessKeys, From: "profile " + path}, nil
}

// profileAuditClient reads the profile at path, the keys it pins and a
// client of its gateway.
func profileAuditClient(path string) (*config.Profile, auditKeys, *client.Client, error) {
	p, keys, err := profileAuditKeys(path)
	if err != nil {
		return nil, auditKeys{}, nil, err
	}
	c, _, err := readProfile(path, false, io.Discard)
	if err != nil {
		return nil, auditKeys{}, nil, err
	}
	return p, keys, c, nil
}

// pinnedState returns the verify options of the keys profile p pins, for
// the log of gateway gw, with the checkpoint saved from p for that log,
// whose lock it holds: the caller unlocks st.
func pinnedState(p *config.Profile, keys auditKeys) (opts audit.VerifyOptions, gw string, st *auditState, err error) {
	if opts, err = keys.verifyOptions(); err != nil {
		return opts, "", nil, p.Errorf("log_key", "%v", err)
	}
	gw, _ = logGateway(opts.Log.Name())
	if st, err = lockAuditState(auditStatePath(p, gw)); err != nil {
		return opts, "", nil, err
	}
	opts.Saved = st.saved
	return opts, gw, st, nil
}

// auditStatePath is where the checkpoint verified last from profile p, of
// gateway gw's log, is saved.
func auditStatePath(p *config.Profile, gw string) string {
	return filepath.Join(p.AuditStateDir(), gw+".checkpoint")
}

// verifyExportLog verifies the export in dir, as evx audit verify --dir
// does: against keys if they are pinned, else against the export's own
// keys file (keys.From == ""); against the checkpoint saved at statePath
// if it is not "", where the verified checkpoint is then saved.
func verifyExportLog(ctx context.Context, dir string, keys auditKeys, statePath string) (*auditedLog, error) {
	src := audit.Dir(dir)
	if fi, err := os.Stat(dir); err != nil {
		return nil, err
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("%s is not a directory", dir)
	}
	var exportKeys *audit.Keys
	data, err := src.ReadFile(ctx, "keys")
	if err == nil {
		var k audit.Keys
		if k, err = audit.ParseKeys(data); err == nil {
			exportKeys = &k
		}
	}
	if !keys.Pinned() {
		if exportKeys == nil {
			return nil, fmt.Errorf("no keys pinned (--profile or --log-key), and the export's keys file cannot be used: %w", err)
		}
		keys = auditKeys{Log: exportKeys.Log, Witnesses: exportKeys.Witnesses}
	}
	opts, err := keys.verifyOptions()
	if err != nil {
		return nil, err
	}
	gw, _ := logGateway(opts.Log.Name())
	st := &auditState{}
	if statePath != "" {
		if st, err = lockAuditState(statePath); err != nil {
			return nil, err
		}
		defer st.unlock()
		opts.Saved = st.saved
	}
	where := "export " + dir
	signed, err := src.ReadFile(ctx, "checkpoint")
	if err != nil {
		return nil, &verifyFailure{"the transfer log in " + where, fmt.Errorf("reading the checkpoint: %w", err)}
	}
	l, err := verifyPinned(ctx, pinnedSource{src, signed}, gw, keys, where, opts, st)
	if err != nil {
		return nil, err
	}
	l.ExportKeys = exportKeys
	return l, nil
}

// verifyPinned verifies the log in src, whose checkpoint is pinned, and
// saves the verified checkpoint in st.
func verifyPinned(ctx context.Context, src pinnedSource, gw string, keys auditKeys, where string, opts audit.VerifyOptions, st *auditState) (*auditedLog, error) {
	r, err := audit.Verify(ctx, src, opts)
	if err != nil {
		what := fmt.Sprintf("the transfer log of %s (%s)", gw, where)
		if strings.HasPrefix(err.Error(), "saved checkpoint: ") && st.path != "" {
			err = fmt.Errorf("%w (saved in %s)", err, st.path)
		}
		return nil, &verifyFailure{what, err}
	}
	l := &auditedLog{Report: r, Gateway: gw, Keys: keys, Where: where, StatePath: st.path,
		SavedBefore: st.saved != nil, src: src, opts: opts}
	l.opts.Saved = nil
	if st.path != "" {
		if err := st.save(r.Checkpoint); err != nil {
			return nil, fmt.Errorf("the transfer log verified, but its checkpoint could not be saved: %w", err)
		}
	}
	return l, nil
}

// waitCosigned reads the latest checkpoint of a live log until the pinned
// witnesses have all cosigned it or o's wait is over, and returns it. A
// gateway asks its peers to cosign each new checkpoint, so the latest one
// lacks cosignatures for a moment after each event. It does not wait when
// the checkpoint or a cosignature fails to verify: Verify names that.
func waitCosigned(ctx context.Context, src audit.Source, opts audit.VerifyOptions, o auditOptions) ([]byte, error) {
	deadline := time.Now().Add(o.wait())
	told := false
	for {
		signed, err := src.ReadFile(ctx, "checkpoint")
		if err != nil {
			return nil, fmt.Errorf("reading the transfer log's checkpoint: %w", err)
		}
		missing := missingCosigners(signed, opts)
		if len(missing) == 0 || !time.Now().Before(deadline) {
			return signed, nil
		}
		if !told && o.Progress != nil {
			fmt.Fprintf(o.Progress, "waiting up to %s for %s to cosign checkpoint %d\n",
				time.Until(deadline).Round(time.Second), strings.Join(missing, ", "), checkpointSize(signed))
			told = true
		}
		t := time.NewTimer(min(cosignPoll, time.Until(deadline)))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

// missingCosigners returns the names of the pinned witnesses that have not
// cosigned signed, if its log signature and every cosignature on it
// verify; else nil.
func missingCosigners(signed []byte, opts audit.VerifyOptions) []string {
	if _, err := note.Open(signed, note.VerifierList(opts.Log)); err != nil {
		return nil
	}
	var missing []string
	for _, w := range opts.Witnesses {
		n, err := note.Open(signed, note.VerifierList(opts.Log, w))
		if err != nil {
			return nil
		}
		if !slices.ContainsFunc(n.Sigs, func(s note.Signature) bool { return s.Name == w.Name() && s.Hash == w.KeyHash() }) {
			missing = append(missing, w.Name())
		}
	}
	return missing
}

// checkpointSize returns the size of a signed checkpoint, unverified, or
// -1.
func checkpointSize(signed []byte) int64 {
	text, _, _ := strings.Cut(string(signed), "\n\n")
	c, err := torchwood.ParseCheckpoint(text + "\n")
	if err != nil {
		return -1
	}
	return c.N
}

// pinnedSource is a log source whose checkpoint is fixed: a live gateway
// publishes new checkpoints while it is read, and everything read must be
// of the tree verified.
type pinnedSource struct {
	src    audit.Source
	signed []byte
}

func (p pinnedSource) ReadFile(ctx context.Context, path string) ([]byte, error) {
	if path == "checkpoint" {
		return bytes.Clone(p.signed), nil
	}
	return p.src.ReadFile(ctx, path)
}

func (p pinnedSource) CheckpointSizes(ctx context.Context) ([]int64, error) {
	if hs, ok := p.src.(audit.HistorySource); ok {
		return hs.CheckpointSizes(ctx)
	}
	return nil, nil
}

// auditEntry is one entry of a verified log.
type auditEntry struct {
	Index int64
	// Data is the entry's bytes, as logged and hashed.
	Data []byte
	// Entry is the parsed entry, or nil if it does not read; Err says
	// why (errors.Is audit.ErrUnsupportedFormat or audit.ErrUnknownEvent
	// for an entry a newer evx wrote, else a malformed entry).
	Entry *audit.Entry
	Err   error
}

// Entries returns the entries of the verified tree, in order. Each entry
// bundle is read again and checked against the tree before its entries
// are yielded: if the source answers otherwise than when it was verified,
// iteration ends with an error (naming audit.ErrEntryChanged). It holds
// one entry bundle at a time.
func (l *auditedLog) Entries(ctx context.Context) iter.Seq2[auditEntry, error] {
	return func(yield func(auditEntry, error) bool) {
		tiles := newHashTiles(l.src)
		hr := torchwood.TileHashReaderWithContext(ctx, l.Tree, tiles)
		for first := int64(0); first < l.N; first += torchwood.TileWidth {
			t := tlog.Tile{H: torchwood.TileHeight, L: -1, N: first / torchwood.TileWidth, W: int(min(torchwood.TileWidth, l.N-first))}
			path := torchwood.TilePath(t)
			data, err := l.src.ReadFile(ctx, path)
			if err != nil {
				yield(auditEntry{}, fmt.Errorf("reading %s of the verified log: %w", path, err))
				return
			}
			indexes := make([]int64, t.W)
			for i := range indexes {
				indexes[i] = tlog.StoredHashIndex(0, first+int64(i))
			}
			want, err := hr.ReadHashes(indexes)
			if err != nil {
				yield(auditEntry{}, fmt.Errorf("%w: reading the leaves %d to %d of the verified tree: %v", audit.ErrTiles, first, first+int64(t.W)-1, err))
				return
			}
			bundle := make([]auditEntry, t.W)
			for i := range bundle {
				e, rest, err := torchwood.ReadTileEntry(data)
				if err != nil || tlog.RecordHash(e) != want[i] {
					yield(auditEntry{}, fmt.Errorf("%w: entry %d, read again from %s, is not the one verified: the source's answers change", audit.ErrEntryChanged, first+int64(i), path))
					return
				}
				data = rest
				bundle[i] = auditEntry{Index: first + int64(i), Data: e}
			}
			if len(data) != 0 {
				yield(auditEntry{}, fmt.Errorf("%w: %s, read again, holds more entries than the verified tree", audit.ErrEntryChanged, path))
				return
			}
			parseEntries(bundle)
			for _, e := range bundle {
				if !yield(e, nil) {
					return
				}
			}
		}
	}
}

// parseEntries parses the entries of a bundle on every CPU: parsing, which
// checks an entry's one encoding, costs more than reading and hashing.
func parseEntries(es []auditEntry) {
	workers := min(runtime.GOMAXPROCS(0), len(es))
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(es); i += workers {
				es[i].Entry, es[i].Err = audit.ParseEntry(es[i].Data)
			}
		}()
	}
	wg.Wait()
}

// Prove returns the inclusion proof of entry index, whose bytes are
// entry, in the verified checkpoint, checked. The proof carries the
// checkpoint with its cosignatures, and entry as its extra data.
func (l *auditedLog) Prove(ctx context.Context, index int64, entry []byte) (audit.Proof, error) {
	p, err := audit.Prove(ctx, l.src, index)
	if err != nil {
		return audit.Proof{}, err
	}
	p.Extra = bytes.Clone(entry)
	if _, err := audit.VerifyProof(p, entry, l.opts); err != nil {
		return audit.Proof{}, fmt.Errorf("the inclusion proof of entry %d does not verify: %w", index, err)
	}
	return p, nil
}

// hashTiles reads hash tiles from a source for tlog's tile hash reader,
// keeping the last few it authenticated: the entries are read in order,
// so the tiles on the path from the current bundle to the root and those
// of the tree's right edge, read for each bundle, stay in it.
type hashTiles struct {
	src audit.Source

	mu    sync.Mutex
	cache []tileData // most recently saved last
}

type tileData struct {
	t    tlog.Tile
	data []byte
}

// maxCachedTiles bounds hashTiles's cache: more than two tiles for each of
// the at most 8 levels.
const maxCachedTiles = 32

func newHashTiles(src audit.Source) *hashTiles { return &hashTiles{src: src} }

func (h *hashTiles) ReadTiles(ctx context.Context, tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, t := range tiles {
		h.mu.Lock()
		j := slices.IndexFunc(h.cache, func(c tileData) bool { return c.t == t })
		if j >= 0 {
			out[i] = h.cache[j].data
		}
		h.mu.Unlock()
		if out[i] != nil {
			continue
		}
		path := torchwood.TilePath(t)
		data, err := h.src.ReadFile(ctx, path)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", path, err)
		}
		if len(data) != t.W*tlog.HashSize {
			return nil, fmt.Errorf("%s holds %d bytes, want %d", path, len(data), t.W*tlog.HashSize)
		}
		out[i] = data
	}
	return out, nil
}

func (h *hashTiles) SaveTiles(tiles []tlog.Tile, data [][]byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, t := range tiles {
		h.cache = slices.DeleteFunc(h.cache, func(c tileData) bool { return c.t == t })
		h.cache = append(h.cache, tileData{t, data[i]})
	}
	if n := len(h.cache) - maxCachedTiles; n > 0 {
		h.cache = slices.Delete(h.cache, 0, n)
	}
}

func (h *hashTiles) ReadEndpoint(ctx context.Context, path string) ([]byte, error) {
	return h.src.ReadFile(ctx, path)
}

// auditState is the checkpoint an auditor saved after its last
// verification of one log, locked while it is used.
type auditState struct {
	path  string // "" keeps no state
	lock  *os.File
	saved []byte // nil if none was saved
}

// lockAuditState locks the saved checkpoint at path (with the lock file
// path+".lock", created beside it) and reads it. It fails at once if
// another process holds the lock.
func lockAuditState(path string) (*auditState, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("audit state: %w", err)
	}
	f, err := os.OpenFile(path+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit state: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("the saved checkpoint %s is in use by another evx audit or evx report command: try again when it is done", path)
		}
		return nil, fmt.Errorf("audit state: locking %s: %w", path+".lock", err)
	}
	st := &auditState{path: path, lock: f}
	data, err := crypto.ReadFileLimit(path, maxSavedCheckpoint)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		st.unlock()
		return nil, fmt.Errorf("reading the saved checkpoint: %w", err)
	default:
		st.saved = data
	}
	return st, nil
}

// save replaces the saved checkpoint with signed, atomically and durably.
func (s *auditState) save(signed []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(s.path), ".checkpoint-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(signed); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), s.path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(s.path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func (s *auditState) unlock() {
	if s.lock != nil {
		s.lock.Close() // releases the flock
		s.lock = nil
	}
}

// exportProfileLog copies the transfer log of the profile's gateway into
// dir, as evx audit export does, then verifies the copy as evx audit
// verify --dir --profile would and saves its checkpoint beside the
// profile. The export's keys file holds the keys the profile pins. If the
// copy does not verify, dir keeps it, as evidence, and the error names the
// failure.
func exportProfileLog(ctx context.Context, profile, dir string, o auditOptions) (*auditedLog, error) {
	path, from, err := profilePath(profile, os.Getenv)
	if err != nil {
		return nil, err
	}
	l, err := exportProfileAt(ctx, path, dir, o)
	if err != nil && from == profileEnv {
		err = fmt.Errorf("%s: %w", profileEnv, err)
	}
	return l, err
}

func exportProfileAt(ctx context.Context, path, dir string, o auditOptions) (*auditedLog, error) {
	if err := crypto.CheckOutputDir(dir); err != nil {
		return nil, err
	}
	p, keys, c, err := profileAuditClient(path)
	if err != nil {
		return nil, err
	}
	opts, gw, st, err := pinnedState(p, keys)
	if err != nil {
		return nil, err
	}
	defer st.unlock()
	src := c.Log()
	signed, err := waitCosigned(ctx, src, opts, o)
	if err != nil {
		return nil, err
	}
	if _, err := audit.Export(ctx, pinnedSource{src, signed}, dir, audit.ExportOptions{LogKey: keys.Log, WitnessKeys: keys.Witnesses}); err != nil {
		return nil, fmt.Errorf("exporting the transfer log of %s from the gateway at %s: %w", gw, c.Gateway(), err)
	}
	// What is verified is the copy, as it was written, not what the
	// gateway would answer now.
	exported := audit.Dir(dir)
	signed, err = exported.ReadFile(ctx, "checkpoint")
	if err != nil {
		return nil, err
	}
	l, err := verifyPinned(ctx, pinnedSource{exported, signed}, gw, keys, "export "+dir+" of the gateway at "+c.Gateway(), opts, st)
	if err != nil {
		return nil, err
	}
	l.ExportKeys = &audit.Keys{Log: keys.Log, Witnesses: keys.Witnesses}
	return l, nil
}
