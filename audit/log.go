package audit

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"evx/storage"

	"filippo.io/torchwood"
	"go.uber.org/zap"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// MaxEntrySize is the longest entry, in bytes: an entry bundle prefixes
// each entry with its length as a 16-bit number.
const MaxEntrySize = 0xFFFF

// Defaults and limits of [Config].
const (
	DefaultBatchWait = 2 * time.Millisecond
	DefaultMaxBatch  = 256
	// maxMaxBatch bounds MaxBatch, and what a reader accepts in a batch
	// written by any process.
	maxMaxBatch = 4096
)

const (
	// maxBatchBytes bounds the entries of one batch: a batch is closed
	// before an entry would take it over.
	maxBatchBytes = 4 << 20
	// batchWriteTimeout bounds the writing of one batch, which is done on
	// behalf of all its appenders and so does not use any one's context.
	batchWriteTimeout = 30 * time.Second
	// maxClaims bounds the attempts at claiming an index for one batch
	// while other writers keep claiming them first.
	maxClaims = 64
	// pollInterval is how often Run looks for batches and checkpoints that
	// other processes wrote; batches of this Log wake it at once.
	pollInterval = 250 * time.Millisecond
	// minRoundInterval spaces integration rounds, which bounds the number
	// of partial tiles and checkpoints written under load (at most ten a
	// second) while keeping every batch within a second of a checkpoint.
	minRoundInterval = 100 * time.Millisecond
	// maxRoundEntries and maxRoundBytes bound the entries one integration
	// round holds in memory; a backlog takes several rounds.
	maxRoundEntries = 1 << 16
	maxRoundBytes   = 64 << 20
	// tileWriters is how many tiles a round writes at once.
	tileWriters = 8
)

// Config configures a [Log].
type Config struct {
	// Origin names the log: the first line of its checkpoints, such as
	// "evx.transfer-log/DE". It is also the name of the checkpoint key.
	Origin string
	// Signer signs checkpoints; its name is Origin.
	Signer note.Signer
	// Verifier is Signer's verifier: the log checks with it the
	// checkpoints it reads back, which other processes may have written.
	Verifier note.Verifier
	// Logger receives the log's own events (failed rounds, forks); nil
	// means none.
	Logger *zap.Logger
	// Now is the clock of the integration delays the log reports; nil
	// means time.Now.
	Now func() time.Time
	// BatchWait spaces the batches written one after the other: a batch
	// whose entries came while another one was being written stays open
	// until BatchWait after that write began, or until it holds MaxBatch
	// entries. A batch is written at once when nothing else is. Zero
	// means DefaultBatchWait.
	BatchWait time.Duration
	// MaxBatch is the most entries in one batch, at most 4096; zero means
	// DefaultMaxBatch.
	MaxBatch int
}

// Log is a transfer log kept in a [storage.Backend]. Its methods are safe for
// concurrent use. [Log.Run] must run for appended entries to be
// integrated into checkpoints.
type Log struct {
	st    storage.Backend
	cfg   Config
	log   *zap.Logger
	nonce [16]byte // tells this Log's batches from other writers' equal ones
	tiles *tileCache

	kick    chan struct{} // wakes Run when a batch is durable
	running atomic.Bool

	seq sequencer

	// acked is the end of the last batch this Log stored: Sync waits for
	// a checkpoint at least that large.
	acked atomic.Int64

	mu      sync.Mutex
	cur     published     // latest checkpoint known to be published
	changed chan struct{} // closed and replaced when cur changes

	// edge is the tree of the last round, owned by Run (and by Open
	// before Run starts); it may be ahead of cur if publishing failed.
	edge *edge

	// stored holds the ends of this Log's batches and when they were
	// stored, until a checkpoint covers them, to report late ones.
	stored []storedBatch // guarded by mu
}

type storedBatch struct {
	end int64
	at  time.Time
}

// maxIntegrationDelay is the promise: every batch is in a published
// checkpoint this long after it was stored.
const maxIntegrationDelay = time.Second

// maxStoredBatches bounds Log.stored while integration is stuck.
const maxStoredBatches = 1024

// published is a checkpoint stored as the latest one.
type published struct {
	tlog.Tree
	signed []byte
}

