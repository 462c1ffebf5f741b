package gateway

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the gateway's Prometheus collectors. Label values come from
// fixed sets (event names, refusal codes), never from error text.
type metrics struct {
	bundles  *prometheus.CounterVec
	refusals *prometheus.CounterVec
	bytes    *prometheus.CounterVec
}

func newMetrics() *metrics {
	return &metrics{
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
			Help: "Payload bytes stored, by event: submitted or received.",
		}, []string{"event"}),
	}
}

// Collectors returns the gateway's metrics, for the binary's registry.
func (g *Gateway) Collectors() []prometheus.Collector {
	return []prometheus.Collector{g.metrics.bundles, g.metrics.refusals, g.metrics.bytes}
}
