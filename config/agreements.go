package config

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"evx/agreement"
	"evx/api"
	"evx/crypto"
)

// Agreement is this country's cooperation agreement with one peer
// (docs/agreements.md): what it sends to the peer and accepts from it,
// for which purposes, with which handling codes and TLP labels, how long
// the receiver may keep it, how much, and until when. A peer without an
// agreement exchanges nothing with this gateway, and a list that is left
// out allows nothing: every default is the one that lets less flow.
type Agreement struct {
	// Peer is the id of the peer the agreement is with, one of peers[].id.
	// Required; one agreement per peer.
	Peer string `yaml:"peer"`

	// Version numbers the agreement's changes: raise it with every change,
	// so that each decision names the version that made it. Required; a
	// whole number from 1.
	Version int `yaml:"version"`

	// Ref names the decision or treaty the agreement rests on, such as
	// "2026/114". Required; at most 128 printable characters.
	Ref string `yaml:"ref"`

	// Status is active (bundles flow as the clauses allow), suspended or
	// terminated (nothing flows, either way). Optional; default active.
	Status agreement.Status `yaml:"status"`

	// Reason says why an agreement is suspended or terminated; it is part
	// of every refusal. Required when status is not active, and only then;
	// at most 256 printable characters.
	Reason string `yaml:"reason,omitempty"`

	// Outbound are the purposes this gateway sends bundles to the peer
	// for; Inbound those it accepts from the peer. Each is from the
	// purpose vocabulary, listed once. Optional; left out, nothing flows
	// that way.
	Outbound []string `yaml:"outbound,omitempty"`
	Inbound  []string `yaml:"inbound,omitempty"`

	// Handling are the handling codes (H0 to H3) and TLP the TLP labels
	// (TLP:RED, TLP:AMBER+STRICT, TLP:AMBER, TLP:GREEN, TLP:CLEAR) accepted
	// in both directions. Required when a purpose is allowed either way,
	// so that no agreement accepts every label by omission.
	Handling []string `yaml:"handling,omitempty"`
	TLP      []string `yaml:"tlp,omitempty"`

	// MaxRetention is, per purpose, the longest a receiver may keep a
	// bundle (its retain_until minus its creation), in days, weeks or
	// hours, such as 365d, 52w or 36h, at most 3650d. Every purpose
	// allowed either way needs one, and only those may have one. A bundle
	// that asks for longer is refused, not shortened.
	MaxRetention map[string]Retention `yaml:"max_retention,omitempty"`

	// MaxBundleSize bounds a bundle's payload exchanged with the peer, as
	// limits.max_bundle_size is written, such as 40GiB. Optional; left
	// out, only limits.max_bundle_size applies.
	MaxBundleSize Size `yaml:"max_bundle_size,omitempty"`

	// Rate bounds what is exchanged with the peer per hour, in each
	// direction. Optional; a limit left out is no limit.
	Rate Rate `yaml:"rate,omitempty"`

	// ValidFrom and ValidUntil bound when the agreement applies, each a
	// date (2027-01-01, the start of that day in UTC) or an RFC 3339 time
	// (2027-01-01T12:00:00+01:00). Before valid_from nothing flows; from
	// valid_until on (it is exclusive) the agreement has lapsed by itself,
	// a sunset clause, and nothing flows until a new version is in force.
	// Optional; left out, the agreement applies from now and without end.
	ValidFrom  Time `yaml:"valid_from,omitempty"`
	ValidUntil Time `yaml:"valid_until,omitempty"`
}

// Rate is an agreement's rate limit, per hour and direction.
type Rate struct {
	// BundlesPerHour bounds the bundles per hour. Optional; from 1.
	BundlesPerHour int `yaml:"bundles_per_hour,omitempty"`
	// BytesPerHour bounds the payload bytes per hour, as a size such as
	// 500GiB. Optional; from 1B.
	BytesPerHour Size `yaml:"bytes_per_hour,omitempty"`
}

func (a *Agreement) setDefaults() { a.Status = agreement.Active }

// Retention is a retention period, written as crypto.ParseRetention reads
// it: a whole number of days, weeks or hours, such as 365d, 52w or 36h.
type Retention time.Duration

