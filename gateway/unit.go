package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"evx/crypto"
)

// PushRequest is what a submitting unit asks for: files sealed to units
// resolved through its gateway, under a purpose and legal basis.
type PushRequest struct {
	Key   *crypto.UnitKey
	To    []string // unit ids, such as FR/prosecutor
	Files []crypto.SourceFile
	// Seal carries purpose, legal basis and the other envelope choices;
	// its Sender and Recipients are filled in by Push.
	Seal crypto.SealOptions
	// TempDir receives the sealed bundle while it is uploaded; "" means
	// the system's temporary directory.
	TempDir string
	// Wait, if positive, is how long to wait for delivery to the peer.
	Wait time.Duration
	// Progress, if set, is called as the push goes on: in stage
	// "sealing" with the file bytes sealed so far out of total, then in
	// stage "uploading" with the payload bytes sent so far out of total
	// (with direct delivery, as fast as the peer gateway takes them).
	Progress func(stage string, done, total int64)
}

// PushResult reports a push.
type PushResult struct {
	Envelope *crypto.Envelope
	// Status is the delivery state when Push returned.
	Status *OutboxStatus
}

// Push seals the files on this machine and uploads the bundle to the
// gateway; plaintext never leaves the machine. With Wait set it asks the
// gateway to deliver the upload directly and, if the gateway stored it for
// later delivery instead, waits until the peer gateway has receipted the
// bundle or refused it.
func Push(ctx context.Context, c *Client, req PushRequest) (*PushResult, error) {
	opts := req.Seal
	opts.Sender = req.Key
	opts.Recipients = nil
	if req.Progress != nil {
		var total int64
		for _, f := range req.Files {
			total += f.Size
		}
		opts.Progress = func(done int64) { req.Progress("sealing", done, total) }
	}
	for _, unit := range req.To {
		e, err := c.Lookup(ctx, unit)
		if err != nil {
			return nil, fmt.Errorf("resolving recipient %s: %w", unit, err)
		}
		if e.Role != RoleRecipient || e.AgeRecipient == "" {
			return nil, fmt.Errorf("%s is not a recipient unit (its role is %s)", unit, e.Role)
		}
		opts.Recipients = append(opts.Recipients, crypto.PublicKey{Unit: e.Unit, AgeRecipient: e.AgeRecipient})
	}
	tmp, err := os.CreateTemp(req.TempDir, "evx-push-*.evx")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	env, err := crypto.Seal(ctx, tmp, req.Files, opts)
	if err != nil {
		return nil, err
	}
	info, err := tmp.Stat()
	if err != nil {
		return nil, err
	}
	b, err := crypto.ReadBundle(tmp, info.Size())
	if err != nil {
		return nil, err
	}
	mode := Queue
	if req.Wait > 0 {
		// Waiting anyway: the gateway may forward the upload as it
		// arrives instead of storing it first.
		mode = Direct
	}
	res := &PushResult{Envelope: env}
	for attempt := 1; ; attempt++ {
		var body io.Reader = b.Payload()
		if req.Progress != nil {
			req.Progress("uploading", 0, env.PayloadSize)
			body = &progressReader{r: body, f: func(n int64) { req.Progress("uploading", n, env.PayloadSize) }}
		}
		res.Status, err = c.Upload(ctx, b.EnvelopeJSON, b.Signature, body, env.PayloadSize, mode)
		var apiErr *APIError
		if errors.As(err, &apiErr) && apiErr.Code == "delivery-interrupted" && attempt < maxUploadAttempts {
			// Nothing was stored: the bundle is still only here.
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("uploading bundle %s: %w", env.BundleID, err)
		}
		break
	}
	switch {
	case res.Status.State == "refused":
		return res, refusedErr(res.Status)
	case req.Wait <= 0 || res.Status.State != "queued":
		return res, nil
	}
	res.Status, err = WaitDelivered(ctx, c, env.BundleID, req.Wait)
	return res, err
}

func refusedErr(st *OutboxStatus) error {
	return fmt.Errorf("the peer gateway refused bundle %s (%s): %s", st.BundleID, st.Refusal.Code, st.Refusal.Reason)
}

// maxUploadAttempts bounds the uploads of one push whose direct delivery
// was interrupted; each attempt falls back to storing the bundle if the
// peer has become unreachable.
const maxUploadAttempts = 3

