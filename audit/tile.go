package audit

import (
	"container/list"
	"context"
	"crypto/sha256"
	"fmt"
	"strings"
	"sync"

	"evx/storage"

	"filippo.io/torchwood"
	"golang.org/x/mod/sumdb/tlog"
	"golang.org/x/sync/errgroup"
)

const (
	tileHeight = torchwood.TileHeight
	tileWidth  = torchwood.TileWidth
	tilePrefix = "log/"
	// tileCacheSize is how many hash tiles (at most 8 KiB each) the log
	// keeps in memory to serve proofs and to load its tree.
	tileCacheSize = 256
	// maxEntriesRead bounds the entries one call of Entries returns.
	maxEntriesRead = 4096
)

// emptyTreeHash is the root of the empty tree, SHA-256 of nothing (RFC
// 6962), which tlog.TreeHash(0, …) also returns.
var emptyTreeHash = tlog.Hash(sha256.Sum256(nil))

// maxTileSize is the largest a tile or entry bundle of t's width can be.
func maxTileSize(t tlog.Tile) int64 {
	if t.L < 0 {
		return int64(t.W) * (2 + MaxEntrySize)
	}
	return int64(t.W) * tlog.HashSize
}

// edge is the right edge of a tree: all a log needs, besides its tiles in
// storage, to add entries and compute the new tiles and root.
type edge struct {
	n    int64
	root tlog.Hash
	// last[l] is the hash of the last complete node at level l, node
	// (n>>l)-1, defined while n>>l > 0. These are all the hashes that
	// tlog.StoredHashes and tlog.TreeHash read.
	last [64]tlog.Hash
	// rows[L] holds the level 8L hashes of the partial tile at tile level
	// L: nodes n>>8L rounded down to a multiple of 256, up to n>>8L.
	rows [][]tlog.Hash
	// data holds the entries of the partial entry bundle.
	data [][]byte
}

// ReadHashes serves tlog the hashes of the last complete nodes.
func (e *edge) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		level, k := tlog.SplitStoredHashIndex(x)
		if level >= len(e.last) || e.n>>level == 0 || k != e.n>>level-1 {
			return nil, fmt.Errorf("internal error: hash %d (level %d, node %d) is not on the right edge of a tree of size %d", x, level, k, e.n)
		}
		out[i] = e.last[level]
	}
	return out, nil
}

func (e *edge) clone() *edge {
	c := *e
	c.rows = make([][]tlog.Hash, len(e.rows))
	for i, r := range e.rows {
		c.rows[i] = append([]tlog.Hash(nil), r...)
	}
	c.data = append([][]byte(nil), e.data...)
	return &c
}

// tileData is a tile or entry bundle (L = -1) and its contents.
type tileData struct {
	tile tlog.Tile
	data []byte
}

