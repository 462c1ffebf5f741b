package gateway

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"evx/api"
	"evx/crypto"
	"evx/storage"

	"filippo.io/torchwood"
	"golang.org/x/mod/sumdb/note"
)

// The auditor's endpoints serve the transfer log as an audit.Source over
// the API (docs/api.md 3.11): GET /v1/log/checkpoint, /v1/log/checkpoints/<size>
// and /v1/log/tile/..., the files a verifier reads, and GET
// /v1/log/checkpoints, the sizes of the earlier checkpoints. Only auditors
// read them: the entries name every bundle, its purpose and legal basis.
// Operators, and auditors, read GET /v1/log/status, which reveals no entry.
// Nothing here is trusted by the reader: it verifies what it reads against
// the log key it pinned.

// maxLogPath bounds a path under /v1/log/: the longest valid one, a
// partial entry bundle at the largest index, is under 50 bytes.
const maxLogPath = 64

// maxTileLevel is the highest level of a tile: its hashes are at level
// 8×7 = 56, the highest multiple of 8 in a tree of at most 2^63 entries.
const maxTileLevel = 63 / torchwood.TileHeight

// latestCheckpointKey is where the log keeps its latest checkpoint in
// storage (docs/audit.md 4.5): its modification time is when it was
// published.
const latestCheckpointKey = "log/checkpoint"

// logFileKind is what a valid path under /v1/log/ names.
type logFileKind int

const (
	logCheckpoint logFileKind = iota // the latest checkpoint: changes
	logHistory                       // an earlier checkpoint: cosignatures may be added
	logTile                          // a tile or entry bundle: immutable
)

// parseLogPath checks that path is a file of the log's layout, in its one
// canonical form: "checkpoint", "checkpoints/<size>" with the size in
// decimal without leading zeros, or a c2sp.org/tlog-tiles path of a tile
// of height 8, level 0 to 7 (or entries) and width 1 to 256.
func parseLogPath(path string) (logFileKind, error) {
	bad := func(why string) error {
		return api.Errorf(api.CodeBadLogPath, "%q is not a file of the transfer log: %s", truncateRunes(path, maxLogPath), why)
	}
	if len(path) > maxLogPath {
		return 0, bad(fmt.Sprintf("longer than %d bytes", maxLogPath))
	}
	for _, c := range []byte(path) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '/') {
			return 0, bad("want checkpoint, checkpoints/<size> or tile/...")
		}
	}
	switch {
	case path == "checkpoint":
		return logCheckpoint, nil
	case strings.HasPrefix(path, "checkpoints/"):
		s := strings.TrimPrefix(path, "checkpoints/")
		if n, err := strconv.ParseInt(s, 10, 64); err != nil || n < 0 || strconv.FormatInt(n, 10) != s {
			return 0, bad("want checkpoints/<size>, the size in decimal without leading zeros")
		}
		return logHistory, nil
	case strings.HasPrefix(path, "tile/"):
		t, err := torchwood.ParseTilePath(path)
		if err != nil || t.H != torchwood.TileHeight || t.L > maxTileLevel || t.W < 1 || t.W > torchwood.TileWidth || torchwood.TilePath(t) != path {
			return 0, bad("want a tile path of c2sp.org/tlog-tiles, such as tile/0/x001/234, tile/1/000.p/7 or tile/entries/000")
		}
		return logTile, nil
	}
	return 0, bad("want checkpoint, checkpoints/<size> or tile/...")
}

// truncateRunes cuts s to at most n bytes, at a character boundary, for
// quoting a caller's input.
func truncateRunes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xc0 == 0x80 {
		n--
	}
	return s[:n] + "…"
}

