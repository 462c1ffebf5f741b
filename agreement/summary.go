package agreement

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// SummaryFormat is the value of a summary's "format" member.
const SummaryFormat = "evx-agreement-summary/1"

// Bounds of a summary, which a peer sends: a parser refuses anything
// beyond them before using it, and Marshal refuses to write it. The
// largest summary they admit is under MaxSummarySize, so that a summary
// within them always fits.
const (
	// MaxSummarySize bounds a summary's body in bytes.
	MaxSummarySize = 32 << 10
	// MaxSummaryItems bounds each list (outbound, inbound, handling,
	// TLP) and the purposes with a maximum retention.
	MaxSummaryItems = 64
	// MaxSummaryWord bounds a purpose, handling code, TLP label or
	// gateway id, in bytes.
	MaxSummaryWord = 64
	// MaxSummaryRef bounds the agreement's reference, in bytes.
	MaxSummaryRef = 256
	// MaxSummaryReason bounds the reason of a suspension or
	// termination, in bytes.
	MaxSummaryReason = 512
	// MaxSummaryRetention bounds a maximum retention: a hundred years,
	// far above any configuration's, and far below a time.Duration's
	// range.
	MaxSummaryRetention = 36500 * 24 * time.Hour
	// MaxSummaryNumber bounds every number of a summary (2^53 - 1), so
	// that any JSON reader, one that holds numbers as float64 included,
	// reads them exactly.
	MaxSummaryNumber = 1<<53 - 1
)

// Summary is what a gateway states, signed, to a peer about its agreement
// with that peer: the clauses as it enforces them, its status as it
// applies now (an operator's suspension included), its version and
// reference. The peer compares it with its own agreement (Diff) and
// decides its uploads under it too, as this gateway will decide them
// inbound (Decide with Direction Inbound), so that a unit learns of a
// refusal before a transfer fails.
type Summary struct {
	// Gateway issues the summary; Peer is the gateway it is meant for.
	Gateway, Peer string
	// Issued is when it was made.
	Issued time.Time
	// Sequence increases with every summary Gateway issues for Peer, so
	// that a receiver keeps only the newest, whatever order they arrive
	// in. NextSequence makes one. From 1 to MaxSummaryNumber.
	Sequence uint64
	// Agreement is Gateway's agreement with Peer, its Peer being the
	// summary's; nil when there is none, and nothing flows.
	Agreement *Agreement
}

// NextSequence returns the sequence of a summary issued at now, after one
// of sequence last: the time in microseconds since 1970 (which stays
// under MaxSummaryNumber until the year 2255), or last + 1 if the clock
// has not moved past it, so that summaries issued across restarts
// increase without the issuer storing anything.
func NextSequence(last uint64, now time.Time) uint64 {
	return max(last+1, uint64(max(now.UnixMicro(), 0)))
}

// wireSummary is a summary as it is signed: members named and encoded
// once, so that each summary has one form.
type wireSummary struct {
	Format    string         `json:"format"`
	Gateway   string         `json:"gateway"`
	Peer      string         `json:"peer"`
	Issued    string         `json:"issued"`
	Sequence  uint64         `json:"sequence"`
	Agreement *wireAgreement `json:"agreement"`
}

// wireAgreement is an agreement's clauses in a summary. Every member is
// always present: lists as [] when empty, times as "" when not set, and
// numbers as 0 for no limit, as in Agreement.
type wireAgreement struct {
	Version  int      `json:"version"`
	Ref      string   `json:"ref"`
	Status   Status   `json:"status"`
	Reason   string   `json:"reason"`
	Outbound []string `json:"outbound"`
	Inbound  []string `json:"inbound"`
	Handling []string `json:"handling"`
	TLP      []string `json:"tlp"`
	// MaxRetention is in whole seconds.
	MaxRetention  map[string]int64 `json:"max_retention"`
	MaxBundleSize int64            `json:"max_bundle_size"`
	RateBundles   int              `json:"rate_bundles_per_hour"`
	RateBytes     int64            `json:"rate_bytes_per_hour"`
	ValidFrom     string           `json:"valid_from"`
	ValidUntil    string           `json:"valid_until"`
}

