package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"

	"evx/api"
	"evx/audit"
	"evx/crypto"
	"evx/storage"

	"go.uber.org/zap"
)

// A legal hold keeps a bundle stored at this gateway, received or sent,
// past its retention until it is released (docs/retention.md, "Legal
// hold"): the reaper skips a held bundle (isHeld), and its reads stay
// open. Only the local units of Options.HoldUnits place and release
// holds, with a reason and a reference, each recorded in the transfer
// log before it takes effect.
//
// A hold is one object, retention/holds/<id>.json, written with Replace:
// it is never locked itself, and its presence is the hold. On top of it,
// each of the bundle's locked objects gets the storage's legal hold
// (storage.Locker.Hold), so that the bucket itself refuses to delete
// them, whoever asks. The order makes a crash harmless: placing stores the
// record first and locks the objects after, releasing unlocks them first
// and removes the record last, so that a bundle whose objects are not
// all locked is still held by its record, and is kept.

// holdsPrefix holds the holds, one object per bundle id.
const holdsPrefix = "retention/holds/"

// holdFormat is the format of a hold's object.
const holdFormat = "evx-hold/1"

// maxHoldRecordSize bounds a hold's object read back: its envelope, at
// most crypto.MaxEnvelopeSize and base64 in JSON, is what makes it large.
const maxHoldRecordSize = 2*crypto.MaxEnvelopeSize + 16<<10

func holdKey(id string) string { return holdsPrefix + id + ".json" }

// holdRecord is a legal hold as kept in storage.
type holdRecord struct {
	Format    string    `json:"format"`
	BundleID  string    `json:"bundle_id"`
	Boxes     []string  `json:"boxes"`
	Reason    string    `json:"reason"`
	Reference string    `json:"reference"`
	By        string    `json:"by"`
	At        time.Time `json:"at"`
	// Envelope is the bundle's envelope, so that the release is recorded
	// with the bundle's members even if its records cannot be read then.
	Envelope []byte `json:"envelope"`
}

func (h *holdRecord) api() api.Hold {
	return api.Hold{BundleID: h.BundleID, Boxes: h.Boxes, Reason: h.Reason, Reference: h.Reference, By: h.By, At: h.At}
}

// isHeld reports whether a legal hold is placed on bundle id. The reaper
// asks it before it shreds or purges anything of the bundle.
func (g *Gateway) isHeld(ctx context.Context, id string) (bool, error) {
	_, err := g.opts.Storage.Stat(ctx, holdKey(id))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, storage.ErrNotExist):
		return false, nil
	}
	return false, fmt.Errorf("reading the legal hold of %s: %w", id, err)
}

// holdRoutes registers the endpoints of legal holds (docs/api.md
// 3.20–3.22). Who may call them is not a role but a list of units
// (mayHold), so any user gets as far as that check.
func (g *Gateway) holdRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/holds/{id}", g.handle(nil, g.holdPlace))
	mux.HandleFunc("DELETE /v1/holds/{id}", g.handle(nil, g.holdRelease))
	mux.HandleFunc("GET /v1/holds", g.handle(nil, g.holdList))
}

func (g *Gateway) holdPlace(w http.ResponseWriter, r *http.Request, u User) (any, error) {
	if err := g.mayHold(u); err != nil {
		return nil, err
	}
	var req api.HoldRequest
	if err := readSmallJSON(w, r, g.opts.uploadStallTimeout(), api.MaxHoldBody, api.CodeBadReason, "a hold request", &req); err != nil {
		return nil, err
	}
	return g.PlaceHold(r.Context(), r.PathValue("id"), req.Reason, req.Reference, u.Unit)
}

func (g *Gateway) holdRelease(w http.ResponseWriter, r *http.Request, u User) (any, error) {
	if err := g.mayHold(u); err != nil {
		return nil, err
	}
	var req api.ReleaseRequest
	if err := readSmallJSON(w, r, g.opts.uploadStallTimeout(), api.MaxHoldBody, api.CodeBadReason, "a release request", &req); err != nil {
		return nil, err
	}
	return g.ReleaseHold(r.Context(), r.PathValue("id"), req.Reason, u.Unit)
}

