package audit

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"evx/storage"

	"golang.org/x/mod/sumdb/tlog"
)

// A batch object, "log/batch/<first index>", is the claim on the indexes
// [first, first+count) and the durable record of their entries:
//
//	"evxlogb1"            8 bytes, format and version
//	nonce                 16 bytes, random per Log: tells a writer its own
//	                      batch from another writer's with the same entries
//	count                 uint32, big-endian, 1 to 4096
//	count times:          uint16 length (big-endian, 1 to 65535), entry
const (
	batchPrefix = "log/batch/"
	batchMagic  = "evxlogb1"
	batchHeader = len(batchMagic) + 16 + 4
	// maxBatchObject bounds a batch object anyone may have written.
	maxBatchObject = batchHeader + maxMaxBatch*(2+MaxEntrySize)
)

func batchKey(i int64) string { return fmt.Sprintf("%s%020d", batchPrefix, i) }

func encodeBatch(nonce [16]byte, entries [][]byte) []byte {
	n := batchHeader
	for _, e := range entries {
		n += 2 + len(e)
	}
	b := make([]byte, 0, n)
	b = append(b, batchMagic...)
	b = append(b, nonce[:]...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(entries)))
	for _, e := range entries {
		b = binary.BigEndian.AppendUint16(b, uint16(len(e)))
		b = append(b, e...)
	}
	return b
}

// parseBatchHeader returns the entry count of a batch header.
func parseBatchHeader(h []byte) (int, error) {
	if len(h) < batchHeader || string(h[:len(batchMagic)]) != batchMagic {
		return 0, errors.New("not a batch of this format")
	}
	count := binary.BigEndian.Uint32(h[batchHeader-4:])
	if count < 1 || count > maxMaxBatch {
		return 0, fmt.Errorf("batch of %d entries", count)
	}
	return int(count), nil
}

func decodeBatch(b []byte) ([][]byte, error) {
	count, err := parseBatchHeader(b)
	if err != nil {
		return nil, err
	}
	entries := make([][]byte, 0, count)
	for rest := b[batchHeader:]; len(rest) > 0; {
		if len(rest) < 2 {
			return nil, errors.New("batch ends inside an entry length")
		}
		n := int(binary.BigEndian.Uint16(rest))
		if n == 0 || len(rest) < 2+n {
			return nil, errors.New("batch holds an empty or truncated entry")
		}
		entries = append(entries, rest[2:2+n:2+n])
		rest = rest[2+n:]
	}
	if len(entries) != count {
		return nil, fmt.Errorf("batch holds %d entries, its header says %d", len(entries), count)
	}
	return entries, nil
}

// readBatch reads and decodes the batch stored at index i.
func (l *Log) readBatch(ctx context.Context, i int64) ([][]byte, error) {
	data, err := l.readObject(ctx, batchKey(i), int64(maxBatchObject))
	if err != nil {
		return nil, err
	}
	entries, err := decodeBatch(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", batchKey(i), err)
	}
	return entries, nil
}

// batchCount reads the entry count of the batch stored at index i.
func (l *Log) batchCount(ctx context.Context, i int64) (int, error) {
	o, err := l.st.Open(ctx, batchKey(i))
	if err != nil {
		return 0, err
	}
	defer o.Close()
	h := make([]byte, batchHeader)
	if _, err := o.ReadAt(h, 0); err != nil {
		return 0, fmt.Errorf("reading %s: %w", batchKey(i), err)
	}
	n, err := parseBatchHeader(h)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", batchKey(i), err)
	}
	return n, nil
}

// sequencer groups concurrent Appends into batches and writes them one at
// a time, each at the index after the previous one. One batch at a time is
// what makes claims safe: a writer only ever claims the index just after
// the end of the sequence it has seen, so a claim either finds that index
// taken (ErrExist) or is the true end of the sequence. Two batches in
// flight at once could claim an index inside another writer's batch.
//
// The writer is one of the appenders of the batch (the leader), never a
// goroutine of its own: when it is done it passes the lead to an appender
// of the next batch.
type sequencer struct {
	// mu (Log.seq.mu) guards the fields up to busy.
	mu    sync.Mutex
	open  *batch   // batch taking entries, if any
	queue []*batch // full batches waiting, oldest first
	busy  bool     // some batch holds the lead
	// lastStart is when the last batch began to be written.
	lastStart time.Time

	// next and probe belong to the leader of the moment.
	next  int64 // the index to claim next
	probe bool  // next must be checked against storage first
	// conflicts counts the indexes other writers took first.
	conflicts int64
}