// Marshal returns the summary's body in its one form, for the issuing
// gateway to sign: canonical JSON (members sorted, no white space, no
// HTML escaping). It fails if the summary is outside the bounds a
// receiver checks, or if its agreement cannot be stated exactly: a
// maximum retention that is not whole seconds.
func (s *Summary) Marshal() ([]byte, error) {
	w := wireSummary{Format: SummaryFormat, Gateway: s.Gateway, Peer: s.Peer,
		Issued: formatTime(s.Issued), Sequence: s.Sequence}
	if a := s.Agreement; a != nil {
		if a.Peer != s.Peer {
			return nil, fmt.Errorf("agreement summary: the agreement is with %q, the summary for %q", a.Peer, s.Peer)
		}
		w.Agreement = &wireAgreement{Version: a.Version, Ref: a.Ref, Status: a.Status, Reason: a.StatusReason,
			Outbound: nonNil(a.Outbound), Inbound: nonNil(a.Inbound), Handling: nonNil(a.Handling), TLP: nonNil(a.TLP),
			MaxRetention:  make(map[string]int64, len(a.MaxRetention)),
			MaxBundleSize: a.MaxBundleSize, RateBundles: a.RateBundles, RateBytes: a.RateBytes}
		for p, d := range a.MaxRetention {
			if d%time.Second != 0 {
				return nil, fmt.Errorf("agreement summary: maximum retention %s of purpose %q is not whole seconds", d, p)
			}
			w.Agreement.MaxRetention[p] = int64(d / time.Second)
		}
		if !a.ValidFrom.IsZero() {
			w.Agreement.ValidFrom = formatTime(a.ValidFrom)
		}
		if !a.ValidUntil.IsZero() {
			w.Agreement.ValidUntil = formatTime(a.ValidUntil)
		}
	}
	if err := w.check(); err != nil {
		return nil, fmt.Errorf("agreement summary: %w", err)
	}
	body, err := canonicalJSON(&w)
	if err != nil {
		return nil, fmt.Errorf("agreement summary: %w", err)
	}
	if len(body) > MaxSummarySize {
		return nil, fmt.Errorf("agreement summary: %d bytes, over the limit of %d", len(body), MaxSummarySize)
	}
	return body, nil
}

// ParseSummary decodes and checks a summary's body, which gateway from
// issued for gateway to: the body is what a signature verified over, so
// it is read strictly. It must be in the one form Marshal writes (which
// refuses unknown, missing and repeated members), within the bounds
// above, and name from as its issuer and to as its peer: a summary signed
// for another peer is not one for to. The agreement returned is from's
// with to (its Peer is to), which to may decide under as from would, with
// Direction Inbound for what to sends. Its times are in UTC.
func ParseSummary(body []byte, from, to string) (*Summary, error) {
	if len(body) > MaxSummarySize {
		return nil, fmt.Errorf("agreement summary of %s: %d bytes, over the limit of %d", from, len(body), MaxSummarySize)
	}
	s, err := parseSummary(body)
	if err != nil {
		return nil, fmt.Errorf("agreement summary of %s: %w", from, err)
	}
	switch {
	case s.Gateway != from:
		return nil, fmt.Errorf("agreement summary of %s: issued by %q", from, s.Gateway)
	case s.Peer != to:
		return nil, fmt.Errorf("agreement summary of %s: meant for %q, not %s", from, s.Peer, to)
	}
	return s, nil
}

