package gateway

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"evx/api"
	"evx/crypto"
	"evx/storage"

	"go.uber.org/zap"
)

// Retention (docs/retention.md). A bundle stored here is kept until its
// retain-until and no longer:
//
//   - No deletion before. Its payload and records are written locked
//     (storage.Locker.CreateLocked) until the envelope's retain_until: the
//     storage refuses to remove them before, whoever asks.
//   - Nothing readable after. A received payload is stored under an outer
//     layer encrypted to a key of its own (crypto.ShredKey), kept wrapped by
//     the gateway's master key in an object that is not locked. At
//     retain-until the reaper (reaper.go) destroys that object: from then
//     on no copy of the payload object, the locked one included, can be
//     read by anyone. Then it removes every object of the bundle as soon as
//     the locks allow.
//
// Layout, in addition to records.go's:
//
//	inbox/<id>/payload-<a>.age    the outer layer of a received payload,
//	                              locked; <a> names the attempt that
//	                              stored it, which the record names
//	inbox/<id>/key-<a>.wrapped    its key, wrapped by the master key; not
//	                              locked
//	inbox/<id>/retention.json     a shortened retain-until (a recall),
//	                              Replace-written, not locked
//	retention/due/<time>-<kind>-<id>
//	                              empty objects, one per time something of
//	                              bundle id falls due (see dueKey): the
//	                              reaper's index
//
// A payload is stored under an attempt's own name because a locked object
// cannot be removed: the payload of an attempt that stored it but not its
// record (a crash, a storage failure) stays, unreadable and unnamed, until
// the reaper purges the bundle's objects at its retain-until.
const (
	duePrefix      = "retention/due/"
	dueTimeLayout  = "20060102T150405Z"
	shorteningFile = "retention.json"

	// The kinds of what falls due. dueInbox: a received bundle's
	// retention ends; dueOutbox: a submitted bundle's; dueSent: the
	// sender's copy of a delivered payload has outlived its grace.
	dueInbox  = "inbox"
	dueOutbox = "outbox"
	dueSent   = "sent"
)

// dueKey is the index entry that makes the reaper look at bundle id when
// t (rounded up to the second) has come. Keys sort in time order.
func dueKey(t time.Time, kind, id string) string {
	return duePrefix + ceilTime(t).UTC().Format(dueTimeLayout) + "-" + kind + "-" + id
}

// parseDueKey splits an index entry's key.
func parseDueKey(k string) (t time.Time, kind, id string, ok bool) {
	rest, ok := strings.CutPrefix(k, duePrefix)
	if !ok || len(rest) < len(dueTimeLayout)+2 {
		return time.Time{}, "", "", false
	}
	t, err := time.Parse(dueTimeLayout, rest[:len(dueTimeLayout)])
	if err != nil || rest[len(dueTimeLayout)] != '-' {
		return time.Time{}, "", "", false
	}
	kind, id, ok = strings.Cut(rest[len(dueTimeLayout)+1:], "-")
	if !ok || !crypto.ValidBundleID(id) {
		return time.Time{}, "", "", false
	}
	switch kind {
	case dueInbox, dueOutbox, dueSent:
		return t, kind, id, true
	}
	return time.Time{}, "", "", false
}

// dueAt writes the index entry that makes the reaper look at bundle id at
// t. It is written before what it is about, so that nothing stored escapes
// the reaper.
func (g *Gateway) dueAt(ctx context.Context, t time.Time, kind, id string) error {
	err := g.opts.Storage.Create(ctx, dueKey(t, kind, id), bytes.NewReader(nil), 0)
	if errors.Is(err, storage.ErrExist) {
		return nil
	}
	return err
}

// undue removes the index entry dueAt wrote for bundle id if nothing of the
// bundle was stored under prefix after all (an offer or upload refused or
// failed part-way): a refusal leaves nothing behind. If something was, the
// entry stays, and the reaper removes both.
func (g *Gateway) undue(ctx context.Context, t time.Time, kind, id, prefix string) {
	ctx = context.WithoutCancel(ctx)
	infos, err := g.opts.Storage.List(ctx, prefix)
	if err != nil || len(infos) > 0 {
		return
	}
	if err := g.locker.Purge(ctx, dueKey(t, kind, id)); err != nil {
		g.log.Warn("removing the retention index entry of a bundle not stored; the reaper removes it at retain-until",
			zap.String("bundle", id), zap.Error(err))
	}
}

// lockMargin is how far ahead of the gateway's clock a retention date must
// be for the gateway to lock an object until it: the storage server's
// clock decides, and a date it finds past is refused.
const lockMargin = 2 * time.Second

// putJSONLocked stores v as JSON under k, locked until until. Past
// retain-until (a receipt of a bundle delivered at the last moment) the
// object is stored unlocked: the reaper removes it at once.
func (g *Gateway) putJSONLocked(ctx context.Context, k string, v any, until time.Time) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if until.Before(g.now().Add(lockMargin)) {
		return g.opts.Storage.Create(ctx, k, bytes.NewReader(data), int64(len(data)))
	}
	return g.locker.CreateLocked(ctx, k, bytes.NewReader(data), int64(len(data)), until)
}

