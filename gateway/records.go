package gateway

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"evx/crypto"
	"evx/storage"
	"evx/transfer"
)

// Storage layout. A bundle record is its payload object and a small record
// object written after it: the record object is the commit point, so a
// bundle whose record is missing was never stored (see package storage).
//
//	outbox/<id>/payload.age   ciphertext of a bundle submitted here
//	outbox/<id>/record.json   outboxRecord: envelope, signature, submitter
//	outbox/<id>/receipt.json  the peer's signed receipt, once delivered
//	inbox/<id>/payload.age    ciphertext of a bundle received from a peer
//	inbox/<id>/record.json    inboxRecord: envelope, signature, our receipt,
//	                          and the key of the directory the sender was
//	                          checked against
//	inbox/<id>/ack-<unit>.json  a recipient's retrieval acknowledgement
//	directories/<peer>/<time>-<sha256>.json
//	                          a peer's signed unit directory (crypto.Signed)
//	                          as received, one object each time its units
//	                          change: <time> is when this gateway first got
//	                          it (20060102T150405.000000000Z, UTC), so the
//	                          latest sorts last; <sha256> is the hex SHA-256
//	                          of its signed body
//
// A kept directory is no commit point of anything: the gateway reads only the
// latest one of a peer, and verifies it against the peer's configured
// signing key before using it, since storage is not trusted.
const (
	outboxPrefix      = "outbox/"
	inboxPrefix       = "inbox/"
	directoriesPrefix = "directories/"
	payloadFile       = "payload.age"
	recordFile        = "record.json"
	receiptFile       = "receipt.json"
)

func key(box, id, file string) string { return box + id + "/" + file }

// directoryTimeLayout is the time in a kept directory's key: fixed width,
// so that keys sort in time order.
const directoryTimeLayout = "20060102T150405.000000000Z"

// directoryPrefix is the prefix of peer's kept directories.
func directoryPrefix(peer string) string { return directoriesPrefix + peer + "/" }

// directoryKey is where the signed directory of peer, first received at
// t, is kept.
func directoryKey(peer string, signed *crypto.Signed, t time.Time) string {
	sum := sha256.Sum256(signed.Body)
	return directoryPrefix(peer) + t.UTC().Format(directoryTimeLayout) + "-" + hex.EncodeToString(sum[:]) + ".json"
}

// isDirectoryKey reports whether k is the key of a kept directory of peer.
func isDirectoryKey(peer, k string) bool {
	name, ok := strings.CutPrefix(k, directoryPrefix(peer))
	if !ok {
		return false
	}
	name, ok = strings.CutSuffix(name, ".json")
	ts, sum, ok2 := strings.Cut(name, "-")
	if !ok || !ok2 || len(sum) != 2*sha256.Size || strings.ToLower(sum) != sum {
		return false
	}
	if _, err := hex.DecodeString(sum); err != nil {
		return false
	}
	_, err := time.Parse(directoryTimeLayout, ts)
	return err == nil && len(ts) == len(directoryTimeLayout)
}

// directoryKeyMatches reports whether k names the SHA-256 of signed's body.
func directoryKeyMatches(k string, signed *crypto.Signed) bool {
	sum := sha256.Sum256(signed.Body)
	return strings.HasSuffix(k, "-"+hex.EncodeToString(sum[:])+".json")
}

// outboxRecord is what a gateway keeps about a bundle it must deliver.
type outboxRecord struct {
	Envelope    []byte    `json:"envelope"`
	Signature   []byte    `json:"signature"`
	SubmittedBy string    `json:"submitted_by"`
	SubmittedAt time.Time `json:"submitted_at"`
	// Peers are the gateways to deliver to: the countries of the
	// recipients.
	Peers []string `json:"peers"`
}

// inboxRecord is what a gateway keeps about a bundle it received.
type inboxRecord struct {
	Envelope   []byte         `json:"envelope"`
	Signature  []byte         `json:"signature"`
	From       string         `json:"from"`
	ReceivedAt time.Time      `json:"received_at"`
	Receipt    *crypto.Signed `json:"receipt"`
	// SenderCheck says how the sender's signing key was checked: against
	// the sending gateway's signed directory, issued at the given time.
	SenderCheck string `json:"sender_check"`
	// SenderDirectory is the key of the kept signed directory (see the
	// layout above) that the sender's signing key was checked against;
	// empty if that directory was not kept.
	SenderDirectory string `json:"sender_directory,omitempty"`
	// Outer names the objects of the payload's outer layer
	// (retention.go); nil for a payload stored as payload.age before the
	// outer layer existed.
	Outer *outerLayer `json:"outer,omitempty"`
}