// String returns r in days when it is whole days, else in hours, a form
// UnmarshalText accepts.
func (r Retention) String() string {
	d := time.Duration(r)
	if d%(24*time.Hour) == 0 {
		return strconv.FormatInt(int64(d/(24*time.Hour)), 10) + "d"
	}
	return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
}

// MarshalText implements [encoding.TextMarshaler].
func (r Retention) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText implements [encoding.TextUnmarshaler] with
// [crypto.ParseRetention].
func (r *Retention) UnmarshalText(text []byte) error {
	d, err := crypto.ParseRetention(strings.TrimSpace(string(text)))
	if err != nil {
		return fmt.Errorf("want days, weeks or hours, such as 365d, 52w or 36h, at most %dd", crypto.MaxRetention/(24*time.Hour))
	}
	*r = Retention(d)
	return nil
}

// Time is an instant, written as a date (the start of that day in UTC),
// such as 2027-01-01, or in RFC 3339, such as 2027-01-01T12:00:00+01:00.
type Time struct{ time.Time }

const dateLayout = "2006-01-02"

// String returns t as a date when it is the start of a day in UTC, else
// in RFC 3339: forms UnmarshalText accepts.
func (t Time) String() string {
	if t.IsZero() {
		return ""
	}
	if u := t.UTC(); u.Equal(u.Truncate(24*time.Hour)) && t.Location() == time.UTC {
		return u.Format(dateLayout)
	}
	return t.Format(time.RFC3339Nano)
}

// MarshalText implements [encoding.TextMarshaler].
func (t Time) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// UnmarshalText implements [encoding.TextUnmarshaler].
func (t *Time) UnmarshalText(text []byte) error {
	s := strings.TrimSpace(string(text))
	if d, err := time.Parse(dateLayout, s); err == nil {
		t.Time = d
		return nil
	}
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return fmt.Errorf("want a date such as 2027-01-01 or an RFC 3339 time such as 2027-01-01T12:00:00+01:00")
	}
	t.Time = v
	return nil
}

// Limits of an agreement's texts, which every refusal quotes.
const (
	maxRefLen    = 128
	maxReasonLen = 256
)