func parseSummary(body []byte) (*Summary, error) {
	var w wireSummary
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return nil, fmt.Errorf("malformed body: %v", err)
	}
	if dec.More() {
		return nil, errors.New("malformed body: data after the JSON object")
	}
	if err := w.check(); err != nil {
		return nil, err
	}
	// The one form: this also refuses members missing, repeated (the
	// decoder keeps one of them) or in another case, other spellings of
	// the same numbers and strings, and white space.
	canonical, err := canonicalJSON(&w)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(canonical, body) {
		return nil, errors.New("body is not in canonical form")
	}
	s := &Summary{Gateway: w.Gateway, Peer: w.Peer, Sequence: w.Sequence}
	s.Issued, _ = parseTime(w.Issued) // checked
	if wa := w.Agreement; wa != nil {
		a := &Agreement{Peer: w.Peer, Version: wa.Version, Ref: wa.Ref, Status: wa.Status, StatusReason: wa.Reason,
			Outbound: nilIfEmpty(wa.Outbound), Inbound: nilIfEmpty(wa.Inbound),
			Handling: nilIfEmpty(wa.Handling), TLP: nilIfEmpty(wa.TLP),
			MaxRetention:  make(map[string]time.Duration, len(wa.MaxRetention)),
			MaxBundleSize: wa.MaxBundleSize, RateBundles: wa.RateBundles, RateBytes: wa.RateBytes}
		for p, secs := range wa.MaxRetention {
			a.MaxRetention[p] = time.Duration(secs) * time.Second
		}
		if wa.ValidFrom != "" {
			a.ValidFrom, _ = parseTime(wa.ValidFrom)
		}
		if wa.ValidUntil != "" {
			a.ValidUntil, _ = parseTime(wa.ValidUntil)
		}
		s.Agreement = a
	}
	return s, nil
}

// check checks the members' values and bounds, on both sides of the wire.
func (w *wireSummary) check() error {
	if w.Format != SummaryFormat {
		return fmt.Errorf("unsupported format %q", w.Format)
	}
	if err := checkWord("gateway", w.Gateway); err != nil {
		return err
	}
	if err := checkWord("peer", w.Peer); err != nil {
		return err
	}
	if t, err := parseTime(w.Issued); err != nil {
		return fmt.Errorf("issued: %w", err)
	} else if t.IsZero() {
		return errors.New("issued is the zero time")
	}
	if w.Sequence < 1 || w.Sequence > MaxSummaryNumber {
		return fmt.Errorf("sequence %d out of range, want 1 to %d", w.Sequence, uint64(MaxSummaryNumber))
	}
	if w.Agreement == nil {
		return nil
	}
	return w.Agreement.check()
}

func (a *wireAgreement) check() error {
	if a.Version < 1 || a.Version > MaxSummaryNumber {
		return fmt.Errorf("version %d out of range, want 1 to %d", a.Version, MaxSummaryNumber)
	}
	if a.Ref == "" {
		return errors.New("ref is empty")
	}
	if err := checkText("ref", a.Ref, MaxSummaryRef); err != nil {
		return err
	}
	switch {
	case !slices.Contains(Statuses, a.Status):
		return fmt.Errorf("unknown status %q, want one of active, suspended, terminated", a.Status)
	case a.Status == Active && a.Reason != "":
		return fmt.Errorf("reason %q for an active agreement", a.Reason)
	case a.Status != Active && a.Reason == "":
		return fmt.Errorf("a %s agreement without a reason", a.Status)
	}
	if err := checkText("reason", a.Reason, MaxSummaryReason); err != nil {
		return err
	}
	for _, l := range []struct {
		name string
		vs   []string
	}{{"outbound", a.Outbound}, {"inbound", a.Inbound}, {"handling", a.Handling}, {"tlp", a.TLP}} {
		if err := checkList(l.name, l.vs); err != nil {
			return err
		}
	}
	if a.MaxRetention == nil {
		return errors.New("max_retention missing")
	}
	if len(a.MaxRetention) > MaxSummaryItems {
		return fmt.Errorf("max_retention of %d purposes, at most %d allowed", len(a.MaxRetention), MaxSummaryItems)
	}
	for _, p := range slices.Sorted(maps.Keys(a.MaxRetention)) {
		if err := checkWord("max_retention purpose", p); err != nil {
			return err
		}
		if secs := a.MaxRetention[p]; secs < 1 || secs > int64(MaxSummaryRetention/time.Second) {
			return fmt.Errorf("max_retention of %q is %d seconds, want 1 to %d", p, secs, int64(MaxSummaryRetention/time.Second))
		}
	}
	for _, n := range []struct {
		name string
		v    int64
	}{{"max_bundle_size", a.MaxBundleSize}, {"rate_bundles_per_hour", int64(a.RateBundles)}, {"rate_bytes_per_hour", a.RateBytes}} {
		if n.v < 0 || n.v > MaxSummaryNumber {
			return fmt.Errorf("%s %d out of range, want 0 to %d", n.name, n.v, MaxSummaryNumber)
		}
	}
	var from, until time.Time
	var err error
	if a.ValidFrom != "" {
		if from, err = parseTime(a.ValidFrom); err != nil {
			return fmt.Errorf("valid_from: %w", err)
		}
	}
	if a.ValidUntil != "" {
		if until, err = parseTime(a.ValidUntil); err != nil {
			return fmt.Errorf("valid_until: %w", err)
		}
	}
	if !from.IsZero() && !until.IsZero() && !from.Before(until) {
		return fmt.Errorf("valid_until %s is not after valid_from %s", a.ValidUntil, a.ValidFrom)
	}
	return nil
}