// ackRecord is a recipient's acknowledgement that it retrieved a bundle.
type ackRecord struct {
	Unit string    `json:"unit"`
	At   time.Time `json:"at"`
}

// outboxReceipt is the peer receipt stored once a bundle is delivered.
type outboxReceipt struct {
	Peer      string         `json:"peer"`
	Receipt   *crypto.Signed `json:"receipt"`
	Delivered time.Time      `json:"delivered"`
}

func putJSON(ctx context.Context, st storage.Backend, k string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return st.Create(ctx, k, bytes.NewReader(data), int64(len(data)))
}

// maxRecordSize bounds the small JSON objects a gateway reads back.
const maxRecordSize = 1 << 20

// maxDirectorySize bounds a kept directory read back: it arrived in one
// directory frame.
const maxDirectorySize = transfer.MaxDirectoryFrameSize

// errMalformedRecord is wrapped by getJSON's errors for an object too large
// to be a record, or not the JSON of one.
var errMalformedRecord = errors.New("malformed record")

// getJSON reads the record stored under k into v, in one request
// (ReadVersion, which may read any object): the reaper reads thousands a
// minute.
func getJSON(ctx context.Context, st storage.Backend, k string, v any) error {
	data, _, err := st.ReadVersion(ctx, k, maxRecordSize)
	if errors.Is(err, storage.ErrTooLarge) {
		return fmt.Errorf("%w: %q is over the limit of %d bytes", errMalformedRecord, k, maxRecordSize)
	}
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%w: %q: %w", errMalformedRecord, k, err)
	}
	return nil
}

// getJSONLimit reads the JSON object stored under k into v, refusing one
// over limit bytes before reading it: for objects larger than ReadVersion
// reads, such as kept directories.
func getJSONLimit(ctx context.Context, st storage.Backend, k string, v any, limit int64) error {
	obj, err := st.Open(ctx, k)
	if err != nil {
		return err
	}
	defer obj.Close()
	if obj.Size() > limit {
		return fmt.Errorf("%w: %q is %d bytes, over the limit of %d", errMalformedRecord, k, obj.Size(), limit)
	}
	data, err := io.ReadAll(io.LimitReader(obj, limit+1))
	if err != nil {
		return err
	}
	if int64(len(data)) > limit {
		return fmt.Errorf("%w: %q is over the limit of %d bytes", errMalformedRecord, k, limit)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%w: %q: %w", errMalformedRecord, k, err)
	}
	return nil
}

// storePayload stores a verified payload under k. An object already there
// without a record is debris of an interrupted earlier attempt (the record is
// the commit point, checked by the caller), so it is removed first. The
// caller holds the bundle's lock (see bundleLocks), so the object cannot be
// a concurrent attempt's. Replicas sharing one bucket will need the lock in
// storage instead, or one payload key per attempt named by the record.
func storePayload(ctx context.Context, st storage.Backend, k string, r io.Reader, size int64) error {
	if _, err := st.Stat(ctx, k); err == nil {
		if err := st.Delete(ctx, k); err != nil {
			return err
		}
	} else if !errors.Is(err, storage.ErrNotExist) {
		return err
	}
	return st.Create(ctx, k, r, size)
}

// bundleLocks serialises the handling of each bundle id, so that two offers
// or uploads of one bundle never interleave between the payload and the
// record.
type bundleLocks struct {
	mu    sync.Mutex
	locks map[string]*bundleLock
}

type bundleLock struct {
	mu   sync.Mutex
	refs int
}

// lock locks id and returns the function that unlocks it.
func (b *bundleLocks) lock(id string) func() {
	b.mu.Lock()
	if b.locks == nil {
		b.locks = map[string]*bundleLock{}
	}
	l := b.locks[id]
	if l == nil {
		l = &bundleLock{}
		b.locks[id] = l
	}
	l.refs++
	b.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		b.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(b.locks, id)
		}
		b.mu.Unlock()
	}
}