// logFile serves a file of the log: GET /v1/log/{path...}.
func (g *Gateway) logFile(w http.ResponseWriter, r *http.Request, _ User) (any, error) {
	path := r.PathValue("path")
	kind, err := parseLogPath(path)
	if err != nil {
		return nil, err
	}
	data, err := g.tlog.ReadFile(r.Context(), path)
	if errors.Is(err, storage.ErrNotExist) {
		return nil, api.Errorf(api.CodeNotInLog, "no %s in the transfer log of %s", path, g.opts.ID)
	}
	if err != nil {
		return nil, err
	}
	h := w.Header()
	switch kind {
	case logTile:
		// A tile's path names its contents for good: a wider tile has
		// another path.
		h.Set("Content-Type", "application/octet-stream")
		h.Set("Cache-Control", "private, max-age=31536000, immutable")
	default:
		// Checkpoints change: the latest one, and the cosignatures
		// served with each.
		h.Set("Content-Type", "text/plain; charset=utf-8")
		h.Set("Cache-Control", "no-store")
	}
	h.Set("Content-Length", strconv.Itoa(len(data)))
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	w.Write(data)
	return nil, nil
}

// logCheckpoints lists the sizes of the earlier checkpoints: GET
// /v1/log/checkpoints[?from=N].
func (g *Gateway) logCheckpoints(_ http.ResponseWriter, r *http.Request, _ User) (any, error) {
	var from int64
	if s := r.URL.Query().Get("from"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 || strconv.FormatInt(n, 10) != s {
			return nil, api.Errorf(api.CodeBadFrom, "from=%q: want a tree size, a whole number from 0", truncateRunes(s, 40))
		}
		from = n
	}
	sizes, err := g.tlog.CheckpointSizes(r.Context())
	if err != nil {
		return nil, err
	}
	i, _ := slices.BinarySearch(sizes, from)
	out := &api.LogCheckpoints{Sizes: sizes[i:]}
	if len(out.Sizes) > api.MaxLogCheckpoints {
		out.Sizes, out.Truncated = out.Sizes[:api.MaxLogCheckpoints], true
	}
	if out.Sizes == nil {
		out.Sizes = []int64{}
	}
	return out, nil
}

// logStatus answers GET /v1/log/status: the latest checkpoint's size and
// age, and which peers have cosigned it.
func (g *Gateway) logStatus(_ http.ResponseWriter, r *http.Request, _ User) (any, error) {
	ctx := r.Context()
	signed, err := g.tlog.ReadFile(ctx, "checkpoint")
	if err != nil {
		return nil, err
	}
	info, err := g.opts.Storage.Stat(ctx, latestCheckpointKey)
	if err != nil {
		return nil, err
	}
	origin := crypto.LogOrigin(g.opts.ID)
	logV, err := note.NewVerifier(g.opts.SigningKey.CheckpointVerifierKey(origin))
	if err != nil {
		return nil, err
	}
	n, err := note.Open(signed, note.VerifierList(logV))
	if err != nil {
		return nil, fmt.Errorf("the latest checkpoint in storage does not verify under the gateway's own log key: %w", err)
	}
	c, err := torchwood.ParseCheckpoint(n.Text)
	if err != nil {
		return nil, fmt.Errorf("the latest checkpoint in storage: %w", err)
	}
	st := &api.LogStatus{Origin: c.Origin, Size: c.N, RootHash: base64.StdEncoding.EncodeToString(c.Hash[:]),
		Published: info.Modified.UTC(), AgeSeconds: g.now().Sub(info.Modified).Round(time.Millisecond).Seconds(),
		Witnesses: []api.LogWitness{}}
	set := g.settings()
	for _, id := range set.peerIDs() {
		wit := api.LogWitness{Peer: id, Name: crypto.WitnessName(id)}
		wit.Cosigned = cosignedAt(signed, logV, set.peers[id].WitnessKey)
		st.Witnesses = append(st.Witnesses, wit)
	}
	return st, nil
}

// cosignedAt returns the time of the cosignature on signed by the witness
// whose verifier key is vkey, if there is one and it verifies.
func cosignedAt(signed []byte, logV note.Verifier, vkey string) *time.Time {
	wv, err := crypto.ParseWitnessVerifierKey(vkey)
	if err != nil {
		return nil
	}
	n, err := note.Open(signed, note.VerifierList(logV, wv))
	if err != nil {
		return nil
	}
	for _, s := range n.Sigs {
		if s.Name == wv.Name() && s.Hash == wv.KeyHash() {
			if ts, err := torchwood.CosignatureTimestamp(s); err == nil {
				t := time.Unix(ts, 0).UTC()
				return &t
			}
		}
	}
	return nil
}