func (g *Gateway) holdList(_ http.ResponseWriter, r *http.Request, u User) (any, error) {
	if u.Role != api.RoleOperator && !slices.Contains(g.opts.HoldUnits, u.Unit) {
		return nil, api.Errorf(api.CodeForbidden, "%s may not list the legal holds at gateway %s: operators and the units that place holds (%s) may",
			u.Unit, g.opts.ID, holdUnitsText(g.opts.HoldUnits))
	}
	return g.Holds(r.Context())
}

// mayHold refuses a unit that may not place or release holds.
func (g *Gateway) mayHold(u User) error {
	if len(g.opts.HoldUnits) == 0 {
		return api.Errorf(api.CodeForbidden, "no unit may place or release legal holds at gateway %s: its configuration names none (retention.hold_units)", g.opts.ID)
	}
	if !slices.Contains(g.opts.HoldUnits, u.Unit) {
		return api.Errorf(api.CodeForbidden, "%s may not place or release legal holds at gateway %s: only %s may (retention.hold_units)",
			u.Unit, g.opts.ID, holdUnitsText(g.opts.HoldUnits))
	}
	return nil
}

func holdUnitsText(units []string) string {
	if len(units) == 0 {
		return "none"
	}
	return strings.Join(units, ", ")
}

// PlaceHold places a legal hold on bundle id, stored at this gateway, for
// reason under reference, at the request of unit by.
func (g *Gateway) PlaceHold(ctx context.Context, id, reason, reference, by string) (*api.Hold, error) {
	if err := checkHoldReason(reason); err != nil {
		return nil, err
	}
	if err := checkHoldReference(reference); err != nil {
		return nil, err
	}
	// Looked for before locking, so that no hold of a bundle being
	// received or submitted, which has no record yet, waits for its
	// transfer to end; and again under the lock, which the reaper takes
	// too: a bundle it purged or shredded meanwhile is not held.
	if _, _, _, err := g.storedBundle(ctx, id); err != nil {
		return nil, err
	}
	defer g.lockHold(id)()
	env, envJSON, boxes, err := g.storedBundle(ctx, id)
	if err != nil {
		return nil, err
	}
	if h, _, err := g.readHold(ctx, id); err == nil {
		// A hold stored whose objects were not all locked (a crash or a
		// storage failure in between) is completed here.
		if err := g.setStorageHolds(ctx, id, true); err != nil {
			g.log.Warn("completing the storage holds of a legal hold", zap.String("bundle", id), zap.Error(err))
		}
		return nil, alreadyHeld(h)
	} else if !errors.Is(err, storage.ErrNotExist) {
		return nil, err
	}
	h := &holdRecord{Format: holdFormat, BundleID: id, Boxes: boxes, Reason: reason, Reference: reference, By: by,
		At: g.now().UTC().Truncate(time.Second), Envelope: envJSON}
	data, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	if _, err := g.recordOrRefuse(ctx, holdEntry(audit.EventHoldPlaced, by, reason, reference), env); err != nil {
		return nil, err
	}
	// Recorded: from here the hold takes effect whatever the caller does.
	ctx = context.WithoutCancel(ctx)
	if _, err := g.opts.Storage.Replace(ctx, holdKey(id), data, ""); err != nil {
		if errors.Is(err, storage.ErrVersionMismatch) {
			// Another process of this gateway placed one meanwhile.
			if other, _, rerr := g.readHold(ctx, id); rerr == nil {
				return nil, alreadyHeld(other)
			}
			return nil, api.Errorf(api.CodeAlreadyHeld, "a legal hold was placed on bundle %s meanwhile", id)
		}
		g.log.Error("storing a legal hold", zap.String("bundle", id), zap.Error(err))
		return nil, api.Errorf(api.CodeStorageUnavailable, "the gateway cannot store the hold; place it again")
	}
	if err := g.setStorageHolds(ctx, id, true); err != nil {
		// The hold is placed: its record keeps the bundle. Placing it
		// again completes the storage holds.
		g.log.Error("setting the storage holds of a legal hold", zap.String("bundle", id), zap.Error(err))
		return nil, api.Errorf(api.CodeStorageUnavailable, "the hold on bundle %s is placed, but the storage could not lock all of its objects: place it again to complete it", id)
	}
	g.log.Info("legal hold placed", zap.String("bundle", id), zap.String("by", by), zap.String("reference", reference),
		zap.String("reason", reason))
	out := h.api()
	return &out, nil
}

