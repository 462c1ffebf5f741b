package audit

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"
)

// Thresholds of a transparency report: counts below the threshold are
// published only as "<threshold".
const (
	// DefaultThreshold is the threshold unless one is given.
	DefaultThreshold = 5
	// MinThreshold is the smallest threshold: at 1, every count would be
	// exact, and a report would single out the one case in a row. A
	// reviewer who may see single cases reads the log itself.
	MinThreshold = 2
	// MaxThreshold bounds the threshold, as a sanity check.
	MaxThreshold = 1000
)

// ReportOptions say what a transparency report covers.
type ReportOptions struct {
	// From and To are the period: an event counts if its entry's time t
	// has From <= t < To, so that reports of consecutive periods count
	// each event once.
	From, To time.Time
	// Threshold is the smallest count published exactly; 0 means
	// DefaultThreshold.
	Threshold int
}

// threshold returns o's threshold, after checking it and the period.
func (o ReportOptions) threshold() (int, error) {
	t := o.Threshold
	if t == 0 {
		t = DefaultThreshold
	}
	switch {
	case t < MinThreshold:
		return 0, fmt.Errorf("threshold %d would publish single cases: want from %d to %d", o.Threshold, MinThreshold, MaxThreshold)
	case t > MaxThreshold:
		return 0, fmt.Errorf("threshold %d: want from %d to %d", o.Threshold, MinThreshold, MaxThreshold)
	case o.From.IsZero() || o.To.IsZero():
		return 0, errors.New("a report needs the start and the end of its period")
	case !o.From.Before(o.To):
		return 0, fmt.Errorf("empty period: it starts at %s and ends at %s", o.From.UTC().Format(time.RFC3339), o.To.UTC().Format(time.RFC3339))
	}
	return t, nil
}

// A Count is a number as a transparency report publishes it: exact if it
// is at least the threshold, else only known to be below it. A suppressed
// count does not keep its value, so that nothing built on a report can
// publish it by mistake.
type Count struct {
	// N is the count, or 0 if it is suppressed.
	N int64
	// Below is the threshold if the count is suppressed (1 to
	// Below-1), else 0.
	Below int
}

// Suppressed reports whether the count is published only as below the
// threshold.
func (c Count) Suppressed() bool { return c.Below > 0 }

// String returns the count in decimal, or "<5" for a count suppressed
// under a threshold of 5.
func (c Count) String() string {
	if c.Suppressed() {
		return fmt.Sprintf("<%d", c.Below)
	}
	return fmt.Sprint(c.N)
}

// A Median is the median of some durations as a transparency report
// publishes it: only if there were at least threshold of them.
type Median struct {
	// D is the median, to the millisecond, or 0 if it is suppressed.
	D time.Duration
	// Below is the threshold if there were fewer durations than it, else
	// 0. How many there were is not published: that number would be the
	// sum of rows of the transfer table, some of them suppressed.
	Below int
}

// Suppressed reports whether the median is withheld.
func (m Median) Suppressed() bool { return m.Below > 0 }

// Outcomes of transfers in a report. Refusals are counted apart, by code
// (RefusalRow).
const (
	OutcomeDelivered = "delivered" // outbound: the peer receipted the bundle
	OutcomeReceived  = "received"  // inbound: this gateway stored and receipted it
)

// A RefusalStage says where a refusal happened.
type RefusalStage string

// The refusal stages, in the order a report lists them.
const (
	// StageUpload: this gateway refused a unit's upload (upload-refused;
	// an API error code).
	StageUpload RefusalStage = "upload"
	// StageDelivery: a peer refused this gateway's bundle for good
	// (delivery-refused; a protocol error code).
	StageDelivery RefusalStage = "delivery"
	// StageOffer: this gateway refused a peer's offer (offer-refused; a
	// protocol error code).
	StageOffer RefusalStage = "offer"
	// StageRequest: this gateway refused connections, handshakes or API
	// requests (requests-refused; the code is their category, and each
	// entry counts its count).
	StageRequest RefusalStage = "request"
)