// checkList checks a list of words: present (an empty array, not null),
// at most MaxSummaryItems, each a word, none twice.
func checkList(name string, vs []string) error {
	if vs == nil {
		return fmt.Errorf("%s missing", name)
	}
	if len(vs) > MaxSummaryItems {
		return fmt.Errorf("%s of %d items, at most %d allowed", name, len(vs), MaxSummaryItems)
	}
	for i, v := range vs {
		if err := checkWord(name, v); err != nil {
			return err
		}
		if slices.Index(vs, v) < i {
			return fmt.Errorf("%s lists %q twice", name, v)
		}
	}
	return nil
}

// checkWord checks a gateway id, purpose, handling code or TLP label: 1 to
// MaxSummaryWord bytes of ASCII letters, digits and the marks the
// vocabularies use ("TLP:AMBER+STRICT"), nothing JSON would escape.
func checkWord(name, v string) error {
	if v == "" || len(v) > MaxSummaryWord {
		return fmt.Errorf("%s %.80q of %d bytes, want 1 to %d", name, v, len(v), MaxSummaryWord)
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte(":+._/-", c) >= 0) {
			return fmt.Errorf("%s %q has the character %q; want letters, digits and :+._/-", name, v, c)
		}
	}
	return nil
}

// checkText checks a text that people read: UTF-8, one line of printable
// characters, at most max bytes.
func checkText(name, v string, max int) error {
	if len(v) > max {
		return fmt.Errorf("%s of %d bytes, at most %d allowed", name, len(v), max)
	}
	if !utf8.ValidString(v) {
		return fmt.Errorf("%s %q is not UTF-8", name, v)
	}
	for _, r := range v {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("%s %q has the character %U; want one line of printable characters", name, v, r)
		}
	}
	return nil
}

// formatTime writes t as RFC 3339 in UTC with up to nine fractional
// digits, as receipts do.
func formatTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// parseTime reads a time formatTime wrote, and no other spelling of it.
func parseTime(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil || formatTime(t) != s {
		return time.Time{}, fmt.Errorf("malformed time %.80q (want RFC 3339 in UTC with Z)", s)
	}
	return t.UTC(), nil
}

// canonicalJSON encodes v with members sorted by name at every level, no
// white space and no HTML escaping, as the evx signed documents are
// (docs/protocol.md section 7.1). A generic map sorts the members, whatever
// the struct's order.
func canonicalJSON(v any) ([]byte, error) {
	first, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(first))
	dec.UseNumber()
	var generic any
	if err := dec.Decode(&generic); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(generic); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

func nonNil(vs []string) []string {
	if vs == nil {
		return []string{}
	}
	return vs
}

// nilIfEmpty returns nil for an empty list, as an agreement read from a
// configuration has for a list left out.
func nilIfEmpty(vs []string) []string {
	if len(vs) == 0 {
		return nil
	}
	return vs
}