// ReleaseHold releases the legal hold on bundle id, for reason, at the
// request of unit by. The bundle's retention then ends as if there had
// been no hold: a bundle past it is reaped at the reaper's next run.
func (g *Gateway) ReleaseHold(ctx context.Context, id, reason, by string) (*api.Hold, error) {
	if err := checkHoldReason(reason); err != nil {
		return nil, err
	}
	if !crypto.ValidBundleID(id) {
		return nil, api.Errorf(api.CodeNotFound, "no bundle %q at gateway %s", id, g.opts.ID)
	}
	// Read before locking, as PlaceHold finds the bundle first.
	if _, _, err := g.readHold(ctx, id); errors.Is(err, storage.ErrNotExist) {
		if _, _, _, err := g.storedBundle(ctx, id); err != nil {
			return nil, err
		}
		return nil, api.Errorf(api.CodeNotHeld, "no legal hold is placed on bundle %s", id)
	} else if err != nil {
		return nil, err
	}
	defer g.lockHold(id)()
	h, _, err := g.readHold(ctx, id)
	if errors.Is(err, storage.ErrNotExist) {
		return nil, api.Errorf(api.CodeNotHeld, "no legal hold is placed on bundle %s: it was released meanwhile", id)
	} else if err != nil {
		return nil, err
	}
	env, err := crypto.ParseEnvelope(h.Envelope)
	if err != nil || env.BundleID != id {
		return nil, fmt.Errorf("the legal hold of %s in storage holds another bundle's envelope or none: %v", id, err)
	}
	if _, err := g.recordOrRefuse(ctx, holdEntry(audit.EventHoldReleased, by, reason, h.Reference), env); err != nil {
		return nil, err
	}
	ctx = context.WithoutCancel(ctx)
	// The storage's holds first, the record last: until the record is
	// gone the bundle is held, whatever failed in between.
	if err := g.setStorageHolds(ctx, id, false); err != nil {
		g.log.Error("releasing the storage holds of a legal hold", zap.String("bundle", id), zap.Error(err))
		return nil, api.Errorf(api.CodeStorageUnavailable, "the gateway cannot release the storage's holds of bundle %s; it stays held: release it again", id)
	}
	if err := g.opts.Storage.Delete(ctx, holdKey(id)); err != nil {
		g.log.Error("removing a legal hold", zap.String("bundle", id), zap.Error(err))
		return nil, api.Errorf(api.CodeStorageUnavailable, "the gateway cannot remove the hold of bundle %s; it stays held: release it again", id)
	}
	g.log.Info("legal hold released", zap.String("bundle", id), zap.String("by", by), zap.String("reference", h.Reference),
		zap.String("reason", reason))
	out := h.api()
	out.Released = &api.HoldRelease{Reason: reason, By: by, At: g.now().UTC().Truncate(time.Second)}
	return &out, nil
}

// Holds lists the legal holds placed, oldest first: at most
// api.MaxHoldList, the first by bundle id if there are more.
func (g *Gateway) Holds(ctx context.Context) (*api.HoldList, error) {
	infos, err := g.opts.Storage.List(ctx, holdsPrefix)
	if err != nil {
		return nil, err
	}
	out := &api.HoldList{Gateway: g.opts.ID, Holds: []api.Hold{}}
	for _, in := range infos {
		id, ok := strings.CutSuffix(strings.TrimPrefix(in.Key, holdsPrefix), ".json")
		if !ok || !crypto.ValidBundleID(id) {
			continue
		}
		if len(out.Holds) == api.MaxHoldList {
			out.Truncated = true
			break
		}
		h, _, err := g.readHold(ctx, id)
		switch {
		case errors.Is(err, storage.ErrNotExist):
			continue // released meanwhile
		case errors.Is(err, errMalformedRecord):
			// It still holds the bundle (isHeld): listed, as what it is.
			g.log.Error("reading a legal hold", zap.String("bundle", id), zap.Error(err))
			out.Holds = append(out.Holds, api.Hold{BundleID: id, Boxes: []string{}, Reason: "the gateway cannot read this hold's record; the bundle is kept as held"})
			continue
		case err != nil:
			return nil, err
		}
		out.Holds = append(out.Holds, h.api())
	}
	sort.SliceStable(out.Holds, func(i, j int) bool { return out.Holds[i].At.Before(out.Holds[j].At) })
	return out, nil
}