// Open opens the log kept in st, creating it (with a checkpoint of size
// zero) if st holds none. It reads the latest checkpoint and the right edge
// of its tree, and checks them against cfg.Verifier.
func Open(ctx context.Context, st storage.Backend, cfg Config) (*Log, error) {
	switch {
	case !validKeyName(cfg.Origin):
		return nil, fmt.Errorf("invalid log origin %q", cfg.Origin)
	case cfg.Signer == nil || cfg.Verifier == nil:
		return nil, errors.New("log needs a checkpoint signer and its verifier")
	case cfg.Signer.Name() != cfg.Origin:
		return nil, fmt.Errorf("checkpoint signer is named %q, want the origin %q", cfg.Signer.Name(), cfg.Origin)
	case cfg.Verifier.Name() != cfg.Signer.Name() || cfg.Verifier.KeyHash() != cfg.Signer.KeyHash():
		return nil, fmt.Errorf("checkpoint verifier %s is not the signer's key %s+%08x", keyName(cfg.Verifier), cfg.Signer.Name(), cfg.Signer.KeyHash())
	case cfg.MaxBatch < 0 || cfg.MaxBatch > maxMaxBatch:
		return nil, fmt.Errorf("MaxBatch %d is not between 1 and %d", cfg.MaxBatch, maxMaxBatch)
	case cfg.BatchWait < 0:
		return nil, fmt.Errorf("negative BatchWait %v", cfg.BatchWait)
	}
	if cfg.MaxBatch == 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	if cfg.BatchWait == 0 {
		cfg.BatchWait = DefaultBatchWait
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	l := &Log{
		st:      st,
		cfg:     cfg,
		log:     cfg.Logger,
		tiles:   newTileCache(st),
		kick:    make(chan struct{}, 1),
		changed: make(chan struct{}),
	}
	if l.log == nil {
		l.log = zap.NewNop()
	}
	if _, err := rand.Read(l.nonce[:]); err != nil {
		return nil, err
	}
	signed, _, c, err := l.readLatest(ctx)
	if errors.Is(err, storage.ErrNotExist) {
		signed, c, err = l.create(ctx)
	}
	if err != nil {
		return nil, err
	}
	e, err := l.loadEdge(ctx, c.Tree)
	if err != nil {
		return nil, err
	}
	l.edge = e
	l.cur = published{Tree: c.Tree, signed: signed}
	l.seq.next = c.N
	l.seq.probe = true
	return l, nil
}

// create publishes the checkpoint of the empty tree, unless another
// process does so first.
func (l *Log) create(ctx context.Context) ([]byte, torchwood.Checkpoint, error) {
	empty := tlog.Tree{N: 0, Hash: emptyTreeHash}
	signed, err := signCheckpoint(l.cfg.Origin, empty, l.cfg.Signer)
	if err != nil {
		return nil, torchwood.Checkpoint{}, err
	}
	if err := l.createOnce(ctx, historyKey(0), signed); err != nil {
		return nil, torchwood.Checkpoint{}, err
	}
	_, err = l.st.Replace(ctx, latestKey, signed, "")
	if err != nil && !errors.Is(err, storage.ErrVersionMismatch) {
		return nil, torchwood.Checkpoint{}, fmt.Errorf("creating the log: %w", err)
	}
	// Whoever won, read what is there now.
	signed, _, c, err := l.readLatest(ctx)
	return signed, c, err
}

// readLatest reads and checks the latest checkpoint.
func (l *Log) readLatest(ctx context.Context) ([]byte, string, torchwood.Checkpoint, error) {
	signed, version, err := l.st.ReadVersion(ctx, latestKey, maxCheckpointSize)
	if err != nil {
		return nil, "", torchwood.Checkpoint{}, fmt.Errorf("reading the latest checkpoint: %w", err)
	}
	c, err := openCheckpoint(signed, l.cfg.Origin, l.cfg.Verifier)
	if err != nil {
		return nil, "", torchwood.Checkpoint{}, fmt.Errorf("%s: %w", latestKey, err)
	}
	return signed, version, c, nil
}

// Checkpoint returns the latest checkpoint this Log knows to be published,
// signed (without cosignatures) and parsed.
func (l *Log) Checkpoint(ctx context.Context) ([]byte, torchwood.Checkpoint, error) {
	cur := l.latest()
	return bytes.Clone(cur.signed), torchwood.Checkpoint{Origin: l.cfg.Origin, Tree: cur.Tree}, nil
}

func (l *Log) latest() published {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cur
}

// setLatest records a published checkpoint, if it is newer.
func (l *Log) setLatest(tree tlog.Tree, signed []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if tree.N <= l.cur.N {
		return
	}
	l.cur = published{Tree: tree, signed: signed}
	close(l.changed)
	l.changed = make(chan struct{})
	i := 0
	for ; i < len(l.stored) && l.stored[i].end <= tree.N; i++ {
	}
	if i > 0 {
		if d := l.cfg.Now().Sub(l.stored[0].at); d > maxIntegrationDelay {
			l.log.Warn("transfer log: entries were integrated later than promised", logSize(tree.N), zap.Duration("delay", d), zap.Duration("promised", maxIntegrationDelay))
		}
		l.stored = append(l.stored[:0], l.stored[i:]...)
	}
}

// noteStored records that a batch of this Log ending at end was stored.
func (l *Log) noteStored(end int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.stored) < maxStoredBatches {
		l.stored = append(l.stored, storedBatch{end, l.cfg.Now()})
	}
}

