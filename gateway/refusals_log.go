package gateway

import (
	"context"
	"net"
	"net/netip"
	"regexp"
	"sort"
	"sync"
	"time"

	"evx/audit"

	"go.uber.org/zap"
)

// Refused requests are summed up in the transfer log (docs/audit.md 2.1,
// requests-refused): one entry per source and category per window of
// refusalLogInterval, for a bounded number of sources, so that a flood of
// refused requests adds a bounded number of entries a minute however fast
// it comes. The API's refusals come from the client's address (its source,
// as the listener counts connections); the peer protocol's refusals are
// reported without an address (transfer.ServerConfig.OnRefuse), so they
// are summed up under the source "other", their category naming the
// stage.
//
// A category is where the refusal happened and its code, as the metric
// evx_refusals_total labels it: "api-forbidden", "peer-handshake-wrong-ca",
// "peer-offer-not-accepted", "peer-witness-inconsistent".

const (
	// maxRefusalCategories bounds the categories counted in one window,
	// "other" included: the codes are fixed sets, well under this;
	// anything beyond is summed up as "other".
	maxRefusalCategories = 64
	// refusalFlushTick is how often the summary looks for a window that
	// has ended, when no refusal comes to end it.
	refusalFlushTick = 10 * time.Second
	// maxDueRefusalWindows bounds the ended windows waiting to be written
	// while the log is slow: older ones are dropped, and said so.
	maxDueRefusalWindows = 4
)

// refusalCategory is the form of a category: a code of the entry format,
// kept short.
var refusalCategory = regexp.MustCompile(`^[a-z0-9]+(-[a-z0-9]+)*$`)

// refusalSummary counts refused requests per category and source in the
// current window, for the transfer log. Each category's sources are counted
// by a refusalLog (listener.go), which sums up sources beyond
// maxRefusalSources; the summary also bounds the sources counted one by one
// over all categories to maxRefusalSources, so that one window adds at
// most maxRefusalSources + maxRefusalCategories entries.
type refusalSummary struct {
	now func() time.Time

	mu      sync.Mutex
	start   time.Time              // of the current window; zero if it has no refusal yet
	windows map[string]*refusalLog // the current window's counts, by category
	sources int                    // sources counted one by one, over all categories
	due     []refusalWindow        // ended windows, not yet written

	// kick wakes the writer when a window has ended.
	kick chan struct{}
	// dropped counts windows dropped while the log was too slow.
	dropped int
}

// refusalWindow is an ended window's counts.
type refusalWindow struct {
	start, end time.Time
	windows    map[string]*refusalLog
}

func newRefusalSummary(now func() time.Time) *refusalSummary {
	return &refusalSummary{now: now, kick: make(chan struct{}, 1)}
}

// addAPI counts an API request refused with code, from the client's
// address remote (an http.Request's RemoteAddr).
func (s *refusalSummary) addAPI(remote, code string) {
	var src netip.Prefix
	if ap, err := netip.ParseAddrPort(remote); err == nil {
		src = sourceOf(net.TCPAddrFromAddrPort(ap))
	}
	s.add(src, "api-"+code)
}

// addPeer counts a refusal of the peer protocol at stage with code, as
// transfer's OnRefuse reports it, from remote (nil for other).
func (s *refusalSummary) addPeer(stage, code string, remote net.Addr) {
	var src netip.Prefix
	if remote != nil {
		src = sourceOf(remote)
	}
	s.add(src, "peer-"+stage+"-"+code)
}