// validateAgreements checks agreements[] and users[].purposes.
func (g *Gateway) validateAgreements() Errors {
	var errs Errors
	add := func(e *Error) {
		if e != nil {
			errs = append(errs, e)
		}
	}
	byPeer := make(map[string]string)
	for i := range g.Agreements {
		a := &g.Agreements[i]
		f := index("agreements", i)
		switch _, known := g.Peer(a.Peer); {
		case a.Peer == "":
			add(g.missing(f + ".peer"))
		case !known:
			add(g.badValue(f+".peer", a.Peer, "no peer has this id; an agreement is with one of peers[].id"))
		case byPeer[a.Peer] != "":
			add(g.badValue(f+".peer", a.Peer, "%s is already the agreement with %s; a peer has one agreement", byPeer[a.Peer], a.Peer))
		default:
			byPeer[a.Peer] = f
		}
		switch {
		case a.Version == 0 && !g.set(f+".version"):
			add(g.missing(f + ".version"))
		case a.Version < 1:
			add(g.badValue(f+".version", strconv.Itoa(a.Version), "want a whole number from 1"))
		}
		switch {
		case a.Ref == "":
			add(g.missing(f + ".ref"))
		default:
			add(g.checkText(f+".ref", a.Ref, maxRefLen))
		}
		switch {
		case a.Status == "":
			add(g.missing(f + ".status"))
		case !slices.Contains(agreement.Statuses, a.Status):
			add(g.badValue(f+".status", string(a.Status), "want one of active, suspended, terminated"))
		case a.Status != agreement.Active && a.Reason == "":
			add(g.errorf(f+".reason", "missing required field (a %s agreement says why)", a.Status))
		case a.Status == agreement.Active && a.Reason != "":
			add(g.errorf(f+".reason", "an active agreement has no reason: it is for a suspended or terminated one"))
		}
		if a.Reason != "" {
			add(g.checkText(f+".reason", a.Reason, maxReasonLen))
		}
		errs = append(errs, g.checkList(f+".outbound", a.Outbound, crypto.Purposes, "purpose")...)
		errs = append(errs, g.checkList(f+".inbound", a.Inbound, crypto.Purposes, "purpose")...)
		errs = append(errs, g.checkList(f+".handling", a.Handling, crypto.HandlingCodes, "handling code")...)
		errs = append(errs, g.checkList(f+".tlp", a.TLP, crypto.TLPLabels, "TLP label")...)
		allowed := len(a.Outbound) > 0 || len(a.Inbound) > 0
		if allowed && len(a.Handling) == 0 {
			add(g.errorf(f+".handling", "missing required field (an agreement that allows a purpose lists the handling codes it accepts: %s)", strings.Join(crypto.HandlingCodes, ", ")))
		}
		if allowed && len(a.TLP) == 0 {
			add(g.errorf(f+".tlp", "missing required field (an agreement that allows a purpose lists the TLP labels it accepts: %s)", strings.Join(crypto.TLPLabels, ", ")))
		}
		for _, p := range sortedKeys(a.MaxRetention) {
			pf := f + ".max_retention." + p
			switch {
			case !slices.Contains(crypto.Purposes, p):
				add(g.errorf(pf, "unknown purpose %s (accepted: %s)", quote(p), strings.Join(crypto.Purposes, ", ")))
			case !slices.Contains(a.Outbound, p) && !slices.Contains(a.Inbound, p):
				add(g.errorf(pf, "purpose %s is neither outbound nor inbound: a cap for it would never apply", quote(p)))
			case a.MaxRetention[p] <= 0 || time.Duration(a.MaxRetention[p]) > crypto.MaxRetention:
				add(g.badValue(pf, a.MaxRetention[p].String(), "want from 1h to %dd", crypto.MaxRetention/(24*time.Hour)))
			}
		}
		for _, p := range a.Outbound {
			if _, ok := a.MaxRetention[p]; !ok && slices.Contains(crypto.Purposes, p) {
				add(g.errorf(f+".max_retention", "missing the cap of purpose %s, which outbound allows", quote(p)))
			}
		}
		for _, p := range a.Inbound {
			if _, ok := a.MaxRetention[p]; !ok && slices.Contains(crypto.Purposes, p) && !slices.Contains(a.Outbound, p) {
				add(g.errorf(f+".max_retention", "missing the cap of purpose %s, which inbound allows", quote(p)))
			}
		}
		if n := a.MaxBundleSize; g.set(f+".max_bundle_size") && (n <= 0 || n > MaxBundleSizeLimit) {
			add(g.badValue(f+".max_bundle_size", n.String(), "want from 1B to %v; leave it out for limits.max_bundle_size", Size(MaxBundleSizeLimit)))
		}
		if n := a.Rate.BundlesPerHour; g.set(f+".rate.bundles_per_hour") && n < 1 {
			add(g.badValue(f+".rate.bundles_per_hour", strconv.Itoa(n), "want a whole number from 1; leave it out for no limit"))
		}
		if n := a.Rate.BytesPerHour; g.set(f+".rate.bytes_per_hour") && n < 1 {
			add(g.badValue(f+".rate.bytes_per_hour", n.String(), "want from 1B; leave it out for no limit"))
		}
		if from, until := a.ValidFrom, a.ValidUntil; !from.IsZero() && !until.IsZero() && !from.Before(until.Time) {
			add(g.badValue(f+".valid_until", until.String(), "want a time after valid_from (%s)", from))
		}
	}
	for i, u := range g.Users {
		f := index("users", i) + ".purposes"
		if len(u.Purposes) == 0 {
			continue
		}
		if u.Role != "" && u.Role != api.RoleRecipient {
			add(g.errorf(f, "only a recipient is authorised for purposes, not a %s", u.Role))
			continue
		}
		errs = append(errs, g.checkList(f, u.Purposes, crypto.Purposes, "purpose")...)
	}
	return errs
}

// set reports whether the field was written in the file with a value. A
// Gateway built in code has no lines: its zero values count as absent.
func (g *Gateway) set(field string) bool {
	_, ok := g.lines[field]
	return ok
}