type batch struct {
	entries [][]byte
	size    int
	waiters int  // appenders still waiting for the batch
	granted bool // the lead was passed to the batch
	claimed bool // an appender took the lead
	// full is closed when the batch stops taking entries while its leader
	// waits for more; lead when the lead passes to it; done when it is
	// stored or failed, with first and err set.
	full, lead, done chan struct{}
	first            int64
	err              error
}

func newBatch() *batch {
	return &batch{full: make(chan struct{}), lead: make(chan struct{}), done: make(chan struct{})}
}

// errAbandoned fails a batch whose appenders all gave up before it could
// be written.
var errAbandoned = errors.New("batch abandoned by all its appenders")

// Append adds entry to the log and returns its index and leaf hash (the
// RFC 6962 hash of the entry) once it is durable: stored in a batch that
// the log will integrate, by this process or, after a crash, by the next
// one. entry must be 1 to MaxEntrySize bytes; Append does not keep it.
//
// Concurrent Appends are stored together in batches. If Append fails, or
// ctx is done before it returns, the entry may or may not be in the log.
func (l *Log) Append(ctx context.Context, entry []byte) (int64, tlog.Hash, error) {
	i, err := l.AppendAll(ctx, [][]byte{entry})
	if err != nil {
		return 0, tlog.Hash{}, err
	}
	return i, tlog.RecordHash(entry), nil
}

// maxAppendAll bounds the entries of one AppendAll, which go into one batch
// whatever the log's MaxBatch.
const maxAppendAll = 16

// AppendAll adds entries to the log, one after the other in one batch, and
// returns the index of the first once all are durable: one storage write
// for events that happen together. It takes 1 to 16 entries, each as
// Append does, and fails as Append does, for all of them.
func (l *Log) AppendAll(ctx context.Context, entries [][]byte) (int64, error) {
	if len(entries) == 0 || len(entries) > maxAppendAll {
		return 0, fmt.Errorf("%d entries appended at once: want 1 to %d", len(entries), maxAppendAll)
	}
	size := 0
	own := make([][]byte, len(entries))
	for i, e := range entries {
		if len(e) == 0 || len(e) > MaxEntrySize {
			return 0, fmt.Errorf("entry of %d bytes: entries are 1 to %d bytes", len(e), MaxEntrySize)
		}
		own[i] = bytes.Clone(e)
		size += len(e)
	}
	entries = own
	s := &l.seq
	s.mu.Lock()
	b := s.open
	if b != nil && (len(b.entries)+len(entries) > max(l.cfg.MaxBatch, len(entries)) || b.size+size > maxBatchBytes) {
		// The entries go together or not at all: b is full for them.
		l.closeOpenLocked()
		b = nil
	}
	if b == nil {
		b = newBatch()
		s.open = b
	}
	k := len(b.entries)
	b.entries = append(b.entries, entries...)
	b.size += size
	b.waiters++
	if len(b.entries) >= l.cfg.MaxBatch || b.size > maxBatchBytes-MaxEntrySize {
		l.closeOpenLocked()
	}
	leader := false
	if !s.busy {
		// Nothing is being written: write this batch at once.
		s.busy = true
		if s.open == b {
			s.open = nil
		} else {
			// b was just closed and queued, and nothing was queued before
			// it: nobody holds the lead while the queue is not empty.
			s.queue = s.queue[1:]
		}
		b.granted, b.claimed = true, true
		leader = true
	}
	s.mu.Unlock()
	if leader {
		l.lead(b)
	}
	leadCh := b.lead
	for {
		select {
		case <-b.done:
			if b.err != nil {
				return 0, b.err
			}
			return b.first + int64(k), nil
		case <-leadCh:
			leadCh = nil
			s.mu.Lock()
			claim := !b.claimed
			b.claimed = true
			s.mu.Unlock()
			if claim {
				l.lead(b)
			}
		case <-ctx.Done():
			l.leave(b)
			return 0, fmt.Errorf("appending to the transfer log: %w", ctx.Err())
		}
	}
}