// outerLayer names the objects of a received payload's outer layer.
type outerLayer struct {
	// Payload is the name of the outer layer's object in the bundle's
	// inbox directory; Key that of its wrapped key.
	Payload string `json:"payload"`
	Key     string `json:"key"`
}

// newOuterLayer names the objects of a new attempt to store a payload.
func newOuterLayer() outerLayer {
	var b [8]byte
	rand.Read(b[:])
	a := hex.EncodeToString(b[:])
	return outerLayer{Payload: "payload-" + a + ".age", Key: "key-" + a + ".wrapped"}
}

// validOuterLayer checks the names a stored record gives, which come from
// storage: they must be names newOuterLayer makes.
func validOuterLayer(l outerLayer) bool {
	a, ok := strings.CutPrefix(l.Payload, "payload-")
	a, ok2 := strings.CutSuffix(a, ".age")
	if !ok || !ok2 || len(a) != 16 || strings.ToLower(a) != a || l.Key != "key-"+a+".wrapped" {
		return false
	}
	_, err := hex.DecodeString(a)
	return err == nil
}

// storeOuterLayer stores the payload read from r, of size bytes, as the
// outer layer of received bundle id, locked until until, then the reaper's
// entry for it, then its wrapped key. r must end only once it is verified
// (a crypto.PayloadVerifier): the outer layer's last chunk is written
// after r's end, so storage cannot commit a payload that failed
// verification, and a refused payload leaves nothing behind.
//
// The payload goes first so that a refusal stores nothing; its key last,
// so that nothing readable exists that the reaper does not know of. A
// crash between the payload and the reaper's entry leaves a payload whose
// key was never stored: unreadable, but kept until removed by hand
// (docs/retention.md, limits).
func (g *Gateway) storeOuterLayer(ctx context.Context, id string, r io.Reader, size int64, until time.Time) (outerLayer, error) {
	l := newOuterLayer()
	sk, err := crypto.NewShredKey()
	if err != nil {
		return l, err
	}
	wrapped, err := g.opts.MasterKey.Wrap(sk)
	if err != nil {
		return l, err
	}
	pr, pw := io.Pipe()
	encrypted := make(chan error, 1)
	go func() {
		enc, err := sk.Encrypt(pw)
		if err == nil {
			_, err = io.Copy(enc, r)
		}
		if err == nil {
			err = enc.Close()
		}
		pw.CloseWithError(err)
		encrypted <- err
	}()
	payload := key(inboxPrefix, id, l.Payload)
	err = g.locker.CreateLocked(ctx, payload, pr, size+crypto.ShredOverhead(size), until)
	// Storage may stop reading early, on a failure of its own: the
	// encryption then ends at its next write.
	pr.CloseWithError(errStorageStopped)
	if eerr := <-encrypted; err == nil && eerr != nil && !errors.Is(eerr, errStorageStopped) {
		err = eerr
	}
	if err != nil {
		// A failed Create may have stored the object after all: then
		// the reaper must know of it.
		wctx := context.WithoutCancel(ctx)
		if _, serr := g.opts.Storage.Stat(wctx, payload); serr == nil {
			if derr := g.dueAt(wctx, until, dueInbox, id); derr != nil {
				g.log.Warn("storing the retention index of a payload stored by a failed attempt", zap.String("bundle", id), zap.Error(derr))
			}
		}
		return l, err
	}
	if err := g.dueAt(ctx, until, dueInbox, id); err != nil {
		return l, err
	}
	if err := g.opts.Storage.Create(ctx, key(inboxPrefix, id, l.Key), bytes.NewReader(wrapped), int64(len(wrapped))); err != nil {
		return l, err
	}
	return l, nil
}

var errStorageStopped = errors.New("storage stopped reading the payload")

// maxWrappedKeySize bounds the read of a wrapped key: its format is of a
// fixed size, well under it.
const maxWrappedKeySize = 4 << 10

// errShredded is returned for a payload whose key is destroyed.
var errShredded = errors.New("the payload's key is destroyed")

// openInboxPayload opens the payload of received bundle id, as its record
// names it, and returns a reader of the sealed bundle and the object to
// close. Once the key is destroyed it fails with errShredded.
func (g *Gateway) openInboxPayload(ctx context.Context, id string, rec *inboxRecord, size int64) (io.Reader, io.Closer, error) {
	if rec.Outer == nil {
		// Stored before the outer layer existed.
		obj, err := g.opts.Storage.Open(ctx, key(inboxPrefix, id, payloadFile))
		return obj, obj, err
	}
	if !validOuterLayer(*rec.Outer) {
		return nil, nil, fmt.Errorf("%w: inbox record of %s names its payload %q", errMalformedRecord, id, rec.Outer.Payload)
	}
	wrapped, _, err := g.opts.Storage.ReadVersion(ctx, key(inboxPrefix, id, rec.Outer.Key), maxWrappedKeySize)
	if errors.Is(err, storage.ErrNotExist) {
		return nil, nil, errShredded
	}
	if err != nil {
		return nil, nil, err
	}
	sk, err := g.opts.MasterKey.Unwrap(wrapped)
	if err != nil {
		return nil, nil, fmt.Errorf("bundle %s: %w", id, err)
	}
	obj, err := g.opts.Storage.Open(ctx, key(inboxPrefix, id, rec.Outer.Payload))
	if err != nil {
		return nil, nil, err
	}
	if want := size + crypto.ShredOverhead(size); obj.Size() != want {
		obj.Close()
		return nil, nil, fmt.Errorf("bundle %s: the stored outer layer is %d bytes, want %d", id, obj.Size(), want)
	}
	pt, err := sk.Decrypt(obj)
	if err != nil {
		obj.Close()
		return nil, nil, fmt.Errorf("bundle %s: %w", id, err)
	}
	return pt, obj, nil
}