// readHold reads the hold of bundle id and its version.
func (g *Gateway) readHold(ctx context.Context, id string) (*holdRecord, string, error) {
	data, version, err := g.opts.Storage.ReadVersion(ctx, holdKey(id), maxHoldRecordSize)
	if err != nil {
		if errors.Is(err, storage.ErrTooLarge) {
			return nil, "", fmt.Errorf("%w: %w", errMalformedRecord, err)
		}
		return nil, "", err
	}
	var h holdRecord
	if err := json.Unmarshal(data, &h); err != nil || h.Format != holdFormat || h.BundleID != id {
		return nil, "", fmt.Errorf("%w: the legal hold %s is not of format %s for bundle %s", errMalformedRecord, holdKey(id), holdFormat, id)
	}
	if h.Boxes == nil {
		h.Boxes = []string{}
	}
	return &h, version, nil
}

// storedBundle finds bundle id in this gateway's inbox and outbox, and
// returns its envelope, as parsed and as stored, and the boxes it is in. A
// received bundle whose key the reaper has destroyed is in no box: it can
// no longer be read, and a hold would keep nothing of use; if it is not
// in the outbox either, the answer is expired.
func (g *Gateway) storedBundle(ctx context.Context, id string) (*crypto.Envelope, []byte, []string, error) {
	if !crypto.ValidBundleID(id) {
		return nil, nil, nil, api.Errorf(api.CodeNotFound, "no bundle %q at gateway %s", id, g.opts.ID)
	}
	var envJSON []byte
	boxes := []string{}
	var in inboxRecord
	shredded := false
	switch err := getJSON(ctx, g.opts.Storage, key(inboxPrefix, id, recordFile), &in); {
	case err == nil:
		envJSON = in.Envelope
		if shredded, err = g.keyDestroyed(ctx, id, &in); err != nil {
			return nil, nil, nil, err
		}
		if !shredded {
			boxes = append(boxes, "inbox")
		}
	case !errors.Is(err, storage.ErrNotExist):
		return nil, nil, nil, err
	}
	var out outboxRecord
	switch err := getJSON(ctx, g.opts.Storage, key(outboxPrefix, id, recordFile), &out); {
	case err == nil:
		if envJSON == nil {
			envJSON = out.Envelope
		}
		boxes = append(boxes, "outbox")
	case !errors.Is(err, storage.ErrNotExist):
		return nil, nil, nil, err
	}
	if envJSON == nil {
		return nil, nil, nil, api.Errorf(api.CodeNotFound, "no bundle %s at gateway %s, in its inbox or its outbox", id, g.opts.ID)
	}
	env, err := crypto.ParseEnvelope(envJSON)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("stored record of %s: %w", id, err)
	}
	if env.BundleID != id {
		return nil, nil, nil, fmt.Errorf("stored record of %s holds the envelope of bundle %s", id, env.BundleID)
	}
	if len(boxes) == 0 {
		return nil, nil, nil, api.Errorf(api.CodeExpired, "bundle %s has expired at gateway %s: its key is destroyed, and it can no longer be read or held", id, g.opts.ID)
	}
	return env, envJSON, boxes, nil
}

// keyDestroyed reports whether the reaper has destroyed the key of the
// outer layer of received bundle id, whose record is rec.
func (g *Gateway) keyDestroyed(ctx context.Context, id string, rec *inboxRecord) (bool, error) {
	if rec.Outer == nil || !validOuterLayer(*rec.Outer) {
		return false, nil // stored before the outer layer, or not readable anyway
	}
	_, err := g.opts.Storage.Stat(ctx, key(inboxPrefix, id, rec.Outer.Key))
	if errors.Is(err, storage.ErrNotExist) {
		return true, nil
	}
	return false, err
}