// extend adds entries to the tree and returns the tiles and entry bundles
// to store for the new tree: those completed on the way, and the partial
// ones of the new size (as tlog.NewTiles lists them).
func (e *edge) extend(entries [][]byte) ([]tileData, error) {
	var out []tileData
	var touched [64 / tileHeight]bool // tile levels that got new hashes
	for _, entry := range entries {
		hashes, err := tlog.StoredHashes(e.n, entry, e)
		if err != nil {
			return nil, err
		}
		for level, h := range hashes {
			e.last[level] = h
			if level%tileHeight != 0 {
				continue
			}
			L := level / tileHeight
			for len(e.rows) <= L {
				e.rows = append(e.rows, nil)
			}
			e.rows[L] = append(e.rows[L], h)
			touched[L] = true
			if len(e.rows[L]) == tileWidth {
				c := (e.n + 1) >> (tileHeight * L)
				out = append(out, hashTile(L, c/tileWidth-1, e.rows[L]))
				e.rows[L] = e.rows[L][:0]
			}
		}
		e.n++
		e.data = append(e.data, entry)
		if len(e.data) == tileWidth {
			b, err := bundle(e.n/tileWidth-1, e.data)
			if err != nil {
				return nil, err
			}
			out = append(out, b)
			e.data = nil
		}
	}
	for L, row := range e.rows {
		if len(row) > 0 && touched[L] {
			out = append(out, hashTile(L, (e.n>>(tileHeight*L))/tileWidth, row))
		}
	}
	if len(e.data) > 0 {
		b, err := bundle(e.n/tileWidth, e.data)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	root, err := tlog.TreeHash(e.n, e)
	if err != nil {
		return nil, err
	}
	e.root = root
	return out, nil
}

func hashTile(L int, n int64, row []tlog.Hash) tileData {
	data := make([]byte, 0, len(row)*tlog.HashSize)
	for _, h := range row {
		data = append(data, h[:]...)
	}
	return tileData{tlog.Tile{H: tileHeight, L: L, N: n, W: len(row)}, data}
}

func bundle(n int64, entries [][]byte) (tileData, error) {
	var data []byte
	for _, e := range entries {
		var err error
		if data, err = torchwood.AppendTileEntry(data, e); err != nil {
			return tileData{}, err
		}
	}
	return tileData{tlog.Tile{H: tileHeight, L: -1, N: n, W: len(entries)}, data}, nil
}

// parseBundle splits an entry bundle that must hold w entries.
func parseBundle(data []byte, w int) ([][]byte, error) {
	entries := make([][]byte, 0, w)
	for len(data) > 0 {
		e, rest, err := torchwood.ReadTileEntry(data)
		if err != nil {
			return nil, err
		}
		entries = append(entries, e)
		data = rest
	}
	if len(entries) != w {
		return entries, fmt.Errorf("bundle holds %d entries, want %d", len(entries), w)
	}
	return entries, nil
}

// loadEdge reads the right edge of tree from its tiles, which it checks
// against the tree's root.
func (l *Log) loadEdge(ctx context.Context, tree tlog.Tree) (*edge, error) {
	e := &edge{n: tree.N, root: tree.Hash}
	if tree.N == 0 {
		if tree.Hash != emptyTreeHash {
			return nil, fmt.Errorf("checkpoint of size 0 with root %s", tree.Hash)
		}
		return e, nil
	}
	var indexes []int64
	levels := 0
	for ; tree.N>>levels > 0; levels++ {
		indexes = append(indexes, tlog.StoredHashIndex(levels, tree.N>>levels-1))
	}
	for L := 0; tree.N>>(tileHeight*L) > 0; L++ {
		c := tree.N >> (tileHeight * L)
		for k := c - c%tileWidth; k < c; k++ {
			indexes = append(indexes, tlog.StoredHashIndex(tileHeight*L, k))
		}
		e.rows = append(e.rows, nil)
	}
	hashes, err := torchwood.TileHashReaderWithContext(ctx, tree, l.tiles).ReadHashes(indexes)
	if err != nil {
		return nil, fmt.Errorf("reading the tree of size %d from its tiles: %w", tree.N, err)
	}
	copy(e.last[:], hashes[:levels])
	hashes = hashes[levels:]
	for L := range e.rows {
		c := tree.N >> (tileHeight * L)
		w := int(c % tileWidth)
		e.rows[L], hashes = append([]tlog.Hash(nil), hashes[:w]...), hashes[w:]
	}
	if w := int(tree.N % tileWidth); w > 0 {
		t := tlog.Tile{H: tileHeight, L: -1, N: tree.N / tileWidth, W: w}
		data, err := l.readObject(ctx, tilePrefix+torchwood.TilePath(t), maxTileSize(t))
		if err != nil {
			return nil, err
		}
		entries, err := parseBundle(data, w)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", torchwood.TilePath(t), err)
		}
		for i, entry := range entries {
			if tlog.RecordHash(entry) != e.rows[0][i] {
				return nil, fmt.Errorf("%s: entry %d does not match the tree of size %d", torchwood.TilePath(t), t.N*tileWidth+int64(i), tree.N)
			}
		}
		e.data = entries
	}
	return e, nil
}