var stageOrder = []RefusalStage{StageUpload, StageDelivery, StageOffer, StageRequest}

// stages maps the refusal events to their stages.
var stages = map[Event]RefusalStage{
	EventUploadRefused:   StageUpload,
	EventDeliveryRefused: StageDelivery,
	EventOfferRefused:    StageOffer,
	EventRequestsRefused: StageRequest,
}

// Direction returns the direction of the transfers refused at stage s, ""
// for requests, which are about no transfer.
func (s RefusalStage) Direction() Direction {
	switch s {
	case StageUpload, StageDelivery:
		return Outbound
	case StageOffer:
		return Inbound
	}
	return ""
}

// TransferRow counts the bundles delivered to or received from one peer
// under one purpose and handling code.
type TransferRow struct {
	Direction Direction
	Peer      string
	Purpose   string
	Handling  string
	Outcome   string // OutcomeDelivered for outbound, OutcomeReceived for inbound
	Bundles   Count
	// Bytes is the sum of the bundles' payload sizes, or 0 if Bundles is
	// suppressed.
	Bytes int64
}

// RefusalRow counts the refusals of one code at one stage, with one peer.
type RefusalRow struct {
	Stage RefusalStage
	Peer  string // "" if the refusal is about no peer, or did not name one
	Code  string
	// Count counts entries, but for StageRequest the requests the
	// entries sum up.
	Count Count
}

// TimeRow is the median time of one step of transfers with one peer, or
// with all peers.
type TimeRow struct {
	Peer   string // "" for all peers
	Median Median
}

// TransparencyReport is what a gateway's transfer log says about a period,
// in numbers that single out no case: counts and volumes of transfers per
// direction, peer, purpose, handling code and outcome, refusals by stage,
// peer and code, and median delivery and retrieval times. It holds no
// bundle id, legal basis, digest, receipt or reason, and every count
// below the threshold is suppressed with what it would reveal (see
// docs/audit.md, "Transparency reports").
//
// Each event is counted in one row of one table only, and the report
// holds no totals, so that no number in it is the sum of others: a
// suppressed count cannot be recovered by subtracting the rows shown
// from a total.
type TransparencyReport struct {
	// Gateway is the gateway whose log the report counts.
	Gateway string
	// From and To are the period, From inclusive, To exclusive.
	From, To time.Time
	// Threshold is the smallest count published exactly.
	Threshold int

	// Log names the verified checkpoint the report was computed from; the
	// caller fills it in.
	Log struct {
		Origin string
		Size   int64
		Hash   string // the root hash, base64, as in the checkpoint
	}

	Transfers []TransferRow
	Refusals  []RefusalRow
	// DeliveryTimes: on the sending side, from a bundle's first
	// upload-accepted or offer-sent entry to its delivered entry, for
	// the bundles delivered in the period; per peer, then all peers.
	DeliveryTimes []TimeRow
	// RetrievalTimes: on the receiving side, from a bundle's
	// receipt-issued entry to its first retrieval-acknowledged entry,
	// for the bundles acknowledged in the period; per peer, then all
	// peers.
	RetrievalTimes []TimeRow
	// Unread is how many entries of the whole log could not be read (a
	// newer entry format, or an unknown event) and so were not counted.
	Unread int64
}

// A Tally computes a transparency report from a log's entries, read one
// at a time in the log's order, so that a report over a large log holds
// only what it counts: its rows, one duration per timed bundle, and the
// start of each bundle still under way.
type Tally struct {
	opts      ReportOptions
	threshold int
	gateway   string

	transfers map[transferKey]*transferSum
	refusals  map[refusalKey]int64

	// sending holds, per bundle id, when this gateway took on a bundle
	// not yet delivered or refused; receiving when it received one
	// not yet acknowledged, and from whom.
	sending   map[string]time.Time
	receiving map[string]received

	delivery  map[string][]time.Duration // by peer
	retrieval map[string][]time.Duration // by peer
	unread    int64
}

