package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"evx/crypto"
	"evx/storage"
)

// Storage layout. A bundle record is its payload object and a small record
// object written after it: the record object is the commit point, so a
// bundle whose record is missing was never stored (see package storage).
//
//	outbox/<id>/payload.age   ciphertext of a bundle submitted here
//	outbox/<id>/record.json   outboxRecord: envelope, signature, submitter
//	outbox/<id>/receipt.json  the peer's signed receipt, once delivered
//	inbox/<id>/payload.age    ciphertext of a bundle received from a peer
//	inbox/<id>/record.json    inboxRecord: envelope, signature, our receipt
//	inbox/<id>/ack-<unit>.json  a recipient's retrieval acknowledgement
const (
	outboxPrefix = "outbox/"
	inboxPrefix  = "inbox/"
	payloadFile  = "payload.age"
	recordFile   = "record.json"
	receiptFile  = "receipt.json"
)

func key(box, id, file string) string { return box + id + "/" + file }

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

func getJSON(ctx context.Context, st storage.Backend, k string, v any) error {
	obj, err := st.Open(ctx, k)
	if err != nil {
		return err
	}
	defer obj.Close()
	if obj.Size() > maxRecordSize {
		return fmt.Errorf("record %q is %d bytes, over the limit of %d", k, obj.Size(), maxRecordSize)
	}
	data, err := io.ReadAll(obj)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("record %q: %w", k, err)
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