// writeTiles stores the tiles and bundles of a round, a few at a time.
func (l *Log) writeTiles(ctx context.Context, tiles []tileData) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(tileWriters)
	for _, t := range tiles {
		g.Go(func() error {
			return l.createOnce(ctx, tilePrefix+torchwood.TilePath(t.tile), t.data)
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	for _, t := range tiles {
		if t.tile.L >= 0 {
			l.tiles.save(t.tile, t.data)
		}
	}
	return nil
}

// tileCache reads hash tiles from storage for tlog's TileHashReader and
// keeps the ones it authenticated. It implements torchwood.TileReader.
type tileCache struct {
	// read reads a tile by its path, refusing more than limit bytes.
	read  func(ctx context.Context, path string, limit int64) ([]byte, error)
	mu    sync.Mutex
	lru   *list.List // of tileData, most recently used first
	index map[tlog.Tile]*list.Element
}

// newTileCache returns a cache of the tiles stored in st.
func newTileCache(st storage.Backend) *tileCache {
	return newTileCacheFunc(func(ctx context.Context, path string, limit int64) ([]byte, error) {
		return readObject(ctx, st, tilePrefix+path, limit)
	})
}

func newTileCacheFunc(read func(ctx context.Context, path string, limit int64) ([]byte, error)) *tileCache {
	return &tileCache{read: read, lru: list.New(), index: make(map[tlog.Tile]*list.Element)}
}

// ReadTiles returns the tiles from the cache or storage. The caller must
// not modify them.
func (c *tileCache) ReadTiles(ctx context.Context, tiles []tlog.Tile) ([][]byte, error) {
	data := make([][]byte, len(tiles))
	var missing []int
	c.mu.Lock()
	for i, t := range tiles {
		if el, ok := c.index[t]; ok {
			c.lru.MoveToFront(el)
			data[i] = el.Value.(tileData).data
		} else {
			missing = append(missing, i)
		}
	}
	c.mu.Unlock()
	g, ctx := errgroup.WithContext(ctx)
	for _, i := range missing {
		g.Go(func() error {
			t := tiles[i]
			d, err := c.read(ctx, torchwood.TilePath(t), maxTileSize(t))
			if err != nil {
				return err
			}
			if len(d) != t.W*tlog.HashSize {
				return fmt.Errorf("%s: %d bytes, want %d", torchwood.TilePath(t), len(d), t.W*tlog.HashSize)
			}
			data[i] = d
			return nil
		})
	}
	return data, g.Wait()
}

// SaveTiles caches tiles that tlog authenticated.
func (c *tileCache) SaveTiles(tiles []tlog.Tile, data [][]byte) {
	for i, t := range tiles {
		c.save(t, data[i])
	}
}

func (c *tileCache) save(t tlog.Tile, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.index[t]; ok {
		c.lru.MoveToFront(el)
		return
	}
	c.index[t] = c.lru.PushFront(tileData{t, data})
	if c.lru.Len() > tileCacheSize {
		el := c.lru.Back()
		c.lru.Remove(el)
		delete(c.index, el.Value.(tileData).tile)
	}
}

func (c *tileCache) ReadEndpoint(ctx context.Context, path string) ([]byte, error) {
	return nil, fmt.Errorf("internal error: tile cache asked for %q", path)
}

// treeAt returns the published tree of size n.
func (l *Log) treeAt(ctx context.Context, n int64) (tlog.Tree, error) {
	cur := l.latest()
	if n == cur.N {
		return cur.Tree, nil
	}
	if n < 0 || n > cur.N {
		return tlog.Tree{}, fmt.Errorf("no checkpoint of size %d: the latest is of size %d", n, cur.N)
	}
	signed, err := l.historyCheckpoint(ctx, n)
	if err != nil {
		return tlog.Tree{}, err
	}
	c, err := openCheckpoint(signed, l.cfg.Origin, l.cfg.Verifier)
	if err != nil {
		return tlog.Tree{}, err
	}
	return c.Tree, nil
}

// InclusionProof returns the proof that entry index is in the tree of the
// published checkpoint of size treeSize.
func (l *Log) InclusionProof(ctx context.Context, index, treeSize int64) (tlog.RecordProof, error) {
	if index < 0 || index >= treeSize {
		return nil, fmt.Errorf("entry %d is not in a tree of size %d", index, treeSize)
	}
	tree, err := l.treeAt(ctx, treeSize)
	if err != nil {
		return nil, err
	}
	p, err := tlog.ProveRecord(treeSize, index, torchwood.TileHashReaderWithContext(ctx, tree, l.tiles))
	if err != nil {
		return nil, fmt.Errorf("proving entry %d in the tree of size %d: %w", index, treeSize, err)
	}
	return p, nil
}

// ConsistencyProof returns the proof that the tree of size oldSize is a
// prefix of the tree of the published checkpoint of size newSize. The
// proof from size 0 (every tree extends the empty one) or to the same size
// is empty.
func (l *Log) ConsistencyProof(ctx context.Context, oldSize, newSize int64) (tlog.TreeProof, error) {
	if oldSize < 0 || oldSize > newSize {
		return nil, fmt.Errorf("no consistency proof from size %d to size %d", oldSize, newSize)
	}
	tree, err := l.treeAt(ctx, newSize)
	if err != nil {
		return nil, err
	}
	if oldSize == 0 {
		return tlog.TreeProof{}, nil
	}
	p, err := tlog.ProveTree(newSize, oldSize, torchwood.TileHashReaderWithContext(ctx, tree, l.tiles))
	if err != nil {
		return nil, fmt.Errorf("proving size %d consistent with size %d: %w", oldSize, newSize, err)
	}
	return p, nil
}

// ReadTile returns the stored bytes of a hash tile or entry bundle, by its
// c2sp.org/tlog-tiles path ("tile/0/x001/234", "tile/entries/000.p/5"),
// as stored: a reader checks them against a checkpoint.
func (l *Log) ReadTile(ctx context.Context, path string) ([]byte, error) {
	t, err := parseTilePath(path)
	if err != nil {
		return nil, err
	}
	return l.readObject(ctx, tilePrefix+path, maxTileSize(t))
}

// parseTilePath parses a tile path of height 8 in its one canonical form.
func parseTilePath(path string) (tlog.Tile, error) {
	t, err := torchwood.ParseTilePath(path)
	if err != nil || t.H != tileHeight || torchwood.TilePath(t) != path {
		return tlog.Tile{}, fmt.Errorf("invalid tile path %q", path)
	}
	return t, nil
}

// Entries returns the entries [start, end) of the latest published
// checkpoint's tree, at most 4096, checked against it.
func (l *Log) Entries(ctx context.Context, start, end int64) ([][]byte, error) {
	cur := l.latest()
	switch {
	case start < 0 || end < start || end > cur.N:
		return nil, fmt.Errorf("entries [%d, %d) are not in the tree of size %d", start, end, cur.N)
	case end-start > maxEntriesRead:
		return nil, fmt.Errorf("entries [%d, %d): at most %d at a time", start, end, maxEntriesRead)
	}
	hr := torchwood.TileHashReaderWithContext(ctx, cur.Tree, l.tiles)
	var out [][]byte
	for k := start / tileWidth; k*tileWidth < end; k++ {
		t := tlog.Tile{H: tileHeight, L: -1, N: k, W: int(min(tileWidth, cur.N-k*tileWidth))}
		data, err := l.readObject(ctx, tilePrefix+torchwood.TilePath(t), maxTileSize(t))
		if err != nil {
			return nil, err
		}
		entries, err := parseBundle(data, t.W)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", torchwood.TilePath(t), err)
		}
		indexes := make([]int64, t.W)
		for i := range indexes {
			indexes[i] = tlog.StoredHashIndex(0, k*tileWidth+int64(i))
		}
		hashes, err := hr.ReadHashes(indexes)
		if err != nil {
			return nil, err
		}
		for i, e := range entries {
			n := k*tileWidth + int64(i)
			if tlog.RecordHash(e) != hashes[i] {
				return nil, fmt.Errorf("%s: entry %d does not match the tree of size %d", torchwood.TilePath(t), n, cur.N)
			}
			if start <= n && n < end {
				out = append(out, e)
			}
		}
	}
	return out, nil
}

// ReadFile makes the log a [Source]: "checkpoint" is the latest
// checkpoint in storage, "checkpoints/<size>" one from the history, each
// with the cosignatures stored for it; "tile/..." are tiles and bundles.
func (l *Log) ReadFile(ctx context.Context, path string) ([]byte, error) {
	switch {
	case path == "checkpoint":
		signed, _, n, err := l.readLatestUnchecked(ctx)
		if err != nil || n < 0 {
			return signed, err
		}
		return l.cosign(ctx, signed, n)
	case strings.HasPrefix(path, "checkpoints/"):
		n, ok := parseSize(strings.TrimPrefix(path, "checkpoints/"))
		if !ok {
			return nil, fmt.Errorf("invalid checkpoint path %q", path)
		}
		signed, err := l.readObject(ctx, historyKey(n), maxCheckpointSize)
		if err != nil {
			return nil, err
		}
		return l.cosign(ctx, signed, n)
	case strings.HasPrefix(path, "tile/"):
		return l.ReadTile(ctx, path)
	}
	return nil, fmt.Errorf("no file %q in the transfer log", path)
}

// readLatestUnchecked reads the latest checkpoint as stored, for readers
// who check it themselves, and its size if it parses (else -1).
func (l *Log) readLatestUnchecked(ctx context.Context) ([]byte, string, int64, error) {
	signed, version, err := l.st.ReadVersion(ctx, latestKey, maxCheckpointSize)
	if err != nil {
		return nil, "", 0, err
	}
	text, _, _ := strings.Cut(string(signed), "\n\n")
	c, err := torchwood.ParseCheckpoint(text + "\n")
	if err != nil {
		return signed, version, -1, nil
	}
	return signed, version, c.N, nil
}
