package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"evx/agreement"
	"evx/api"
	"evx/crypto"

	"go.uber.org/zap"
)

// A pre-flight (POST /v1/preflight, docs/api.md 3.14) asks whether the
// gateway would accept an upload before the unit seals it, so that a unit
// learns of a refusal before it seals and uploads gigabytes. The gateway
// answers as the upload would: the same checks of the recipients, the same
// limit of its own, the same decision under the agreement with the
// recipients' country, and the same rate limits, which a pre-flight reads
// without using them up. It stores nothing and records nothing in the
// transfer log (docs/agreements.md section 4 says why): the upload that
// follows is decided, and recorded, again.

// preflight answers a submitter's pre-flight.
func (g *Gateway) preflight(w http.ResponseWriter, r *http.Request, u User) (any, error) {
	req, err := readPreflight(w, r, g.opts.uploadStallTimeout())
	if err != nil {
		return nil, err
	}
	now := g.now()
	retention, err := preflightRetention(req, now)
	if err != nil {
		return nil, err
	}
	// Upload checks 8, 10 and 10a, in the upload's order.
	if req.Size > g.opts.MaxBundleSize {
		return nil, api.Errorf(api.CodeTooLarge, "payload of %d bytes exceeds this gateway's limit of %d", req.Size, g.opts.MaxBundleSize)
	}
	var peers []string
	for _, unit := range req.Recipients {
		e, err := g.lookupUnit(r.Context(), unit)
		if err != nil {
			return nil, lookupErr(err, api.CodeUnknownRecipient)
		}
		if api.Role(e.Role) != api.RoleRecipient {
			return nil, api.Errorf(api.CodeUnknownRecipient, "%s is not a recipient unit in the directory", unit)
		}
		country, _, _ := strings.Cut(unit, "/")
		if country == g.opts.ID {
			return nil, api.Errorf(api.CodeUnknownRecipient, "%s is a local unit: evx carries bundles between countries", unit)
		}
		if !slices.Contains(peers, country) {
			peers = append(peers, country)
		}
	}
	if len(peers) > 1 {
		return nil, api.Errorf(api.CodeMultipleCountries, "the bundle is addressed to units in %s: evx delivers each bundle to one country, so seal one bundle per country", strings.Join(peers, ", "))
	}
	// Upload check 11a, as decide makes it, without counting.
	peer := peers[0]
	d, a := g.decideUnder(now, agreement.Request{
		Peer: peer, Direction: agreement.Outbound, Purpose: req.Purpose, Handling: req.Handling, TLP: req.TLP,
		Retention: retention, Size: req.Size, Recipients: g.directoryRecipients(r.Context(), req.Recipients),
	})
	if d.Allowed() {
		if wait, why := g.rates.peek(a, agreement.Outbound, now, req.Size); why != "" {
			d.refuseByRate(g.opts.ID, a, wait, why)
		}
	}
	g.log.Info("pre-flight", zap.String("unit", u.Unit), zap.String("peer", peer), zap.String("purpose", req.Purpose),
		zap.Int64("size", req.Size), zap.String("code", string(d.Code)))
	if !d.Allowed() {
		if d.retryAfter > 0 {
			w.Header().Set("Retry-After", retryAfterSeconds(d.retryAfter))
		}
		return nil, api.Errorf(api.Code(d.Code), "%s", d.Reason)
	}
	return api.Preflight{Allowed: true, Peer: peer, Agreement: api.PreflightAgreement{Version: d.Version, Ref: d.Ref}}, nil
}

// readPreflight reads and checks a pre-flight's body: at most
// api.MaxPreflightBody bytes, arriving within timeout, one JSON object of
// known, unrepeated members, each value one an envelope may hold.
func readPreflight(w http.ResponseWriter, r *http.Request, timeout time.Duration) (*api.PreflightRequest, error) {
	var req api.PreflightRequest
	if err := readSmallJSON(w, r, timeout, api.MaxPreflightBody, api.CodeBadPreflight, "a pre-flight request", &req); err != nil {
		return nil, err
	}
	if err := checkPreflight(&req); err != nil {
		return nil, api.Errorf(api.CodeBadPreflight, "%v", err)
	}
	return &req, nil
}