type transferKey struct {
	dir                     Direction
	peer, purpose, handling string
}

type transferSum struct{ n, bytes int64 }

type refusalKey struct {
	stage      RefusalStage
	peer, code string
}

type received struct {
	at   time.Time
	peer string
}

// NewTally returns a Tally for a report with opts, or an error if opts
// are not valid: a threshold under MinThreshold or over MaxThreshold, or
// an empty period.
func NewTally(opts ReportOptions) (*Tally, error) {
	t, err := opts.threshold()
	if err != nil {
		return nil, err
	}
	return &Tally{
		opts: opts, threshold: t,
		transfers: make(map[transferKey]*transferSum),
		refusals:  make(map[refusalKey]int64),
		sending:   make(map[string]time.Time),
		receiving: make(map[string]received),
		delivery:  make(map[string][]time.Duration),
		retrieval: make(map[string][]time.Duration),
	}, nil
}

// AddBytes counts the entry data, as ParseEntry reads it. An entry of a
// newer format or an unknown event is not counted but reported
// (TransparencyReport.Unread); any other entry that does not parse is an
// error.
func (t *Tally) AddBytes(data []byte) error {
	return t.AddParsed(ParseEntry(data))
}

// AddParsed counts what ParseEntry returned for the next entry of the
// log, as AddBytes does: for a reader that parsed the entry already.
func (t *Tally) AddParsed(e *Entry, err error) error {
	switch {
	case errors.Is(err, ErrUnsupportedFormat), errors.Is(err, ErrUnknownEvent):
		t.unread++
		return nil
	case err != nil:
		return err
	}
	return t.Add(e)
}

// Add counts e, the next entry of the log. Entries must come in the log's
// order: a bundle's delivery and retrieval times are measured from
// entries earlier in the log, which may be earlier than the period.
func (t *Tally) Add(e *Entry) error {
	if t.gateway == "" {
		t.gateway = e.Gateway
	} else if e.Gateway != t.gateway {
		return fmt.Errorf("an entry of gateway %q in the log of %q", e.Gateway, t.gateway)
	}
	in := !e.Time.Before(t.opts.From) && e.Time.Before(t.opts.To)
	switch e.Event {
	case EventUploadAccepted, EventOfferSent:
		// Direct uploads are offered before the upload is accepted;
		// stored ones after: the first is when the gateway took the
		// bundle on.
		if _, ok := t.sending[e.BundleID]; !ok {
			t.sending[e.BundleID] = e.Time
		}
	case EventDelivered:
		start, ok := t.sending[e.BundleID]
		delete(t.sending, e.BundleID)
		if !in {
			break
		}
		t.addTransfer(Outbound, e)
		if ok {
			t.delivery[e.Peer] = append(t.delivery[e.Peer], max(e.Time.Sub(start), 0))
		}
	case EventReceiptIssued:
		if _, ok := t.receiving[e.BundleID]; !ok {
			t.receiving[e.BundleID] = received{e.Time, e.Peer}
		}
		if in {
			t.addTransfer(Inbound, e)
		}
	case EventRetrievalAcknowledged:
		r, ok := t.receiving[e.BundleID]
		delete(t.receiving, e.BundleID)
		if in && ok {
			t.retrieval[r.peer] = append(t.retrieval[r.peer], max(e.Time.Sub(r.at), 0))
		}
	// The events of retention are not counted, but they end bundles: a
	// received bundle whose key is shredded is never retrieved, and a
	// sent one whose records are purged is never delivered, so that their
	// starts would be held to the end of the log for nothing. (An expired
	// bundle may still be retrieved under a hold placed before it is
	// shredded.)
	case EventKeyShredded, EventBundlePurged:
		delete(t.receiving, e.BundleID)
	case EventOutboxPurged:
		delete(t.sending, e.BundleID)
	}
	if stage, ok := stages[e.Event]; ok {
		if stage == StageDelivery {
			delete(t.sending, e.BundleID)
		}
		if in {
			n := int64(1)
			if stage == StageRequest {
				n = e.Count
			}
			k := refusalKey{stage, e.Peer, e.Code}
			t.refusals[k] = addSaturating(t.refusals[k], n)
		}
	}
	return nil
}