// Diff returns, one sentence each, where gateway self's agreement with
// peer (ours) and peer's with self (theirs, as its summary states it)
// disagree; none when they mirror each other: what one sends the other
// accepts, with the same caps, labels, limits, dates, version and
// reference, and both are active. A nil agreement is none. Sentences name
// both sides, such as
//
//	DE allows "prosecution" outbound; FR does not accept it inbound
//	maximum retention for "criminal-investigation": DE 365d, FR 180d
//
// Diff compares clauses only: whether an agreement is in force at a time
// is Decide's.
func Diff(self string, ours *Agreement, peer string, theirs *Agreement) []string {
	switch {
	case ours == nil && theirs == nil:
		// They agree: nothing flows.
		return nil
	case ours == nil:
		return []string{fmt.Sprintf("%s has no agreement with %s", self, peer)}
	case theirs == nil:
		return []string{fmt.Sprintf("%s has no agreement with %s", peer, self)}
	}
	var d []string
	add := func(format string, args ...any) { d = append(d, fmt.Sprintf(format, args...)) }
	if ours.Version != theirs.Version || ours.Ref != theirs.Ref {
		add("%s's agreement is version %d (ref %s); %s's is version %d (ref %s)", peer, theirs.Version, theirs.Ref, self, ours.Version, ours.Ref)
	}
	for _, side := range []struct {
		name string
		a    *Agreement
	}{{self, ours}, {peer, theirs}} {
		switch a := side.a; a.Status {
		case Active:
		case Suspended, Terminated:
			reason := ""
			if a.StatusReason != "" {
				reason = ": " + a.StatusReason
			}
			add("%s has %s cooperation%s", side.name, a.Status, reason)
		default:
			add("%s's agreement has the unknown status %q: nothing flows", side.name, a.Status)
		}
	}
	for _, way := range []struct {
		from, to string
		out, in  []string
	}{{self, peer, ours.Outbound, theirs.Inbound}, {peer, self, theirs.Outbound, ours.Inbound}} {
		for _, p := range way.out {
			if !slices.Contains(way.in, p) {
				add("%s allows %q outbound; %s does not accept it inbound", way.from, p, way.to)
			}
		}
	}
	for _, p := range slices.Sorted(maps.Keys(ours.MaxRetention)) {
		if t, ok := theirs.MaxRetention[p]; ok && t != ours.MaxRetention[p] {
			add("maximum retention for %q: %s %s, %s %s", p, self, Days(ours.MaxRetention[p]), peer, Days(t))
		}
	}
	if !sameSet(ours.Handling, theirs.Handling) {
		add("handling codes accepted: %s %s; %s %s", self, list(ours.Handling), peer, list(theirs.Handling))
	}
	if !sameSet(ours.TLP, theirs.TLP) {
		add("TLP labels accepted: %s %s; %s %s", self, list(ours.TLP), peer, list(theirs.TLP))
	}
	limits := []struct {
		what      string
		us, them  int64
		unlimited string
		text      func(int64) string
	}{
		{"maximum bundle size", ours.MaxBundleSize, theirs.MaxBundleSize, "its gateway's limit", sizeText},
		{"bundles per hour", int64(ours.RateBundles), int64(theirs.RateBundles), "no limit", func(n int64) string { return fmt.Sprint(n) }},
		{"bytes per hour", ours.RateBytes, theirs.RateBytes, "no limit", sizeText},
	}
	for _, l := range limits {
		if l.us != l.them {
			text := func(n int64) string {
				if n == 0 {
					return l.unlimited
				}
				return l.text(n)
			}
			add("%s: %s %s, %s %s", l.what, self, text(l.us), peer, text(l.them))
		}
	}
	for _, t := range []struct {
		what     string
		us, them time.Time
		unset    string
	}{{"valid from", ours.ValidFrom, theirs.ValidFrom, "without start"}, {"valid until", ours.ValidUntil, theirs.ValidUntil, "without end"}} {
		if !t.us.Equal(t.them) {
			text := func(v time.Time) string {
				if v.IsZero() {
					return t.unset
				}
				return v.UTC().Format(time.RFC3339Nano)
			}
			add("%s: %s %s, %s %s", t.what, self, text(t.us), peer, text(t.them))
		}
	}
	return d
}

// sameSet reports whether a and b list the same words, in any order.
func sameSet(a, b []string) bool {
	for _, v := range a {
		if !slices.Contains(b, v) {
			return false
		}
	}
	for _, v := range b {
		if !slices.Contains(a, v) {
			return false
		}
	}
	return true
}

// sizeText writes a number of bytes as configurations do: "40GiB", or in
// bytes when no binary unit divides it.
func sizeText(n int64) string {
	for _, u := range []struct {
		size int64
		name string
	}{{1 << 40, "TiB"}, {1 << 30, "GiB"}, {1 << 20, "MiB"}, {1 << 10, "KiB"}} {
		if n%u.size == 0 {
			return fmt.Sprintf("%d%s", n/u.size, u.name)
		}
	}
	return fmt.Sprintf("%dB", n)
}
