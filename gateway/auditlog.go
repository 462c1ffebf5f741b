package gateway

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"evx/api"
	"evx/audit"
	"evx/crypto"
	"evx/storage"

	"go.uber.org/zap"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// The transfer log (docs/audit.md) records every event that changes or
// reveals something. An event is recorded before it is acknowledged to
// the unit or peer that caused it: a gateway that cannot record refuses
// to act (503 storage-unavailable, or unavailable to a peer), so that no
// acknowledged action is missing from the log.

// openLog opens the gateway's transfer log in its storage, signing
// checkpoints with the key derived from the gateway signing key.
func (g *Gateway) openLog(ctx context.Context) error {
	origin := crypto.LogOrigin(g.opts.ID)
	signer, err := g.opts.SigningKey.CheckpointSigner(origin)
	if err != nil {
		return err
	}
	verifier, err := note.NewVerifier(g.opts.SigningKey.CheckpointVerifierKey(origin))
	if err != nil {
		return err
	}
	l, err := audit.Open(ctx, g.opts.Storage, audit.Config{Origin: origin, Signer: signer, Verifier: verifier,
		Logger: g.log.Named("log"), Now: g.opts.Now})
	if err != nil {
		return fmt.Errorf("opening the transfer log: %w", err)
	}
	g.tlog = l
	return nil
}

// logged is where an entry was recorded.
type logged struct {
	index int64
	leaf  tlog.Hash
}

// record appends e to the transfer log, with the time and this gateway's
// id, and returns once it is durable.
func (g *Gateway) record(ctx context.Context, e audit.Entry) (logged, error) {
	l, err := g.recordAll(ctx, e)
	if err != nil {
		return logged{}, err
	}
	return l[0], nil
}

// recordAll records events that happen together with one storage write,
// in their order, as record does.
func (g *Gateway) recordAll(ctx context.Context, es ...audit.Entry) ([]logged, error) {
	now := g.now().UTC()
	data := make([][]byte, len(es))
	for i, e := range es {
		e.Time = now
		e.Gateway = g.opts.ID
		var err error
		if data[i], err = e.MarshalCanonical(); err != nil {
			// A bug: the gateway built an entry its own log refuses.
			return nil, fmt.Errorf("transfer log entry %s: %w", e.Event, err)
		}
	}
	first, err := g.tlog.AppendAll(ctx, data)
	if err != nil {
		g.metrics.logFailures.Add(float64(len(es)))
		return nil, fmt.Errorf("recording %s in the transfer log: %w", eventNames(es), err)
	}
	out := make([]logged, len(es))
	for i, d := range data {
		out[i] = logged{index: first + int64(i), leaf: tlog.RecordHash(d)}
	}
	return out, nil
}

// eventNames names the events of es for an error message.
func eventNames(es []audit.Entry) string {
	names := make([]string, len(es))
	for i, e := range es {
		names[i] = string(e.Event)
	}
	return strings.Join(names, " and ")
}

// recordEnvelope records an event about a bundle described by env, with
// the envelope's members that the event carries.
func (g *Gateway) recordEnvelope(ctx context.Context, e audit.Entry, env *crypto.Envelope) (logged, error) {
	if err := withEnvelope(&e, env); err != nil {
		return logged{}, err
	}
	return g.record(ctx, e)
}

// withEnvelope sets the members of e that its event carries from env,
// if not nil.
func withEnvelope(e *audit.Entry, env *crypto.Envelope) error {
	if env == nil {
		return nil
	}
	return e.SetEnvelope(env)
}

// recordOrRefuse records an event before the gateway acknowledges it to a
// local unit: when the log cannot record it, the unit gets a refusal it
// may retry, and the action is not taken.
func (g *Gateway) recordOrRefuse(ctx context.Context, e audit.Entry, env *crypto.Envelope) (logged, error) {
	l, err := g.recordEnvelope(ctx, e, env)
	if err != nil {
		g.log.Error("transfer log", zap.String("event", string(e.Event)), zap.Error(err))
		if errors.Is(err, storage.ErrUnavailable) {
			return l, err // 503 storage-unavailable, by the API's error mapping
		}
		return l, api.Errorf(api.CodeStorageUnavailable, "the gateway cannot record the request in its transfer log; nothing was done, retry later")
	}
	return l, nil
}

// recordStarted records the start of the gateway with the digest of its
// effective configuration.
func (g *Gateway) recordStarted(ctx context.Context) error {
	_, err := g.record(ctx, audit.Entry{Event: audit.EventGatewayStarted, Actor: audit.GatewayActor,
		ConfigSHA256: g.opts.ConfigSHA256})
	return err
}

// logStopTimeout bounds how long a stopping gateway waits for its last
// entries to be integrated into a checkpoint.
const logStopTimeout = 5 * time.Second