// Sync waits until every entry this Log has acknowledged is covered by a
// published checkpoint, or ctx is done. Run must be running.
func (l *Log) Sync(ctx context.Context) error {
	want := l.acked.Load()
	for {
		l.mu.Lock()
		n, changed := l.cur.N, l.changed
		l.mu.Unlock()
		if n >= want {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("waiting for a checkpoint of size %d (now %d): %w", want, n, ctx.Err())
		}
	}
}

func (l *Log) readObject(ctx context.Context, key string, limit int64) ([]byte, error) {
	return readObject(ctx, l.st, key, limit)
}

// readObject reads the whole object stored under key, refusing one larger
// than limit bytes.
func readObject(ctx context.Context, st storage.Backend, key string, limit int64) ([]byte, error) {
	o, err := st.Open(ctx, key)
	if err != nil {
		return nil, err
	}
	defer o.Close()
	if o.Size() > limit {
		return nil, fmt.Errorf("%s: %d bytes, more than the %d it may hold", key, o.Size(), limit)
	}
	data := make([]byte, o.Size())
	if _, err := io.ReadFull(o, data); err != nil {
		return nil, fmt.Errorf("reading %s: %w", key, err)
	}
	return data, nil
}

// createOnce stores data under key unless that very data is stored there
// already, as after a retry or when another writer computed the same
// object. Other data under key means two histories: a fork, or tampering.
func (l *Log) createOnce(ctx context.Context, key string, data []byte) error {
	err := l.st.Create(ctx, key, bytes.NewReader(data), int64(len(data)))
	if err == nil {
		return nil
	}
	// Whatever the error, the object may be stored: a lost answer, or
	// another writer's identical object.
	stored, rerr := l.readObject(ctx, key, int64(len(data)))
	if rerr == nil && bytes.Equal(stored, data) {
		return nil
	}
	if errors.Is(err, storage.ErrExist) {
		l.log.Error("stored object differs from the one computed: another history was written to this log", zap.String("key", key))
		return fmt.Errorf("%s holds other data than this log computed (a fork or tampering): %w", key, err)
	}
	return fmt.Errorf("storing %s: %w", key, err)
}

// Run integrates durable batches into the tree, writes their tiles and
// publishes a signed checkpoint, until ctx is done; then it returns nil.
// A batch is integrated within a second of being stored, by this process
// or another one. Storage failures are logged and retried. Only one Run
// may run at a time.
func (l *Log) Run(ctx context.Context) error {
	if !l.running.CompareAndSwap(false, true) {
		return errors.New("audit: Run is already running on this log")
	}
	defer l.running.Store(false)
	timer := time.NewTimer(0)
	defer timer.Stop()
	var notBefore time.Time
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-l.kick:
		case <-timer.C:
		}
		if d := time.Until(notBefore); d > 0 {
			timer.Reset(d)
			select {
			case <-ctx.Done():
				return nil
			case <-timer.C:
			}
		}
		notBefore = time.Now().Add(minRoundInterval)
		more, err := l.integrate(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			// Back off while storage keeps failing, up to a few seconds.
			failures = min(failures+1, 4)
			l.log.Error("transfer log: integration failed; retrying", zap.Error(err))
			timer.Reset(pollInterval << failures)
		case more:
			failures = 0
			timer.Reset(0)
		default:
			failures = 0
			timer.Reset(pollInterval)
		}
	}
}

