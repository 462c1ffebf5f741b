package gateway

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	"evx/audit"
	"evx/crypto"
	"evx/storage"

	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
)

// The reaper ends what retention no longer allows (docs/retention.md). Every
// ReaperInterval, at start, and when woken (a shortened retention), it lists
// the index of what falls due (retention.go, dueKey) and, for each entry whose
// time has come:
//
//   - inbox: a received bundle's retention has ended. Unless a legal hold is
//     placed, it records bundle-expired, destroys the payload's wrapped key
//     (every version: the payload is unreadable from then on) and records
//     key-shredded, then removes every version of every object of the
//     bundle, its record last, as soon as the storage's locks allow, and
//     records bundle-purged.
//   - outbox: a submitted bundle's retention has ended: its record,
//     receipt and whatever else is left are removed (outbox-purged).
//   - sent: the grace after a delivery has passed: the sender's copy of the
//     payload is removed (outbox-payload-deleted).
//
// Each step is idempotent and the index entry goes last, so a failure or a
// crash at any point is finished by a later run. A purge the locks still
// refuse (the storage's clock is behind the gateway's, or a recall ended the
// retention before the lock) is tried again at each run. Reads never wait
// for the reaper: from retain-until on, they are refused (api.go).
type reaper struct {
	// wake asks for a run before the next tick.
	wake chan struct{}
	// mu guards last, the outcome of the last run, for the metrics.
	mu   sync.Mutex
	last reapResult
}

func newReaper() reaper { return reaper{wake: make(chan struct{}, 1)} }

// reaperWake asks the reaper to run now.
func (g *Gateway) reaperWake() {
	select {
	case g.reaper.wake <- struct{}{}:
	default:
	}
}

// reaperWorkers bounds the bundles the reaper handles at once: each is a
// few storage requests in turn, so some parallelism hides their latency.
const reaperWorkers = 16

// reapResult is what one run of the reaper found and did.
type reapResult struct {
	// Done are the entries finished, by kind; Waiting those whose objects
	// the locks still keep; Held those a legal hold keeps; Failed those
	// that failed, to be retried.
	Done, Waiting, Held, Failed map[string]int
	// Kept are the bundles whose retention has not ended; Shredded
	// those whose shortened retention has, whose key is destroyed and
	// whose objects wait for their locks to end.
	Kept, Shredded int
	// Next is when the next entry falls due, zero if none.
	Next time.Time
	// OldestOverdue is the time of the oldest entry due and not finished
	// (held ones aside), zero if none.
	OldestOverdue time.Time
	// Err is why the run could not list the index, nil if it could.
	Err error
}

// runReaper runs the reaper until ctx is done: at once (bundles that expired
// while the gateway was down are handled at start), then every
// ReaperInterval and whenever woken.
func (g *Gateway) runReaper(ctx context.Context) error {
	t := time.NewTicker(g.opts.ReaperInterval)
	defer t.Stop()
	for {
		r := g.reap(ctx)
		if ctx.Err() != nil {
			return nil
		}
		g.reaper.mu.Lock()
		g.reaper.last = r
		g.reaper.mu.Unlock()
		g.metrics.observeReap(r, g.now())
		if g.opts.onReaped != nil {
			g.opts.onReaped(r)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-g.reaper.wake:
		}
	}
}

// dueGroup is the index entries of one kind for one bundle.
type dueGroup struct {
	kind, id string
	first    time.Time // the earliest entry's time
	keys     []string
}

