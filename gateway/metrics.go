package gateway

import (
	"evx/audit"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the gateway's Prometheus collectors. Label values come from
// fixed sets (event names, refusal codes), never from error text.
type metrics struct {
	bundles  *prometheus.CounterVec
	refusals *prometheus.CounterVec
	bytes    *prometheus.CounterVec

	logFailures prometheus.Counter

	apiConns        prometheus.Gauge
	apiConnsRefused *prometheus.CounterVec

	securityEvents      *prometheus.CounterVec
	witnessFailures     *prometheus.CounterVec
	cosignatureAge      *prometheus.GaugeVec
	receiptsNotIncluded *prometheus.GaugeVec

	agreementDecisions *prometheus.CounterVec
	agreementStatus    *prometheus.GaugeVec
	agreementDaysLeft  *prometheus.GaugeVec
	peerAgreement      *prometheus.GaugeVec
	reloads            *prometheus.CounterVec

	retentionBundles *prometheus.GaugeVec
	nextExpiry       prometheus.Gauge
	oldestOverdue    prometheus.Gauge
	reaperRuns       *prometheus.CounterVec
	purges           *prometheus.CounterVec
	purgeFailures    *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		bundles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "evx_bundles_total",
			Help: "Bundles by event: submitted by a local unit, delivered to a peer, received from a peer, retrieved by a recipient.",
		}, []string{"event"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "evx_refusals_total",
			Help: "Requests refused, by where (api: local users; peer: offers from peers; delivery: refused by a peer) and code.",
		}, []string{"where", "code"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "evx_payload_bytes_total",
			Help: "Payload bytes by event: submitted by local units (stored, or forwarded to the peer as they arrive) or received from peers.",
		}, []string{"event"}),
		logFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "evx_log_append_failures_total",
			Help: "Events the transfer log could not record; each was refused or retried, never acknowledged.",
		}),
		apiConns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "evx_api_connections",
			Help: "Open connections to the local API, authenticated or not.",
		}),
		apiConnsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "evx_api_connections_refused_total",
			Help: "Connections to the local API closed at once, by the limit they were over: total or source (per source address).",
		}, []string{"limit"}),
		securityEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "evx_security_events_total",
			Help: "Security events by kind: inconsistent-checkpoint (a peer presented a forked or rewritten log), receipt-not-included (a peer did not prove a receipt's entry in its log in time).",
		}, []string{"kind"}),
		witnessFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "evx_witness_failures_total",
			Help: "Failed rounds of having a peer witness this gateway's transfer log, by peer and reason.",
		}, []string{"peer", "reason"}),
		cosignatureAge: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "evx_witness_cosignature_age_seconds",
			Help: "Seconds since the peer last cosigned a checkpoint of this gateway's transfer log (since the gateway started, if it has not).",
		}, []string{"peer"}),
		receiptsNotIncluded: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "evx_receipts_not_included",
			Help: "Peers' receipts whose promised log entry the peer has not proven included within the maximum merge delay, still unproven.",
		}, []string{"peer"}),
		agreementDecisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "evx_agreement_decisions_total",
			Help: "Decisions under the agreements with peers, by peer, direction (outbound: uploads and deliveries; inbound: offers) and code (allowed, or the refusal's).",
		}, []string{"peer", "direction", "code"}),
		agreementStatus: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "evx_agreement_status",
			Help: "1 for the state the agreement with a peer is in, 0 for the others: active, suspended, terminated, not-yet-valid, lapsed, or none (no agreement).",
		}, []string{"peer", "status"}),
		agreementDaysLeft: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "evx_agreement_days_until_valid_until",
			Help: "Days until the agreement with a peer lapses (its valid_until), negative once it has; absent for an agreement without an end.",
		}, []string{"peer"}),
		peerAgreement: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "evx_agreement_peer_status",
			Help: "1 for the state the peer's own agreement with this gateway is in, as its last signed summary states it, 0 for the others: active, suspended, terminated, not-yet-valid, lapsed, none, or unknown (no summary yet).",
		}, []string{"peer", "status"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "evx_config_reloads_total",
			Help: "Reloads of the configuration (SIGHUP or the operator's API), by outcome: applied, unchanged, or refused (an invalid file; the running configuration stays).",
		}, []string{"outcome"}),
		retentionBundles: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "evx_retention_bundles",
			Help: "Bundles stored here (received, and submitted) by retention state, as the reaper's last run found them: kept (retention not over), held (over, kept by a legal hold), expired (over, unreadable, being removed).",
		}, []string{"state"}),
		nextExpiry: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "evx_retention_next_expiry_seconds",
			Help: "Seconds until the next retain-until (or end of an outbox grace) falls due, as of the reaper's last run; 0 if none.",
		}),
		oldestOverdue: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "evx_retention_oldest_overdue_seconds",
			Help: "Seconds since the oldest retain-until whose bundle the reaper has not yet removed because removing it failed (legal holds aside); 0 if none.",
		}),
		reaperRuns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "evx_reaper_runs_total",
			Help: "Runs of the retention reaper, by outcome: ok, or failed (it could not list the retention index).",
		}, []string{"outcome"}),
		purges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "evx_retention_purges_total",
			Help: "What the reaper removed, by kind: inbox (a received bundle, after its key was destroyed), outbox (a submitted bundle's record and receipt), sent (the sender's copy of a delivered payload).",
		}, []string{"kind"}),
		purgeFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "evx_retention_purge_failures_total",
			Help: "Failed attempts of the reaper, retried at its next run, by kind (inbox, outbox, sent) and reason: locked (the storage's locks still keep an object), storage (unavailable), malformed (a stored record), other.",
		}, []string{"kind", "reason"}),
	}
	for _, s := range []string{"kept", "held", "expired"} {
		m.retentionBundles.WithLabelValues(s)
	}
	for _, o := range []string{"ok", "failed"} {
		m.reaperRuns.WithLabelValues(o)
	}
	for _, k := range []string{dueInbox, dueOutbox, dueSent} {
		m.purges.WithLabelValues(k)
	}
	for _, o := range reloadOutcomes {
		m.reloads.WithLabelValues(o)
	}
	// Both series exist from the start, at zero.
	m.apiConnsRefused.WithLabelValues(limitTotal)
	m.apiConnsRefused.WithLabelValues(limitSource)
	for _, k := range audit.SecurityKinds() {
		m.securityEvents.WithLabelValues(string(k.Kind))
	}
	return m
}