func (t *Tally) addTransfer(dir Direction, e *Entry) {
	k := transferKey{dir, e.Peer, e.Purpose, e.Handling}
	s := t.transfers[k]
	if s == nil {
		s = new(transferSum)
		t.transfers[k] = s
	}
	s.n++
	s.bytes = addSaturating(s.bytes, e.PayloadSize)
}

func addSaturating(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// Report returns the report of the entries added so far, with every count
// below the threshold suppressed.
func (t *Tally) Report() *TransparencyReport {
	r := &TransparencyReport{Gateway: t.gateway, From: t.opts.From.UTC(), To: t.opts.To.UTC(), Threshold: t.threshold, Unread: t.unread}
	for k, s := range t.transfers {
		row := TransferRow{Direction: k.dir, Peer: k.peer, Purpose: k.purpose, Handling: k.handling, Bundles: t.count(s.n)}
		if k.dir == Outbound {
			row.Outcome = OutcomeDelivered
		} else {
			row.Outcome = OutcomeReceived
		}
		if !row.Bundles.Suppressed() {
			row.Bytes = s.bytes
		}
		r.Transfers = append(r.Transfers, row)
	}
	slices.SortFunc(r.Transfers, func(a, b TransferRow) int {
		return cmp.Or(cmp.Compare(directionOrder(a.Direction), directionOrder(b.Direction)),
			cmp.Compare(a.Peer, b.Peer), cmp.Compare(a.Purpose, b.Purpose), cmp.Compare(a.Handling, b.Handling))
	})
	for k, n := range t.refusals {
		r.Refusals = append(r.Refusals, RefusalRow{Stage: k.stage, Peer: k.peer, Code: k.code, Count: t.count(n)})
	}
	slices.SortFunc(r.Refusals, func(a, b RefusalRow) int {
		return cmp.Or(cmp.Compare(slices.Index(stageOrder, a.Stage), slices.Index(stageOrder, b.Stage)),
			cmp.Compare(a.Peer, b.Peer), cmp.Compare(a.Code, b.Code))
	})
	r.DeliveryTimes = t.medians(t.delivery)
	r.RetrievalTimes = t.medians(t.retrieval)
	return r
}

func directionOrder(d Direction) int {
	if d == Outbound {
		return 0
	}
	return 1
}

// count publishes n under the threshold.
func (t *Tally) count(n int64) Count {
	if n < int64(t.threshold) {
		return Count{Below: t.threshold}
	}
	return Count{N: n}
}

// medians returns the median of the durations of each peer, sorted by
// peer, then that of all peers, if there were any.
func (t *Tally) medians(byPeer map[string][]time.Duration) []TimeRow {
	var rows []TimeRow
	var all []time.Duration
	for peer, ds := range byPeer {
		rows = append(rows, TimeRow{Peer: peer, Median: t.median(ds)})
		all = append(all, ds...)
	}
	if len(rows) == 0 {
		return nil
	}
	slices.SortFunc(rows, func(a, b TimeRow) int { return cmp.Compare(a.Peer, b.Peer) })
	return append(rows, TimeRow{Median: t.median(all)})
}

// median returns the median of ds (the mean of the two middle ones for an
// even number), to the millisecond, unless there are fewer than the
// threshold.
func (t *Tally) median(ds []time.Duration) Median {
	if len(ds) < t.threshold {
		return Median{Below: t.threshold}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		lo := s[len(s)/2-1]
		m = lo + (m-lo)/2
	}
	return Median{D: m.Truncate(time.Millisecond)}
}