// integrate runs one round: it catches up with the latest checkpoint,
// integrates the batches after it and publishes the new checkpoint. more
// says that batches were left for another round.
func (l *Log) integrate(ctx context.Context) (more bool, err error) {
	signed, version, c, err := l.readLatest(ctx)
	if err != nil {
		return false, err
	}
	e := l.edge
	switch {
	case c.N > e.n:
		// Another process got further: take its tree, after checking that
		// it extends ours.
		ne, err := l.loadEdge(ctx, c.Tree)
		if err != nil {
			return false, err
		}
		if err := l.checkPrefix(ctx, c.Tree, tlog.Tree{N: e.n, Hash: e.root}); err != nil {
			return false, err
		}
		l.edge, e = ne, ne
		l.setLatest(c.Tree, signed)
	case c.N == e.n && c.Hash != e.root:
		l.log.Error("transfer log: the latest checkpoint is of another tree of the same size", logSize(c.N))
		return false, fmt.Errorf("%s: checkpoint of size %d has root %s, this log computed %s: a fork", latestKey, c.N, c.Hash, e.root)
	case c.N == e.n:
		l.setLatest(c.Tree, signed)
	default:
		// Our tree is ahead (publishing it failed last round): the latest
		// checkpoint must be of a prefix of it.
		if err := l.checkPrefix(ctx, tlog.Tree{N: e.n, Hash: e.root}, c.Tree); err != nil {
			return false, err
		}
	}

	entries, more, err := l.collect(ctx, e.n)
	if err != nil {
		return false, err
	}
	if len(entries) > 0 {
		ne := e.clone()
		out, err := ne.extend(entries)
		if err != nil {
			return false, err
		}
		if err := l.writeTiles(ctx, out); err != nil {
			return false, err
		}
		newSigned, err := signCheckpoint(l.cfg.Origin, tlog.Tree{N: ne.n, Hash: ne.root}, l.cfg.Signer)
		if err != nil {
			return false, err
		}
		if err := l.createOnce(ctx, historyKey(ne.n), newSigned); err != nil {
			return false, err
		}
		l.edge, e = ne, ne
	}
	if c.N >= e.n {
		return more, nil
	}
	// Our tree is ahead of the latest checkpoint: publish it, unless
	// another writer publishes one at least as large first.
	newSigned, err := signCheckpoint(l.cfg.Origin, tlog.Tree{N: e.n, Hash: e.root}, l.cfg.Signer)
	if err != nil {
		return false, err
	}
	for range 8 {
		_, err := l.st.Replace(ctx, latestKey, newSigned, version)
		if err == nil {
			l.setLatest(tlog.Tree{N: e.n, Hash: e.root}, newSigned)
			return more, nil
		}
		if !errors.Is(err, storage.ErrVersionMismatch) {
			return false, fmt.Errorf("publishing checkpoint %d: %w", e.n, err)
		}
		_, version, c, err = l.readLatest(ctx)
		if err != nil {
			return false, err
		}
		if c.N >= e.n {
			// The next round takes the other writer's tree and checks it.
			return true, nil
		}
	}
	return false, fmt.Errorf("publishing checkpoint %d: the latest checkpoint keeps changing", e.n)
}

// checkPrefix checks that tree contains old: that the hash of its first
// old.N entries, read from its tiles, is old's root.
func (l *Log) checkPrefix(ctx context.Context, tree, old tlog.Tree) error {
	if old.N == 0 {
		return nil
	}
	h, err := tlog.TreeHash(old.N, torchwood.TileHashReaderWithContext(ctx, tree, l.tiles))
	if err != nil {
		return fmt.Errorf("checking the tree of size %d against the one of size %d: %w", tree.N, old.N, err)
	}
	if h != old.Hash {
		l.log.Error("transfer log: two checkpoints of different histories", logSize(tree.N), zap.Int64("other_size", old.N))
		return fmt.Errorf("the tree of size %d does not contain the tree of size %d: a fork", tree.N, old.N)
	}
	return nil
}

// collect reads the batches stored from index first on, as far as the
// limits of one round allow.
func (l *Log) collect(ctx context.Context, first int64) (entries [][]byte, more bool, err error) {
	n := 0
	for i := first; len(entries) < maxRoundEntries && n < maxRoundBytes; {
		b, err := l.readBatch(ctx, i)
		if errors.Is(err, storage.ErrNotExist) {
			return entries, false, nil
		}
		if err != nil {
			if len(entries) > 0 {
				return entries, true, nil
			}
			return nil, false, err
		}
		for _, e := range b {
			n += len(e)
		}
		entries = append(entries, b...)
		i += int64(len(b))
	}
	return entries, true, nil
}

func logSize(n int64) zap.Field { return zap.Int64("size", n) }