// reap runs the reaper once.
func (g *Gateway) reap(ctx context.Context) reapResult {
	r := reapResult{Done: map[string]int{}, Waiting: map[string]int{}, Held: map[string]int{}, Failed: map[string]int{}}
	now := g.now()
	infos, err := g.opts.Storage.List(ctx, duePrefix)
	if err != nil {
		g.log.Error("reaper: listing the retention index", zap.Error(err))
		r.Err = err
		return r
	}
	groups := map[[2]string]*dueGroup{}
	var order []*dueGroup
	for _, in := range infos {
		t, kind, id, ok := parseDueKey(in.Key)
		if !ok {
			g.log.Warn("reaper: not a retention index entry", zap.String("key", in.Key))
			continue
		}
		k := [2]string{kind, id}
		d := groups[k]
		if d == nil {
			d = &dueGroup{kind: kind, id: id, first: t}
			groups[k] = d
			order = append(order, d)
		}
		if t.Before(d.first) {
			d.first = t
		}
		d.keys = append(d.keys, in.Key)
	}
	slices.SortFunc(order, func(a, b *dueGroup) int { return a.first.Compare(b.first) })
	var mu sync.Mutex
	eg, ectx := errgroup.WithContext(ctx)
	eg.SetLimit(reaperWorkers)
	for _, d := range order {
		if d.first.After(now) {
			mu.Lock()
			if r.Next.IsZero() || d.first.Before(r.Next) {
				r.Next = d.first
			}
			if d.kind != dueSent {
				r.Kept++
			}
			mu.Unlock()
			continue
		}
		eg.Go(func() error {
			outcome := g.reapGroup(ectx, d, now)
			mu.Lock()
			defer mu.Unlock()
			switch outcome {
			case reapDone:
				r.Done[d.kind]++
			case reapHeld:
				r.Held[d.kind]++
			case reapWaiting:
				r.Waiting[d.kind]++
			case reapFailed:
				r.Failed[d.kind]++
			case reapNotDue:
				r.Kept++
			case reapShredded:
				r.Shredded++
			}
			if outcome == reapWaiting || outcome == reapFailed {
				if r.OldestOverdue.IsZero() || d.first.Before(r.OldestOverdue) {
					r.OldestOverdue = d.first
				}
			}
			return nil
		})
	}
	eg.Wait()
	return r
}

// reapOutcome is how the reaper's handling of one group of entries ended.
type reapOutcome int

const (
	reapDone     reapOutcome = iota // finished: its entries are removed
	reapNotDue                      // its retention was not over after all
	reapShredded                    // (shortened) its key is destroyed; its objects wait for their locks
	reapHeld                        // a legal hold keeps it
	reapWaiting                     // the storage's locks still keep objects
	reapFailed                      // something failed: retried at the next run
)

// reapGroup handles the due entries of one bundle and kind.
func (g *Gateway) reapGroup(ctx context.Context, d *dueGroup, now time.Time) reapOutcome {
	var outcome reapOutcome
	var err error
	switch d.kind {
	case dueInbox:
		outcome, err = g.reapInbox(ctx, d.id, now)
	case dueOutbox:
		outcome, err = g.reapOutbox(ctx, d.id, now)
	case dueSent:
		outcome, err = g.reapSent(ctx, d.id)
	}
	switch {
	case errors.Is(err, storage.ErrLocked):
		g.log.Info("reaper: the storage's locks still keep objects of the bundle; retried at the next run",
			zap.String("bundle", d.id), zap.String("kind", d.kind), zap.Error(err))
		g.metrics.purgeFailures.WithLabelValues(d.kind, "locked").Inc()
		return reapWaiting
	case err != nil:
		if ctx.Err() == nil {
			g.log.Error("reaper: retried at the next run", zap.String("bundle", d.id), zap.String("kind", d.kind), zap.Error(err))
			g.metrics.purgeFailures.WithLabelValues(d.kind, failureCategory(err)).Inc()
		}
		return reapFailed
	}
	switch outcome {
	case reapDone:
		// Every entry of the group, the later ones too: what they were
		// about is gone.
		for _, k := range d.keys {
			if err := g.locker.Purge(ctx, k); err != nil {
				g.log.Warn("reaper: removing an index entry; retried at the next run", zap.String("key", k), zap.Error(err))
				return reapFailed
			}
		}
		g.metrics.purges.WithLabelValues(d.kind).Inc()
	case reapNotDue, reapShredded:
		// An entry earlier than the retention in force (a shortening
		// not stored after its entry), or than the locks (a shortening
		// applied): only the due ones go; the envelope's date has its
		// own.
		for _, k := range d.keys {
			if t, _, _, _ := parseDueKey(k); !t.After(now) {
				if err := g.locker.Purge(ctx, k); err != nil {
					return reapFailed
				}
			}
		}
	}
	return outcome
}