// lockHold serialises the holds of bundle id in this process with the
// handling of its offers and uploads, and with one another, and returns
// the function that unlocks it. The inbox lock comes first, as always.
func (g *Gateway) lockHold(id string) func() {
	unlockIn := g.inboxLocks.lock(id)
	unlockOut := g.outboxLocks.lock(id)
	return func() {
		unlockOut()
		unlockIn()
	}
}

// setStorageHolds places (held) or releases the storage's legal hold on
// each of bundle id's locked objects that exist: in the inbox its payload,
// record and acknowledgements, in the outbox its record, receipt and
// payload. The wrapped shred key is never locked, nor held: destroying it
// is what ends a bundle.
func (g *Gateway) setStorageHolds(ctx context.Context, id string, held bool) error {
	for _, box := range []string{inboxPrefix, outboxPrefix} {
		prefix := box + id + "/"
		infos, err := g.opts.Storage.List(ctx, prefix)
		if err != nil {
			return err
		}
		for _, in := range infos {
			if !heldObject(box, strings.TrimPrefix(in.Key, prefix)) {
				continue
			}
			err := g.locker.Hold(ctx, in.Key, held)
			if err != nil && !errors.Is(err, storage.ErrNotExist) { // gone since the listing
				return err
			}
		}
	}
	return nil
}

// heldObject reports whether the object name of a bundle in box carries
// the storage's legal hold while the bundle is held: its payload
// (payload.age, or the outer layer's payload-<attempt>.age), its record,
// and in the inbox its acknowledgements, in the outbox its receipt. Not
// the wrapped key, nor anything written with Replace.
func heldObject(box, name string) bool {
	switch {
	case strings.Contains(name, "/"):
		return false
	case name == recordFile || strings.HasPrefix(name, "payload") && strings.HasSuffix(name, ".age"):
		return true
	case box == outboxPrefix:
		return name == receiptFile
	}
	return strings.HasPrefix(name, "ack-") && strings.HasSuffix(name, ".json")
}

// holdEntry is the transfer log's entry of a hold placed or released.
func holdEntry(event audit.Event, by, reason, reference string) audit.Entry {
	e := audit.Entry{Event: event, Actor: audit.UnitActor(by), Reason: audit.CleanReason(reason), Reference: reference}
	if e.Reason == "" {
		e.Reason = "reason withheld from the log: it looks like a path or a key"
	}
	return e
}

func alreadyHeld(h *holdRecord) error {
	return api.Errorf(api.CodeAlreadyHeld, "a legal hold is already placed on bundle %s: by %s on %s, reference %q; release it first",
		h.BundleID, h.By, h.At.UTC().Format(time.RFC3339), h.Reference)
}

// checkHoldReason checks the reason of a hold placed or released:
// required, bounded as the transfer log bounds reasons, printable on one
// line.
func checkHoldReason(reason string) error {
	switch {
	case strings.TrimSpace(reason) == "":
		return api.Errorf(api.CodeBadReason, "a legal hold is placed and released with a reason")
	case len(reason) > api.MaxHoldReason:
		return api.Errorf(api.CodeBadReason, "the reason has %d bytes, at most %d allowed", len(reason), api.MaxHoldReason)
	case !printableLine(reason):
		return api.Errorf(api.CodeBadReason, "the reason %q is not printable text on one line", reason)
	}
	return nil
}

// checkHoldReference checks a hold's reference by the transfer log's
// rules, which are an agreement reference's: it is recorded as it is.
func checkHoldReference(ref string) error {
	if ref == "" {
		return api.Errorf(api.CodeBadReference, "a legal hold needs a reference, such as the court order's or the case's")
	}
	if len(ref) > api.MaxHoldReference {
		return api.Errorf(api.CodeBadReference, "the reference has %d bytes, at most %d allowed", len(ref), api.MaxHoldReference)
	}
	if err := audit.CheckReference(ref); err != nil {
		return api.Errorf(api.CodeBadReference, "%v", err)
	}
	return nil
}
