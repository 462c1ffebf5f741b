package api

import "time"

// The operator's endpoints for agreements (docs/api.md 3.14–3.17):
//
//	GET  /v1/agreements                 the agreements in force, each with the peer's view
//	GET  /v1/agreements/{peer}          one of them
//	GET  /v1/agreements/{peer}/diff     where this side and the peer's disagree
//	POST /v1/agreements/reload          reload the configuration file
//	POST /v1/agreements/{peer}/suspend  suspend cooperation with peer (body: SuspendRequest)
//	POST /v1/agreements/{peer}/resume   resume it

// AgreementView is an agreement as a gateway states it: its own with a
// peer, or the peer's with it, from the peer's signed summary.
type AgreementView struct {
	// Gateway states the agreement; Peer is the other side.
	Gateway string `json:"gateway"`
	Peer    string `json:"peer"`
	// None is set when Gateway has no agreement with Peer: nothing flows.
	None    bool   `json:"none,omitempty"`
	Version int    `json:"version,omitempty"`
	Ref     string `json:"ref,omitempty"`
	// Status is active, suspended or terminated, as configured or as an
	// operator set it; StatusReason says why it is not active.
	Status       string `json:"status,omitempty"`
	StatusReason string `json:"status_reason,omitempty"`
	// State is the status as it applies now: also not-yet-valid, lapsed
	// or none.
	State    string   `json:"state"`
	Outbound []string `json:"outbound,omitempty"`
	Inbound  []string `json:"inbound,omitempty"`
	Handling []string `json:"handling,omitempty"`
	TLP      []string `json:"tlp,omitempty"`
	// MaxRetention is, per purpose, the longest retention in seconds.
	MaxRetention  map[string]int64 `json:"max_retention,omitempty"`
	MaxBundleSize int64            `json:"max_bundle_size,omitempty"`
	RateBundles   int              `json:"rate_bundles,omitempty"`
	RateBytes     int64            `json:"rate_bytes,omitempty"`
	ValidFrom     *time.Time       `json:"valid_from,omitempty"`
	ValidUntil    *time.Time       `json:"valid_until,omitempty"`
}

// AgreementPair is this gateway's agreement with a peer and the peer's
// with it, as its last signed summary stated it.
type AgreementPair struct {
	Peer string        `json:"peer"`
	Ours AgreementView `json:"ours"`
	// Theirs is nil until the peer's signed summary has been received;
	// TheirsReceived is when it was.
	Theirs         *AgreementView `json:"theirs,omitempty"`
	TheirsReceived *time.Time     `json:"theirs_received,omitempty"`
	// Suspension is set while an operator has suspended cooperation.
	Suspension *Suspension `json:"suspension,omitempty"`
}

// AgreementList is the answer of GET /v1/agreements.
type AgreementList struct {
	Gateway    string          `json:"gateway"`
	Agreements []AgreementPair `json:"agreements"`
}

// AgreementDiff is the answer of GET /v1/agreements/{peer}/diff.
type AgreementDiff struct {
	Peer string `json:"peer"`
	// Mismatches say, one sentence each, where the two sides disagree;
	// none when they agree. Unknown is set when the peer's summary has not
	// been received, so nothing could be compared.
	Mismatches []string `json:"mismatches"`
	Unknown    bool     `json:"unknown,omitempty"`
}

// SuspendRequest is the body of POST /v1/agreements/{peer}/suspend.
type SuspendRequest struct {
	// Reason is required: it is logged, shown to the peer and to units
	// whose bundles are held.
	Reason string `json:"reason"`
}

// MaxSuspendBody bounds the body of a suspend request; MaxSuspendReason
// the reason in it, in bytes.
const (
	MaxSuspendBody   = 4 << 10
	MaxSuspendReason = 256
)

// Suspension is an operator's suspension of cooperation with a peer.
type Suspension struct {
	Reason string    `json:"reason"`
	By     string    `json:"by"`
	At     time.Time `json:"at"`
}

// Reload is the answer of POST /v1/agreements/reload, and of a resume or a
// suspension: what changed. A refused reload is an error
// (invalid-config) and changes nothing.
type Reload struct {
	// Changed is false when the file states what is already in force.
	Changed bool `json:"changed"`
	// Changes say, one line each, what changed: "agreement FR: version 3
	// → 4", "user FR/analyst removed".
	Changes []string `json:"changes"`
	// RestartNeeded names settings that changed in the file but apply
	// only at the next start, such as listening addresses.
	RestartNeeded []string `json:"restart_needed,omitempty"`
}