// Collectors returns the gateway's metrics, for the binary's registry.
// docs/metrics.md lists them; a test keeps the two equal.
func (g *Gateway) Collectors() []prometheus.Collector { return g.metrics.collectors() }

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.bundles, m.refusals, m.bytes, m.logFailures, m.apiConns, m.apiConnsRefused,
		m.securityEvents, m.witnessFailures, m.cosignatureAge, m.receiptsNotIncluded, m.agreementDecisions,
		m.agreementStatus, m.agreementDaysLeft, m.peerAgreement, m.reloads,
		m.retentionBundles, m.nextExpiry, m.oldestOverdue, m.reaperRuns, m.purges, m.purgeFailures}
}

// observeReap sets the retention gauges from a run of the reaper at now.
func (m *metrics) observeReap(r reapResult, now time.Time) {
	if r.Err != nil {
		m.reaperRuns.WithLabelValues("failed").Inc()
		return
	}
	m.reaperRuns.WithLabelValues("ok").Inc()
	sum := func(c map[string]int) (n int) {
		for k, v := range c {
			if k != dueSent {
				n += v
			}
		}
		return n
	}
	m.retentionBundles.WithLabelValues("kept").Set(float64(r.Kept))
	m.retentionBundles.WithLabelValues("held").Set(float64(sum(r.Held)))
	m.retentionBundles.WithLabelValues("expired").Set(float64(sum(r.Waiting) + sum(r.Failed) + r.Shredded))
	m.nextExpiry.Set(max(0, r.Next.Sub(now).Seconds()))
	if r.Next.IsZero() {
		m.nextExpiry.Set(0)
	}
	m.oldestOverdue.Set(0)
	if !r.OldestOverdue.IsZero() {
		m.oldestOverdue.Set(now.Sub(r.OldestOverdue).Seconds())
	}
}
