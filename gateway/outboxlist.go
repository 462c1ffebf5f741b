package gateway

import (
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"evx/api"
)

// outboxList answers GET /v1/outbox[?state=S&limit=N]: a submitter's own
// bundles, or every bundle for an operator, newest first, with their
// delivery states but without receipts.
//
// The listing of keys alone tells each bundle's state (a receipt or a
// refusal object beside its record) and, by the record's modification
// time, its age; records are read newest first only until limit bundles
// are found, so an operator's answer costs at most limit bundles' reads.
// A submitter's may read other submitters' records to skip them.
func (g *Gateway) outboxList(_ http.ResponseWriter, r *http.Request, u User) (any, error) {
	ctx := r.Context()
	q := r.URL.Query()
	want := api.State(q.Get("state"))
	if want != "" && !want.Valid() {
		return nil, api.Errorf(api.CodeBadState, "state=%q: want queued, delivered or refused", want)
	}
	limit := api.DefaultOutboxLimit
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > api.MaxOutboxLimit {
			return nil, api.Errorf(api.CodeBadLimit, "limit=%q: want a number from 1 to %d", s, api.MaxOutboxLimit)
		}
		limit = n
	}
	infos, err := g.opts.Storage.List(ctx, outboxPrefix)
	if err != nil {
		return nil, err
	}
	type candidate struct {
		id      string
		stored  time.Time
		listed  api.State
		hasKeys bool
	}
	byID := map[string]*candidate{}
	var cands []*candidate
	for _, in := range infos {
		id := bundleIDOf(in.Key)
		if id == "" {
			continue
		}
		c := byID[id]
		if c == nil {
			c = &candidate{id: id, listed: api.StateQueued}
			byID[id] = c
			cands = append(cands, c)
		}
		switch {
		case strings.HasSuffix(in.Key, "/"+recordFile):
			c.hasKeys, c.stored = true, in.Modified
		case strings.HasSuffix(in.Key, "/"+receiptFile):
			c.listed = api.StateDelivered
		case strings.HasSuffix(in.Key, "/"+refusalFile) && c.listed != api.StateDelivered:
			c.listed = api.StateRefused
		}
	}
	// Without a record a bundle was never stored (the record is the commit
	// point): whatever else is there is debris.
	cands = slices.DeleteFunc(cands, func(c *candidate) bool { return !c.hasKeys || want != "" && c.listed != want })
	slices.SortFunc(cands, func(a, b *candidate) int {
		if c := b.stored.Compare(a.stored); c != 0 {
			return c
		}
		return strings.Compare(a.id, b.id)
	})
	list := &api.OutboxList{Bundles: []api.OutboxStatus{}}
	for _, c := range cands {
		st, err := g.readOutboxStatus(ctx, c.id, u)
		var ae *api.Error
		if errors.As(err, &ae) && ae.Code == api.CodeNotFound {
			continue // another submitter's, or gone since the listing
		}
		if err != nil {
			return nil, err
		}
		// The state may have moved on since the listing.
		if want != "" && st.State != want {
			continue
		}
		if len(list.Bundles) == limit {
			list.Truncated = true
			break
		}
		st.Receipt = nil
		list.Bundles = append(list.Bundles, *st)
	}
	// Newest first by the submission time the records hold, which the
	// storage's modification times only approximate.
	slices.SortStableFunc(list.Bundles, func(a, b api.OutboxStatus) int { return b.Submitted.Compare(*a.Submitted) })
	return list, nil
}