// shortening is a retain-until earlier than the envelope's, applied at the
// request of the bundle's sender (a recall).
type shortening struct {
	RetainUntil time.Time `json:"retain_until"`
	// By is who asked: the sending unit.
	By        string    `json:"by"`
	AppliedAt time.Time `json:"applied_at"`
}

// inboxRetention returns received bundle id's retain-until in force: the
// envelope's, or a shortened one, whichever is earlier.
func (g *Gateway) inboxRetention(ctx context.Context, id string, env *crypto.Envelope) (time.Time, error) {
	until := env.RetainUntil
	var s shortening
	switch err := getJSON(ctx, g.opts.Storage, key(inboxPrefix, id, shorteningFile), &s); {
	case errors.Is(err, storage.ErrNotExist):
	case err != nil:
		return time.Time{}, err
	case s.RetainUntil.Before(until):
		until = s.RetainUntil
	}
	return until, nil
}

// errHeld refuses a shortening of a held bundle.
var errHeld = errors.New("a legal hold is placed on the bundle")

// shorten moves received bundle id's retain-until earlier, to until (at
// the earliest now), at the request of unit by: the reaper makes it
// unreadable then. It refuses, with errHeld, while a legal hold is
// placed; a date not earlier than the one in force changes nothing. It
// returns the retain-until in force after it.
func (g *Gateway) shorten(ctx context.Context, id string, env *crypto.Envelope, until time.Time, by string) (time.Time, error) {
	defer g.inboxLocks.lock(id)()
	held, err := g.isHeld(ctx, id)
	if err != nil {
		return time.Time{}, err
	}
	if held {
		return time.Time{}, errHeld
	}
	now := g.now()
	if until.Before(now) {
		until = now
	}
	until = ceilTime(until)
	data, version, err := g.opts.Storage.ReadVersion(ctx, key(inboxPrefix, id, shorteningFile), maxRecordSize)
	current := env.RetainUntil
	switch {
	case errors.Is(err, storage.ErrNotExist):
		version = ""
	case err != nil:
		return time.Time{}, err
	default:
		var s shortening
		if err := json.Unmarshal(data, &s); err != nil {
			return time.Time{}, fmt.Errorf("%w: shortened retention of %s: %w", errMalformedRecord, id, err)
		}
		if s.RetainUntil.Before(current) {
			current = s.RetainUntil
		}
	}
	if !until.Before(current) {
		return current, nil
	}
	// The reaper's entry first: a shortening it does not know of would
	// keep the bundle readable to the old date.
	if err := g.dueAt(ctx, until, dueInbox, id); err != nil {
		return time.Time{}, err
	}
	data, err = json.Marshal(shortening{RetainUntil: until.UTC(), By: by, AppliedAt: now.UTC()})
	if err != nil {
		return time.Time{}, err
	}
	if _, err := g.opts.Storage.Replace(ctx, key(inboxPrefix, id, shorteningFile), data, version); err != nil {
		return time.Time{}, err
	}
	g.reaperWake()
	return until, nil
}

// retentionState says where a received bundle stands, for its inbox entry.
func (g *Gateway) retentionState(ctx context.Context, id string, env *crypto.Envelope) (api.Retention, error) {
	until, err := g.inboxRetention(ctx, id, env)
	if err != nil {
		return api.Retention{}, err
	}
	held, err := g.isHeld(ctx, id)
	if err != nil {
		return api.Retention{}, err
	}
	return retentionAt(until, held, g.now()), nil
}

// retentionAt is where a retention that ends at until stands at now.
func retentionAt(until time.Time, held bool, now time.Time) api.Retention {
	r := api.Retention{Until: until.UTC(), State: api.RetentionKept, Held: held}
	switch {
	case held:
		r.State = api.RetentionHeld
	case !now.Before(until):
		r.State = api.RetentionExpired
	}
	return r
}

// expiredErr is the refusal of a read of an expired bundle.
func expiredErr(id string, until time.Time) error {
	return api.Errorf(api.CodeExpired, "bundle %s expired at %s: its retention has ended, and it can no longer be read", id, until.UTC().Format(time.RFC3339))
}

// ceilTime rounds t up to the whole second.
func ceilTime(t time.Time) time.Time {
	if r := t.Truncate(time.Second); !r.Equal(t) {
		return r.Add(time.Second)
	}
	return t
}