// failureCategory sorts a reaper's failure for the metrics' labels.
func failureCategory(err error) string {
	switch {
	case errors.Is(err, storage.ErrUnavailable):
		return "storage"
	case errors.Is(err, errMalformedRecord):
		return "malformed"
	}
	return "other"
}

// reapInbox ends received bundle id once its retention has ended.
func (g *Gateway) reapInbox(ctx context.Context, id string, now time.Time) (reapOutcome, error) {
	defer g.inboxLocks.lock(id)()
	// One listing tells what of the bundle is stored: each request saved
	// counts, for a reaper that handles thousands of bundles a minute.
	prefix := inboxPrefix + id + "/"
	infos, err := g.opts.Storage.List(ctx, prefix)
	if err != nil {
		return reapFailed, err
	}
	stored := make(map[string]bool, len(infos))
	for _, in := range infos {
		stored[strings.TrimPrefix(in.Key, prefix)] = true
	}
	if !stored[recordFile] {
		// Never stored, or purged but for its entries: what an
		// interrupted attempt left goes.
		return reapDone, g.purgeKeys(ctx, infos, "")
	}
	var rec inboxRecord
	if err := getJSON(ctx, g.opts.Storage, key(inboxPrefix, id, recordFile), &rec); err != nil {
		return reapFailed, err
	}
	env, err := crypto.ParseEnvelope(rec.Envelope)
	if err != nil {
		return reapFailed, err
	}
	until := env.RetainUntil
	if stored[shorteningFile] {
		if until, err = g.inboxRetention(ctx, id, env); err != nil {
			return reapFailed, err
		}
	}
	if now.Before(until) {
		return reapNotDue, nil
	}
	if held, err := g.isHeld(ctx, id); err != nil || held {
		return reapHeld, err
	}
	// From here on the bundle is past its retention: reads are refused
	// (api.go), whatever the reaper has done yet.
	if rec.Outer != nil && validOuterLayer(*rec.Outer) {
		k := key(inboxPrefix, id, rec.Outer.Key)
		if stored[rec.Outer.Key] {
			// Recorded before it is done, as every action is; a crash
			// in between records it again at the next run.
			if _, err := g.recordEnvelope(ctx, audit.Entry{Event: audit.EventBundleExpired, Actor: audit.GatewayActor,
				Peer: rec.From, RetainUntil: until}, env); err != nil {
				return reapFailed, err
			}
			if err := g.locker.Purge(ctx, k); err != nil {
				return reapFailed, err
			}
			if _, err := g.recordEnvelope(ctx, audit.Entry{Event: audit.EventKeyShredded, Actor: audit.GatewayActor,
				Peer: rec.From}, env); err != nil {
				return reapFailed, err
			}
			infos = slices.DeleteFunc(infos, func(in storage.Info) bool { return in.Key == k })
			g.log.Info("bundle expired: its payload's key is destroyed", zap.String("bundle", id), zap.Time("retain_until", until))
			if g.opts.onShredded != nil {
				g.opts.onShredded(id)
			}
		}
	}
	if now.Before(env.RetainUntil) {
		// A shortened retention: the objects stay locked until the
		// envelope's date, whose own entry brings the reaper back.
		return reapShredded, nil
	}
	if err := g.purgeKeys(ctx, infos, key(inboxPrefix, id, recordFile)); err != nil {
		return reapFailed, err
	}
	if _, err := g.recordEnvelope(ctx, audit.Entry{Event: audit.EventBundlePurged, Actor: audit.GatewayActor,
		Peer: rec.From}, env); err != nil {
		return reapFailed, err
	}
	g.log.Info("bundle purged", zap.String("bundle", id))
	return reapDone, nil
}

