// Package agreement is the model of the cooperation agreements between
// gateways (docs/agreements.md): what one country sends to and accepts from
// each peer, for which purposes, with which handling codes and TLP labels,
// for how long the receiver may keep it, how much, until when, and whether
// cooperation is suspended. Decide turns an agreement and a request into a
// decision with a stable code and a sentence naming the clause that
// decided; it has no state, so that the gateway, the pre-flight call and
// the dry run of evx agreement check decide alike. Rate limits count what
// flowed, which is the gateway's state, not the agreement's: the agreement
// only states them.
//
// It imports no other evx package: the vocabularies it speaks of are
// checked where agreements are loaded (config).
package agreement

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Direction is the way a bundle flows, seen from the gateway that decides.
type Direction string

const (
	Outbound Direction = "out"
	Inbound  Direction = "in"
)

// Status is an agreement's state of cooperation.
type Status string

const (
	// Active: bundles flow as the clauses allow.
	Active Status = "active"
	// Suspended: nothing flows, in either direction, until it is resumed;
	// queued bundles are held.
	Suspended Status = "suspended"
	// Terminated: nothing flows, and the agreement cannot be resumed,
	// only replaced by a new version.
	Terminated Status = "terminated"
)

// Statuses lists the valid statuses.
var Statuses = []Status{Active, Suspended, Terminated}

// Agreement is one country's agreement with one peer, as its configuration
// states it. Both countries hold their own; they need not agree, and each
// gateway enforces its own on what it sends and what it accepts.
type Agreement struct {
	// Peer is the peer gateway's id.
	Peer string
	// Version increases with every change; Ref names the decision or
	// treaty the agreement rests on, such as "2026/114".
	Version int
	Ref     string
	// Outbound are the purposes this country sends to the peer for;
	// Inbound those it accepts from the peer.
	Outbound, Inbound []string
	// Handling and TLP are the handling codes and TLP labels accepted in
	// both directions.
	Handling, TLP []string
	// MaxRetention is, per purpose, the longest a receiver may keep a
	// bundle: its retain_until minus its creation time. A purpose allowed
	// in a direction but absent here is refused as retention-too-long.
	MaxRetention map[string]time.Duration
	// MaxBundleSize bounds a bundle's payload, in bytes; 0 means only the
	// gateway's own limit.
	MaxBundleSize int64
	// RateBundles and RateBytes bound, per hour and direction, the bundles
	// and payload bytes exchanged with the peer; 0 means no limit. The
	// gateway counts; Decide does not.
	RateBundles int
	RateBytes   int64
	// ValidFrom and ValidUntil bound when the agreement applies: before
	// ValidFrom nothing flows, and after ValidUntil it lapses by itself
	// (a sunset clause) until a new version is in force. ValidUntil is
	// exclusive.
	ValidFrom, ValidUntil time.Time
	// Status and StatusReason: whether cooperation is active, and why not.
	Status       Status
	StatusReason string
}

// Name is how decisions and documents name the agreement, such as
// "agreement DE→FR v3 (ref 2026/114)", seen from gateway self.
func (a *Agreement) Name(self string) string {
	return fmt.Sprintf("agreement %s→%s v%d (ref %s)", self, a.Peer, a.Version, a.Ref)
}

// Code is a decision's stable, machine-readable code.
type Code string

// The codes of decisions; docs/agreements.md explains each.
const (
	CodeAllowed            Code = "allowed"
	CodeNoAgreement        Code = "no-agreement"
	CodeSuspended          Code = "agreement-suspended"
	CodeTerminated         Code = "agreement-terminated"
	CodeNotYetValid        Code = "agreement-not-yet-valid"
	CodeLapsed             Code = "agreement-lapsed"
	CodePurposeNotAllowed  Code = "purpose-not-allowed"
	CodePurposeNotAccepted Code = "purpose-not-accepted"
	CodeHandling           Code = "handling-not-accepted"
	CodeTLP                Code = "tlp-not-accepted"
	CodeRetention          Code = "retention-too-long"
	CodeTooLarge           Code = "too-large"
	CodeRecipient          Code = "recipient-not-authorised"
	CodeRateLimited        Code = "rate-limited"
)

// Codes lists every code, allowed first, in the order Decide checks them.
var Codes = []Code{CodeAllowed, CodeNoAgreement, CodeTerminated, CodeSuspended, CodeNotYetValid, CodeLapsed,
	CodePurposeNotAllowed, CodePurposeNotAccepted, CodeHandling, CodeTLP, CodeRetention, CodeTooLarge,
	CodeRecipient, CodeRateLimited}

// Request is what a decision is about: a bundle's envelope as far as an
// agreement speaks of it, and its direction from the deciding gateway.
type Request struct {
	Peer      string
	Direction Direction
	Purpose   string
	Handling  string
	TLP       string
	// Retention is the envelope's retain_until minus its creation time.
	Retention time.Duration
	// Size is the payload's size in bytes.
	Size int64
	// Recipients are the bundle's recipients in the receiving country,
	// with the purposes each is authorised for. A sending gateway that
	// does not know them yet (a pre-flight before the directory is read)
	// leaves it empty.
	Recipients []Recipient
}

