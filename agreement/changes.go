package agreement

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// Changes says, one line per clause, how the agreement with a peer changed
// from old to new, both this side's: what a reload applied, for the
// operator and the transfer log. A nil old means the agreement was added,
// a nil new that it was removed; no line means nothing changed.
func Changes(old, new *Agreement) []string {
	switch {
	case old == nil && new == nil:
		return nil
	case old == nil:
		return []string{fmt.Sprintf("agreement %s added: version %d (ref %s), %s", new.Peer, new.Version, new.Ref, new.Status)}
	case new == nil:
		return []string{fmt.Sprintf("agreement %s removed: nothing flows with %s", old.Peer, old.Peer)}
	}
	name := "agreement " + new.Peer
	var out []string
	add := func(format string, args ...any) {
		out = append(out, name+": "+fmt.Sprintf(format, args...))
	}
	if old.Version != new.Version || old.Ref != new.Ref {
		add("version %d → %d (ref %s → %s)", old.Version, new.Version, old.Ref, new.Ref)
	}
	if old.Status != new.Status || old.StatusReason != new.StatusReason {
		reason := ""
		if new.StatusReason != "" {
			reason = ": " + new.StatusReason
		}
		add("status %s → %s%s", old.Status, new.Status, reason)
	}
	setChange := func(what string, o, n []string) {
		if c := ListChange(o, n); c != "" {
			add("%s %s", what, c)
		}
	}
	setChange("outbound purposes", old.Outbound, new.Outbound)
	setChange("inbound purposes", old.Inbound, new.Inbound)
	setChange("handling codes", old.Handling, new.Handling)
	setChange("TLP labels", old.TLP, new.TLP)
	purposes := slices.Sorted(maps.Keys(old.MaxRetention))
	for p := range new.MaxRetention {
		if _, ok := old.MaxRetention[p]; !ok {
			purposes = append(purposes, p)
		}
	}
	slices.Sort(purposes)
	for _, p := range purposes {
		o, oldOK := old.MaxRetention[p]
		n, newOK := new.MaxRetention[p]
		switch {
		case !oldOK:
			add("maximum retention for %q: none → %s", p, Days(n))
		case !newOK:
			add("maximum retention for %q: %s → none", p, Days(o))
		case o != n:
			add("maximum retention for %q: %s → %s", p, Days(o), Days(n))
		}
	}
	if old.MaxBundleSize != new.MaxBundleSize {
		add("maximum bundle size %s → %s", limitText(old.MaxBundleSize, "bytes"), limitText(new.MaxBundleSize, "bytes"))
	}
	if old.RateBundles != new.RateBundles {
		add("rate %s → %s", limitText(int64(old.RateBundles), "bundles an hour"), limitText(int64(new.RateBundles), "bundles an hour"))
	}
	if old.RateBytes != new.RateBytes {
		add("rate %s → %s", limitText(old.RateBytes, "bytes an hour"), limitText(new.RateBytes, "bytes an hour"))
	}
	if !old.ValidFrom.Equal(new.ValidFrom) {
		add("valid from %s → %s", timeText(old.ValidFrom), timeText(new.ValidFrom))
	}
	if !old.ValidUntil.Equal(new.ValidUntil) {
		add("valid until %s → %s", timeText(old.ValidUntil), timeText(new.ValidUntil))
	}
	return out
}

// setDiff returns the members of a not in b, sorted.
func setDiff(a, b []string) []string {
	var out []string
	for _, v := range a {
		if !slices.Contains(b, v) && !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	slices.Sort(out)
	return out
}

// ListChange says how the set of strings new differs from old: "+ a, b;
// - c", or "" if they hold the same strings, in whatever order.
func ListChange(old, new []string) string {
	plus, minus := setDiff(new, old), setDiff(old, new)
	var parts []string
	if len(plus) > 0 {
		parts = append(parts, "+ "+strings.Join(plus, ", "))
	}
	if len(minus) > 0 {
		parts = append(parts, "- "+strings.Join(minus, ", "))
	}
	return strings.Join(parts, "; ")
}

// limitText writes a limit, where 0 means none.
func limitText(n int64, unit string) string {
	if n == 0 {
		return "no limit"
	}
	return fmt.Sprintf("%d %s", n, unit)
}

// timeText writes a bound of validity, where the zero time means none.
func timeText(t time.Time) string {
	if t.IsZero() {
		return "unbounded"
	}
	return t.UTC().Format(time.RFC3339)
}