// reapOutbox ends the outbox entry of submitted bundle id once its
// retention has ended.
func (g *Gateway) reapOutbox(ctx context.Context, id string, now time.Time) (reapOutcome, error) {
	defer g.outboxLocks.lock(id)()
	var rec outboxRecord
	err := getJSON(ctx, g.opts.Storage, key(outboxPrefix, id, recordFile), &rec)
	if errors.Is(err, storage.ErrNotExist) {
		return reapDone, g.purgeAll(ctx, outboxPrefix+id+"/", "")
	}
	if err != nil {
		return reapFailed, err
	}
	env, err := crypto.ParseEnvelope(rec.Envelope)
	if err != nil {
		return reapFailed, err
	}
	if now.Before(env.RetainUntil) {
		return reapNotDue, nil
	}
	if held, err := g.isHeld(ctx, id); err != nil || held {
		return reapHeld, err
	}
	if err := g.purgeAll(ctx, outboxPrefix+id+"/", key(outboxPrefix, id, recordFile)); err != nil {
		return reapFailed, err
	}
	if _, err := g.recordEnvelope(ctx, audit.Entry{Event: audit.EventOutboxPurged, Actor: audit.GatewayActor,
		Peer: firstPeer(rec.Peers)}, env); err != nil {
		return reapFailed, err
	}
	g.log.Info("outbox entry purged", zap.String("bundle", id))
	return reapDone, nil
}

// reapSent removes the sender's copy of delivered bundle id's payload once
// its grace has passed.
func (g *Gateway) reapSent(ctx context.Context, id string) (reapOutcome, error) {
	defer g.outboxLocks.lock(id)()
	var rec outboxRecord
	err := getJSON(ctx, g.opts.Storage, key(outboxPrefix, id, recordFile), &rec)
	if errors.Is(err, storage.ErrNotExist) {
		return reapDone, nil // purged already
	}
	if err != nil {
		return reapFailed, err
	}
	if _, err := g.opts.Storage.Stat(ctx, key(outboxPrefix, id, receiptFile)); err != nil {
		if errors.Is(err, storage.ErrNotExist) {
			// An entry written before a receipt that was not stored:
			// the delivery is retried, and writes another.
			return reapDone, nil
		}
		return reapFailed, err
	}
	if held, err := g.isHeld(ctx, id); err != nil || held {
		return reapHeld, err
	}
	k := key(outboxPrefix, id, payloadFile)
	switch _, err := g.opts.Storage.Stat(ctx, k); {
	case errors.Is(err, storage.ErrNotExist):
		return reapDone, nil
	case err != nil:
		return reapFailed, err
	}
	env, err := crypto.ParseEnvelope(rec.Envelope)
	if err != nil {
		return reapFailed, err
	}
	if _, err := g.recordEnvelope(ctx, audit.Entry{Event: audit.EventOutboxPayloadDeleted, Actor: audit.GatewayActor,
		Peer: firstPeer(rec.Peers)}, env); err != nil {
		return reapFailed, err
	}
	if err := g.locker.Purge(ctx, k); err != nil {
		return reapFailed, err
	}
	g.log.Info("sender's copy of a delivered payload removed", zap.String("bundle", id))
	return reapDone, nil
}

// purgeAll removes every version of every object under prefix, last the
// one under last (the commit point), if set. It stops at the first
// failure: the objects are removed by a later run.
func (g *Gateway) purgeAll(ctx context.Context, prefix, last string) error {
	infos, err := g.opts.Storage.List(ctx, prefix)
	if err != nil {
		return err
	}
	return g.purgeKeys(ctx, infos, last)
}

// purgeKeys is purgeAll of the objects listed in infos. Purging an object
// that is gone already is no failure.
func (g *Gateway) purgeKeys(ctx context.Context, infos []storage.Info, last string) error {
	for _, in := range infos {
		if in.Key == last {
			continue
		}
		if err := g.locker.Purge(ctx, in.Key); err != nil {
			return err
		}
	}
	if last != "" {
		return g.locker.Purge(ctx, last)
	}
	return nil
}

func firstPeer(peers []string) string {
	if len(peers) == 0 {
		return ""
	}
	return peers[0]
}