// Recipient is a recipient unit and the purposes it is authorised for.
type Recipient struct {
	Unit     string
	Purposes []string
}

// Decision is the outcome of a request under an agreement.
type Decision struct {
	Code Code
	// Reason is one sentence naming the clause that decided, for people.
	Reason string
	// Version and Ref identify the agreement that decided; 0 and "" when
	// there was none.
	Version int
	Ref     string
}

// Allowed reports whether the decision lets the bundle flow.
func (d Decision) Allowed() bool { return d.Code == CodeAllowed }

// Error is a refusal as an error, for the layers that return errors.
func (d Decision) Error() string { return string(d.Code) + ": " + d.Reason }

// Decide decides r under a, at time now, for gateway self. A nil a means
// there is no agreement with r.Peer. Rate limits are the caller's: Decide
// never answers rate-limited.
func Decide(self string, a *Agreement, now time.Time, r Request) Decision {
	if a == nil {
		return Decision{Code: CodeNoAgreement,
			Reason: fmt.Sprintf("gateway %s has no agreement with %s: nothing flows with it", self, r.Peer)}
	}
	name := a.Name(self)
	refuse := func(c Code, format string, args ...any) Decision {
		return Decision{Code: c, Reason: name + " " + fmt.Sprintf(format, args...), Version: a.Version, Ref: a.Ref}
	}
	switch {
	case a.Status == Terminated:
		return refuse(CodeTerminated, "is terminated%s", because(a.StatusReason))
	case a.Status == Suspended:
		return refuse(CodeSuspended, "is suspended%s", because(a.StatusReason))
	case a.Status != Active:
		return refuse(CodeSuspended, "has the unknown status %q: nothing flows", a.Status)
	case !a.ValidFrom.IsZero() && now.Before(a.ValidFrom):
		return refuse(CodeNotYetValid, "is valid from %s", a.ValidFrom.UTC().Format(time.RFC3339))
	case !a.ValidUntil.IsZero() && !now.Before(a.ValidUntil):
		return refuse(CodeLapsed, "lapsed at %s: nothing flows until a new version is in force", a.ValidUntil.UTC().Format(time.RFC3339))
	}
	allowed, code, way := a.Inbound, CodePurposeNotAccepted, "inbound"
	if r.Direction == Outbound {
		allowed, code, way = a.Outbound, CodePurposeNotAllowed, "outbound"
	}
	if !slices.Contains(allowed, r.Purpose) {
		return refuse(code, "does not allow purpose %q %s; allowed: %s", r.Purpose, way, list(allowed))
	}
	if !slices.Contains(a.Handling, r.Handling) {
		return refuse(CodeHandling, "does not accept handling code %q; accepted: %s", r.Handling, list(a.Handling))
	}
	if !slices.Contains(a.TLP, r.TLP) {
		return refuse(CodeTLP, "does not accept TLP label %q; accepted: %s", r.TLP, list(a.TLP))
	}
	max, ok := a.MaxRetention[r.Purpose]
	if !ok {
		return refuse(CodeRetention, "sets no maximum retention for purpose %q, so it allows no bundle for it", r.Purpose)
	}
	if r.Retention > max {
		return refuse(CodeRetention, "allows a retention of at most %s for purpose %q; the bundle asks for %s (it is refused, not shortened)",
			Days(max), r.Purpose, Days(r.Retention))
	}
	if a.MaxBundleSize > 0 && r.Size > a.MaxBundleSize {
		return refuse(CodeTooLarge, "allows bundles of at most %d bytes; this one has %d", a.MaxBundleSize, r.Size)
	}
	for _, rc := range r.Recipients {
		if !slices.Contains(rc.Purposes, r.Purpose) {
			return Decision{Code: CodeRecipient, Version: a.Version, Ref: a.Ref,
				Reason: fmt.Sprintf("recipient %s is not authorised for purpose %q; it is for: %s", rc.Unit, r.Purpose, list(rc.Purposes))}
		}
	}
	return Decision{Code: CodeAllowed, Reason: name + " allows it", Version: a.Version, Ref: a.Ref}
}

// Days formats a duration as whole days and the rest, such as "365d" or
// "1d12h0m0s": retention is stated in days.
func Days(d time.Duration) string {
	const day = 24 * time.Hour
	if d%day == 0 {
		return fmt.Sprintf("%dd", d/day)
	}
	if d > day {
		return fmt.Sprintf("%dd%s", d/day, d%day)
	}
	return d.String()
}

func because(reason string) string {
	if reason == "" {
		return ": nothing flows"
	}
	return ": " + reason + "; nothing flows"
}

func list(vs []string) string {
	if len(vs) == 0 {
		return "none"
	}
	return strings.Join(vs, ", ")
}