// WaitDelivered waits until bundle id is delivered or refused, or until
// timeout. The gateway holds each status request until the delivery ends
// (or for statusWait), so the answer comes as soon as the peer's receipt
// is stored, without polling. A gateway that answers at once regardless is
// asked again after growing pauses.
func WaitDelivered(ctx context.Context, c *Client, id string, timeout time.Duration) (*OutboxStatus, error) {
	deadline := time.Now().Add(timeout)
	pause := 2 * time.Millisecond
	for {
		wait := min(time.Until(deadline), statusWait)
		asked := time.Now()
		st, err := c.OutboxStatusWait(ctx, id, max(wait, 0))
		if err != nil {
			return nil, err
		}
		switch st.State {
		case "delivered":
			return st, nil
		case "refused":
			return st, refusedErr(st)
		}
		if time.Now().After(deadline) {
			return st, fmt.Errorf("bundle %s not delivered after %v; it stays queued at the gateway", id, timeout)
		}
		if time.Since(asked) >= wait/2 {
			pause = 2 * time.Millisecond
			continue
		}
		// Answered early: a gateway shutting down, or one that does not
		// wait.
		select {
		case <-ctx.Done():
			return st, ctx.Err()
		case <-time.After(pause):
		}
		pause = min(pause+pause/4, 250*time.Millisecond)
	}
}

// statusWait is how long one status request waits for a delivery to end:
// well under the gateway's limit of a minute and common proxy timeouts.
const statusWait = 30 * time.Second

type progressReader struct {
	r io.Reader
	n int64
	f func(int64)
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.n += int64(n)
	p.f(p.n)
	return n, err
}

// PullResult reports a pull.
type PullResult struct {
	Entry *InboxEntry
	Open  *crypto.OpenResult
	// BundlePath is where the rebuilt bundle was kept, if asked for.
	BundlePath string
	// SenderPinned reports that the signing key was checked, on this
	// machine, against the sender's entry in its country's directory.
	SenderPinned bool
}

// Pull downloads a received bundle, rebuilds it, opens and verifies it on
// this machine into dir, and only then acknowledges retrieval. keep, if not
// empty, is a path where the bundle itself is kept for the record.
func Pull(ctx context.Context, c *Client, key *crypto.UnitKey, id, dir, keep string, progress func(int64)) (*PullResult, error) {
	e, err := c.InboxEntry(ctx, id)
	if err != nil {
		return nil, err
	}
	tmpDir := filepath.Dir(filepath.Clean(dir))
	payload, err := os.CreateTemp(tmpDir, ".evx-pull-*.age")
	if err != nil {
		return nil, err
	}
	defer os.Remove(payload.Name())
	defer payload.Close()
	var w io.Writer = payload
	if progress != nil {
		w = &progressWriter{w: payload, f: progress}
	}
	n, err := c.Download(ctx, id, w)
	if err != nil {
		return nil, fmt.Errorf("downloading bundle %s: %w", id, err)
	}
	bundle, err := os.CreateTemp(tmpDir, ".evx-pull-*.evx")
	if err != nil {
		return nil, err
	}
	defer os.Remove(bundle.Name())
	defer bundle.Close()
	if err := crypto.WriteContainer(bundle, e.Envelope, e.Signature, io.NewSectionReader(payload, 0, n), n); err != nil {
		return nil, err
	}
	info, err := bundle.Stat()
	if err != nil {
		return nil, err
	}
	b, err := crypto.ReadBundle(bundle, info.Size())
	if err != nil {
		return nil, err
	}
	// The gateway says it checked the sender; the recipient checks again
	// rather than trust what the gateway stored, and pins the key for open.
	sender, err := c.Lookup(ctx, b.Envelope.Sender.Unit)
	if err != nil {
		return nil, fmt.Errorf("looking up sender %s in its country's directory: %w", b.Envelope.Sender.Unit, err)
	}
	if sender.Role != RoleSubmitter || sender.SigningKey != b.Envelope.Sender.Key {
		return nil, fmt.Errorf("bundle %s is signed with %s, which the directory does not list for submitter %s", id, b.Envelope.Sender.Key, b.Envelope.Sender.Unit)
	}
	res, err := b.Open(ctx, key, dir, crypto.OpenOptions{ExpectSender: sender.SigningKey})
	if err != nil {
		return nil, fmt.Errorf("opening bundle %s: %w", id, err)
	}
	out := &PullResult{Entry: e, Open: res, SenderPinned: true}
	if keep != "" {
		if err := os.Link(bundle.Name(), keep); err != nil {
			return nil, fmt.Errorf("keeping the bundle: %w", err)
		}
		out.BundlePath = keep
	}
	if err := c.Ack(ctx, id); err != nil {
		return out, fmt.Errorf("bundle %s opened, but acknowledging retrieval failed: %w", id, err)
	}
	return out, nil
}

type progressWriter struct {
	w io.Writer
	n int64
	f func(int64)
}

func (p *progressWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.n += int64(n)
	p.f(p.n)
	return n, err
}