// checkList checks a list of words from a vocabulary: each known, and
// listed once.
func (g *Gateway) checkList(field string, vs, accepted []string, what string) Errors {
	var errs Errors
	for i, v := range vs {
		f := index(field, i)
		switch {
		case !slices.Contains(accepted, v):
			errs = append(errs, g.errorf(f, "unknown %s %s (accepted: %s)", what, quote(v), strings.Join(accepted, ", ")))
		case slices.Index(vs, v) < i:
			errs = append(errs, g.badValue(f, v, "listed twice"))
		}
	}
	return errs
}

// checkText checks a text that decisions quote: one line of printable
// characters, not too long.
func (g *Gateway) checkText(field, s string, max int) *Error {
	if len(s) > max {
		return g.badValue(field, s, "want at most %d characters", max)
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return g.badValue(field, s, "want one line of printable characters")
		}
	}
	if strings.TrimSpace(s) != s {
		return g.badValue(field, s, "want no leading or trailing space")
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// Model returns the agreement as package agreement decides with it.
func (a *Agreement) Model() *agreement.Agreement {
	m := &agreement.Agreement{Peer: a.Peer, Version: a.Version, Ref: a.Ref,
		Outbound: slices.Clone(a.Outbound), Inbound: slices.Clone(a.Inbound),
		Handling: slices.Clone(a.Handling), TLP: slices.Clone(a.TLP),
		MaxRetention:  make(map[string]time.Duration, len(a.MaxRetention)),
		MaxBundleSize: int64(a.MaxBundleSize),
		RateBundles:   a.Rate.BundlesPerHour, RateBytes: int64(a.Rate.BytesPerHour),
		ValidFrom: a.ValidFrom.Time, ValidUntil: a.ValidUntil.Time,
		Status: a.Status, StatusReason: a.Reason}
	for p, d := range a.MaxRetention {
		m.MaxRetention[p] = time.Duration(d)
	}
	return m
}

// AgreementList returns the configured agreements, in file order, as
// package agreement decides with them. Each call returns new copies.
func (g *Gateway) AgreementList() []*agreement.Agreement {
	list := make([]*agreement.Agreement, 0, len(g.Agreements))
	for i := range g.Agreements {
		list = append(list, g.Agreements[i].Model())
	}
	return list
}

// Agreement returns the agreement with peer, as package agreement decides
// with it, or nil when there is none: then nothing flows with the peer.
func (g *Gateway) Agreement(peer string) *agreement.Agreement {
	for i := range g.Agreements {
		if g.Agreements[i].Peer == peer {
			return g.Agreements[i].Model()
		}
	}
	return nil
}

// Warnings returns what is valid but lets nothing, or less than it seems,
// flow, as of now: a peer without an agreement, an agreement that allows
// no purpose, is not active, has lapsed or is not yet valid, and a
// recipient authorised for no purpose. evx config check prints them.
func (g *Gateway) Warnings(now time.Time) []string {
	var ws []string
	for _, p := range g.Peers {
		i := slices.IndexFunc(g.Agreements, func(a Agreement) bool { return a.Peer == p.ID })
		if i < 0 {
			ws = append(ws, fmt.Sprintf("no agreement with %s: nothing flows with it", p.ID))
			continue
		}
		a := g.Agreements[i]
		switch {
		case a.Status != agreement.Active:
			ws = append(ws, fmt.Sprintf("the agreement with %s is %s (%s): nothing flows with it", p.ID, a.Status, a.Reason))
		case !a.ValidUntil.IsZero() && !now.Before(a.ValidUntil.Time):
			ws = append(ws, fmt.Sprintf("the agreement with %s lapsed at %s: nothing flows with it until a new version is in force", p.ID, a.ValidUntil))
		case !a.ValidFrom.IsZero() && now.Before(a.ValidFrom.Time):
			ws = append(ws, fmt.Sprintf("the agreement with %s is valid from %s: nothing flows with it before", p.ID, a.ValidFrom))
		case len(a.Outbound) == 0 && len(a.Inbound) == 0:
			ws = append(ws, fmt.Sprintf("the agreement with %s allows no purpose either way: nothing flows with it", p.ID))
		}
	}
	for _, u := range g.Users {
		if u.Role == api.RoleRecipient && len(u.Purposes) == 0 {
			ws = append(ws, fmt.Sprintf("recipient %s is authorised for no purpose: no bundle may be addressed to it", u.Identity))
		}
	}
	return ws
}