// add counts a refusal from src (invalid for "other") in category.
func (s *refusalSummary) add(src netip.Prefix, category string) {
	if len(category) > 64 || !refusalCategory.MatchString(category) {
		category = "other"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	ended := s.roll(now)
	if s.start.IsZero() {
		s.start = now
		s.windows = map[string]*refusalLog{}
	}
	w := s.windows[category]
	if w == nil && len(s.windows) >= maxRefusalCategories-1 {
		category = "other" // the last place is kept for it
		w = s.windows[category]
	}
	if w == nil {
		w = &refusalLog{}
		s.windows[category] = w
	}
	if src.IsValid() && w.bySource[src] == nil && s.sources >= maxRefusalSources {
		src = netip.Prefix{} // summed up as other
	}
	if src.IsValid() && w.bySource[src] == nil {
		s.sources++
	}
	w.add(src, category, now)
	if ended {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
}

// roll ends the current window if it is over; s.mu is held.
func (s *refusalSummary) roll(now time.Time) bool {
	if s.start.IsZero() || now.Sub(s.start) < refusalLogInterval {
		return false
	}
	s.end(now)
	return true
}

// end ends the current window at now; s.mu is held.
func (s *refusalSummary) end(now time.Time) {
	if s.start.IsZero() {
		return
	}
	if len(s.due) == maxDueRefusalWindows {
		s.due = s.due[1:]
		s.dropped++
	}
	s.due = append(s.due, refusalWindow{start: s.start, end: now, windows: s.windows})
	s.start, s.windows, s.sources = time.Time{}, nil, 0
}

// take returns the ended windows, ending the current one first if it is
// over, or in any case with all set; and how many windows were dropped
// since the last take.
func (s *refusalSummary) take(all bool) ([]refusalWindow, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if all {
		s.end(now)
	} else {
		s.roll(now)
	}
	due, dropped := s.due, s.dropped
	s.due, s.dropped = nil, 0
	return due, dropped
}

// entries returns the requests-refused entries that sum up w: one per
// category and source, sorted, the sources beyond the bound as "other".
func (w refusalWindow) entries() []audit.Entry {
	// A window is 1 ms to an hour long and ends no later than the
	// entry's time, which the log takes after this; the counts of a
	// window shortened to an hour (a writer stalled that long) are
	// still within it, since it ended at the latest refusal.
	end := w.end.Truncate(time.Millisecond)
	start := w.start.Truncate(time.Millisecond)
	if !start.Before(end) {
		start = end.Add(-time.Millisecond)
	}
	if end.Sub(start) > time.Hour {
		start = end.Add(-time.Hour)
	}
	var out []audit.Entry
	for category, l := range w.windows {
		other := l.other
		for src, c := range l.bySource {
			if !src.IsValid() {
				other += c.n
				continue
			}
			out = append(out, audit.Entry{Event: audit.EventRequestsRefused, Actor: audit.GatewayActor,
				Code: category, Source: src.String(), Count: int64(c.n), WindowStart: start, WindowEnd: end})
		}
		if other > 0 {
			out = append(out, audit.Entry{Event: audit.EventRequestsRefused, Actor: audit.GatewayActor,
				Code: category, Source: "other", Count: int64(other), WindowStart: start, WindowEnd: end})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Code != out[j].Code {
			return out[i].Code < out[j].Code
		}
		return out[i].Source < out[j].Source
	})
	return out
}

// runRefusalSummary writes the refusal windows to the transfer log as they
// end, until ctx is done. Run writes the last window once nothing can
// refuse any more.
func (g *Gateway) runRefusalSummary(ctx context.Context) error {
	t := time.NewTicker(refusalFlushTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-g.refusalSum.kick:
		}
		g.flushRefusals(ctx, false)
	}
}

// flushRefusals records the entries of the ended windows, and with all
// set of the current one too. The log outlives ctx (see Run): they are
// written after it is done too.
func (g *Gateway) flushRefusals(ctx context.Context, all bool) {
	due, dropped := g.refusalSum.take(all)
	if dropped > 0 {
		g.log.Error("refused requests not summed up in the transfer log: it was too slow to take them", zap.Int("windows", dropped))
	}
	if len(due) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), logStopTimeout)
	defer cancel()
	n := 0
	for _, w := range due {
		for _, e := range w.entries() {
			if _, err := g.record(ctx, e); err != nil {
				g.log.Error("refused requests not summed up in the transfer log", zap.String("category", e.Code),
					zap.String("source", e.Source), zap.Int64("count", e.Count), zap.Error(err))
				continue
			}
			n++
		}
	}
	if g.opts.onRefusalsLogged != nil {
		g.opts.onRefusalsLogged(n)
	}
}