// readSmallJSON reads a request's body, of at most limit bytes, within
// timeout, as one JSON object into v: no unknown member, no member twice.
// A body that is not is an error with code, naming what it should be.
func readSmallJSON(w http.ResponseWriter, r *http.Request, timeout time.Duration, limit int64, code api.Code, what string, v any) error {
	if r.ContentLength > limit {
		return api.Errorf(code, "the body is %d bytes, over the limit of %d", r.ContentLength, limit)
	}
	// The body is small: it has a deadline as a whole, so that a client
	// sending a byte now and then cannot hold the request open.
	if err := http.NewResponseController(w).SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return err // no body is read without a deadline
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return api.Errorf(code, "the body is over the limit of %d bytes", limit)
	case err != nil:
		return api.Errorf(code, "the body did not arrive whole within %v", timeout)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return api.Errorf(code, "the body is not %s: %v", what, err)
	}
	if dec.More() {
		return api.Errorf(code, "the body holds more than one JSON value")
	}
	// A member given twice would be read as its last value, which
	// another reader may take differently.
	if err := crypto.CheckUniqueMembers(data); err != nil {
		return api.Errorf(code, "%v", err)
	}
	return nil
}

// checkPreflight checks a pre-flight's values as the envelope's rules
// would check the bundle's (crypto.Envelope.Validate).
func checkPreflight(req *api.PreflightRequest) error {
	if len(req.Recipients) == 0 {
		return errors.New("no recipients")
	}
	if len(req.Recipients) > crypto.MaxRecipients {
		return fmt.Errorf("%d recipients, over the limit of %d", len(req.Recipients), crypto.MaxRecipients)
	}
	for i, unit := range req.Recipients {
		if !crypto.ValidUnitID(unit) {
			return fmt.Errorf("recipient %q: want COUNTRY/unit, such as FR/prosecutor", unit)
		}
		if slices.Contains(req.Recipients[:i], unit) {
			return fmt.Errorf("recipient %q is listed twice", unit)
		}
	}
	if err := crypto.CheckPurpose(req.Purpose); err != nil {
		return err
	}
	if err := crypto.CheckHandling(req.Handling); err != nil {
		return err
	}
	if err := crypto.CheckTLP(req.TLP); err != nil {
		return err
	}
	if req.Size <= 0 || req.Size > crypto.MaxPayloadSize {
		return fmt.Errorf("size %d out of range (1 to %d bytes)", req.Size, int64(crypto.MaxPayloadSize))
	}
	return checkLegalBasis(req.LegalBasis)
}

// maxLegalBasis is the envelope's limit of its free-text fields.
const maxLegalBasis = 256

// checkLegalBasis checks an optional legal basis as the envelope checks
// its own: printable UTF-8 of at most maxLegalBasis bytes, without spaces
// around it.
func checkLegalBasis(s string) error {
	if len(s) > maxLegalBasis || !utf8.ValidString(s) || strings.TrimSpace(s) != s ||
		strings.ContainsFunc(s, func(r rune) bool { return !unicode.IsPrint(r) && r != ' ' }) {
		return fmt.Errorf("legal_basis %q: want printable UTF-8 of at most %d bytes, without spaces around it", s, maxLegalBasis)
	}
	return nil
}

// preflightRetention is the retention a pre-flight asks for, as decide
// counts a bundle's: from its creation, which for a bundle not yet sealed
// is now, in whole seconds rounded up.
func preflightRetention(req *api.PreflightRequest, now time.Time) (time.Duration, error) {
	var d time.Duration
	switch {
	case req.RetainUntil != nil && req.Retention != "":
		return 0, api.Errorf(api.CodeBadPreflight, "give retain_until or retention, not both")
	case req.RetainUntil != nil:
		if !req.RetainUntil.After(now) {
			return 0, api.Errorf(api.CodeBadPreflight, "retain_until %s is not in the future", req.RetainUntil.UTC().Format(time.RFC3339))
		}
		d = ceilSecond(req.RetainUntil.Sub(now))
	case req.Retention != "":
		var err error
		if d, err = crypto.ParseRetention(req.Retention); err != nil {
			return 0, api.Errorf(api.CodeBadPreflight, "retention: %v", err)
		}
	default:
		return 0, api.Errorf(api.CodeBadPreflight, "give retain_until or retention")
	}
	if d > crypto.MaxRetention {
		return 0, api.Errorf(api.CodeBadPreflight, "a retention of %s is longer than the limit of %s", agreement.Days(d), agreement.Days(crypto.MaxRetention))
	}
	return d, nil
}
