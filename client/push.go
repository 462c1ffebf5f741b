package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"evx/api"
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
	Status *api.OutboxStatus
}

// Push seals the files on this machine and uploads the bundle to the
// gateway; plaintext never leaves the machine. With Wait set it asks the
// gateway to deliver the upload directly and, if the gateway stored it for
// later delivery instead, waits until the peer gateway has receipted the
// bundle or refused it, or until Wait is over: the bundle is then queued at
// the gateway, which is not an error (the result's state says so).
//
// Before sealing it checks what can fail without the files: the form of the
// recipients' unit ids, that they belong to one country, that the client
// is a submitter of another country, that each recipient resolves to a
// recipient unit in the directory, with the gateway's pre-flight call
// ([Client.Preflight]) that the gateway's agreement with the recipients'
// country and its limits would let the upload through, and that each
// recipient whose directory entry lists purposes is authorised for the
// bundle's. A refusal then is the *api.Error the upload would have met; a
// gateway without the call is not asked.
func Push(ctx context.Context, c *Client, req PushRequest) (*PushResult, error) {
	country, err := RecipientCountry(req.To)
	if err != nil {
		return nil, err
	}
	me, err := c.WhoAmI(ctx)
	if err != nil {
		return nil, err
	}
	if me.Role != api.RoleSubmitter {
		return nil, fmt.Errorf("you are %s with role %s at gateway %s; pushing needs role submitter",
			Printable(me.Unit), Printable(string(me.Role)), Printable(me.Gateway))
	}
	if country == me.Gateway {
		return nil, fmt.Errorf("%s is a unit of your own country (your gateway is %s): evx carries bundles between countries",
			req.To[0], country)
	}
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
	var entries []*crypto.DirectoryEntry
	for _, unit := range req.To {
		e, err := c.Lookup(ctx, unit)
		if err != nil {
			return nil, fmt.Errorf("resolving recipient %s: %w", unit, err)
		}
		if api.Role(e.Role) != api.RoleRecipient || e.AgeRecipient == "" {
			return nil, fmt.Errorf("%s is not a recipient unit (its role is %s)", unit, Printable(e.Role))
		}
		entries = append(entries, e)
		opts.Recipients = append(opts.Recipients, crypto.PublicKey{Unit: e.Unit, AgeRecipient: e.AgeRecipient})
	}
	// The gateway says now whether it would accept the upload, before
	// the files are sealed and sent.
	if err := preflightPush(ctx, c, req); err != nil {
		var apiErr *api.Error
		if errors.As(err, &apiErr) && !apiErr.Code.Temporary() {
			return nil, fmt.Errorf("your gateway refuses the bundle; nothing was sealed: %w", err)
		}
		return nil, fmt.Errorf("asking your gateway before sealing: %w", err)
	}
	// The recipients' purposes come last, as the gateways check them
	// after their agreements' clauses; a gateway that decides with them
	// has refused already, but one without the pre-flight call has not.
	for _, e := range entries {
		if err := authorised(e, country, req.Seal.Purpose); err != nil {
			return nil, err
		}
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
	mode := api.Queue
	if req.Wait > 0 {
		// Waiting anyway: the gateway may forward the upload as it
		// arrives instead of storing it first.
		mode = api.Direct
	}
	res := &PushResult{Envelope: env}
	for attempt := 1; ; attempt++ {
		var body io.Reader = b.Payload()
		if req.Progress != nil {
			req.Progress("uploading", 0, env.PayloadSize)
			body = &progressReader{r: body, f: func(n int64) { req.Progress("uploading", n, env.PayloadSize) }}
		}
		res.Status, err = c.Upload(ctx, b.EnvelopeJSON, b.Signature, body, env.PayloadSize, mode)
		var apiErr *api.Error
		if errors.As(err, &apiErr) && apiErr.Code == api.CodeDeliveryInterrupted && attempt < maxUploadAttempts {
			// Nothing was stored: the bundle is still only here.
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("uploading bundle %s: %w", env.BundleID, err)
		}
		break
	}
	switch {
	case res.Status.State == api.StateRefused:
		return res, refusedErr(res.Status)
	case req.Wait <= 0 || res.Status.State != api.StateQueued:
		return res, nil
	}
	st, err := WaitDelivered(ctx, c, env.BundleID, req.Wait)
	if st != nil {
		res.Status = st
	}
	if errors.Is(err, ErrStillQueued) {
		// The gateway has the bundle and keeps delivering it: the push
		// is done, its delivery is not over.
		return res, nil
	}
	return res, err
}

// authorised refuses a push to recipient e, of country's gateway, if its
// directory entry lists the purposes it is authorised for and purpose is
// not among them: the receiving gateway would refuse the bundle, and the
// sending one too. The refusal is the API's recipient-not-authorised, in
// the gateways' words, so that the message starts with the code and evx
// exits as for the gateways' refusals. An entry without purposes (its
// gateway predates them) says nothing, and a purpose outside the
// vocabulary is left to the pre-flight and to sealing, which say why.
func authorised(e *crypto.DirectoryEntry, country, purpose string) error {
	if crypto.CheckPurpose(purpose) != nil || !e.Refuses(purpose) {
		return nil
	}
	ps := make([]string, len(e.Purposes))
	for i, p := range e.Purposes {
		ps[i] = Printable(p)
	}
	return fmt.Errorf("%w (the unit directory of %s); nothing was sealed", api.Errorf(api.CodeRecipientNotAuthorised,
		"recipient %s is not authorised for purpose %q; it is for: %s", e.Unit, purpose, strings.Join(ps, ", ")), country)
}

// RecipientCountry checks recipient unit ids for push: each of the form
// COUNTRY/unit, all of one country, which it returns. A bundle goes to one
// country's gateway.
func RecipientCountry(to []string) (string, error) {
	if len(to) == 0 {
		return "", errors.New("no recipients")
	}
	var countries []string
	for _, unit := range to {
		if !crypto.ValidUnitID(unit) {
			return "", fmt.Errorf("recipient %q: want COUNTRY/unit, such as FR/prosecutor", Printable(unit))
		}
		country, _, _ := strings.Cut(unit, "/")
		if !slices.Contains(countries, country) {
			countries = append(countries, country)
		}
	}
	if len(countries) > 1 {
		return "", fmt.Errorf("recipients in %s: evx delivers each bundle to one country, so seal one bundle per country", strings.Join(countries, " and "))
	}
	return countries[0], nil
}

func refusedErr(st *api.OutboxStatus) error {
	return &RefusedError{BundleID: st.BundleID, Refusal: st.Refusal}
}

// RefusedError is a peer gateway's final refusal of a pushed bundle.
type RefusedError struct {
	BundleID string
	// Refusal is the peer's code and reason; nil if the gateway gave none.
	Refusal *api.Refusal
}

func (e *RefusedError) Error() string {
	if e.Refusal == nil {
		return fmt.Sprintf("the peer gateway refused bundle %s", Printable(e.BundleID))
	}
	return fmt.Sprintf("the peer gateway refused bundle %s (%s): %s", Printable(e.BundleID), Printable(e.Refusal.Code), Printable(e.Refusal.Reason))
}

// RefusalCode returns the peer's refusal code (protocol.md section 6), or
// "refused" if the gateway gave none.
func (e *RefusedError) RefusalCode() string {
	if e.Refusal == nil {
		return "refused"
	}
	return Printable(e.Refusal.Code)
}

// maxUploadAttempts bounds the uploads of one push whose direct delivery
// was interrupted; each attempt falls back to storing the bundle if the
// peer has become unreachable.
const maxUploadAttempts = 3

// ErrStillQueued is wrapped by the error of [WaitDelivered] when the wait
// ended before the delivery did: the bundle stays queued at the gateway,
// which goes on delivering it.
var ErrStillQueued = errors.New("it stays queued at the gateway")

// WaitDelivered waits until bundle id is delivered or refused, or until
// timeout, when the error wraps [ErrStillQueued]. The gateway holds each status request until the delivery ends
// (or for statusWait), so the answer comes as soon as the peer's receipt
// is stored, without polling. A gateway that answers at once regardless is
// asked again after growing pauses.
func WaitDelivered(ctx context.Context, c *Client, id string, timeout time.Duration) (*api.OutboxStatus, error) {
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
		case api.StateDelivered:
			return st, nil
		case api.StateRefused:
			return st, refusedErr(st)
		}
		if time.Now().After(deadline) {
			return st, fmt.Errorf("bundle %s not delivered after %v: %w", id, timeout, ErrStillQueued)
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