// closeOpenLocked stops the open batch taking entries.
func (l *Log) closeOpenLocked() {
	s := &l.seq
	b := s.open
	s.open = nil
	close(b.full)
	if !b.granted {
		s.queue = append(s.queue, b)
	}
}

// leave records that an appender of b stopped waiting. If b holds the
// lead and nobody is left to take it, b is dropped and the lead passes on.
func (l *Log) leave(b *batch) {
	s := &l.seq
	s.mu.Lock()
	defer s.mu.Unlock()
	b.waiters--
	if b.granted && !b.claimed && b.waiters == 0 {
		b.claimed = true
		if s.open == b {
			s.open = nil
		}
		b.err = errAbandoned
		close(b.done)
		l.handoffLocked()
	}
}

// lead writes b, whose lead the caller holds, and passes the lead on.
func (l *Log) lead(b *batch) {
	s := &l.seq
	s.mu.Lock()
	if s.open == b {
		// b was still open when it got the lead, after another batch was
		// written: it fills up until BatchWait after that write began.
		// Entries that came during the write go at once if it took that
		// long; otherwise the wait bounds the rate of batches, and so of
		// storage requests, under load.
		wait := l.cfg.BatchWait - time.Since(s.lastStart)
		s.mu.Unlock()
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-b.full:
			}
			t.Stop()
		}
		s.mu.Lock()
		if s.open == b {
			l.closeOpenLocked()
		}
	}
	s.lastStart = time.Now()
	s.mu.Unlock()

	b.first, b.err = l.writeBatch(b.entries)
	close(b.done)

	s.mu.Lock()
	l.handoffLocked()
	s.mu.Unlock()
}

// handoffLocked passes the lead to the next batch with appenders waiting,
// or frees it.
func (l *Log) handoffLocked() {
	s := &l.seq
	for {
		var b *batch
		switch {
		case len(s.queue) > 0:
			b = s.queue[0]
			s.queue = s.queue[1:]
		case s.open != nil:
			b = s.open
		default:
			s.busy = false
			return
		}
		if b.waiters == 0 {
			// Every appender gave up: nobody is told of its fate.
			if s.open == b {
				s.open = nil
			}
			b.granted, b.claimed = true, true
			b.err = errAbandoned
			close(b.done)
			continue
		}
		b.granted = true
		close(b.lead)
		return
	}
}

// writeBatch stores entries as a batch at the next free index and returns
// that index. It runs in the leader only.
func (l *Log) writeBatch(entries [][]byte) (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), batchWriteTimeout)
	defer cancel()
	s := &l.seq
	data := encodeBatch(l.nonce, entries)
	for range maxClaims {
		if s.probe {
			if err := l.findEnd(ctx); err != nil {
				return 0, err
			}
			s.probe = false
		}
		i := s.next
		err := l.st.Create(ctx, batchKey(i), bytes.NewReader(data), int64(len(data)))
		if err != nil {
			// The batch may be stored all the same (a lost answer), and
			// ErrExist may be our own earlier attempt.
			stored, rerr := l.readObject(ctx, batchKey(i), int64(len(data)))
			switch {
			case rerr == nil && bytes.Equal(stored, data):
				err = nil
			case errors.Is(err, storage.ErrExist):
				// Another writer took the index: find the new end.
				s.probe = true
				s.conflicts++
				continue
			default:
				s.probe = true
				return 0, fmt.Errorf("storing entries in the transfer log: %w", err)
			}
		}
		s.next = i + int64(len(entries))
		if end := s.next; end > l.acked.Load() {
			l.acked.Store(end)
		}
		l.noteStored(s.next)
		select {
		case l.kick <- struct{}{}:
		default:
		}
		return i, nil
	}
	return 0, fmt.Errorf("storing entries in the transfer log: other writers took the next index %d times in a row", maxClaims)
}

// findEnd sets next to the end of the sequence of stored batches.
func (l *Log) findEnd(ctx context.Context) error {
	s := &l.seq
	n := max(s.next, l.latest().N)
	for {
		count, err := l.batchCount(ctx, n)
		if errors.Is(err, storage.ErrNotExist) {
			s.next = n
			return nil
		}
		if err != nil {
			return fmt.Errorf("looking for the end of the transfer log: %w", err)
		}
		n += int64(count)
	}
}
