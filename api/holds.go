package api

import "time"

// The endpoints of legal holds (docs/api.md 3.20–3.22), for the local
// units the gateway's configuration names (retention.hold_units); the
// list is for operators too:
//
//	POST   /v1/holds/{id}  place a legal hold on bundle id (body: HoldRequest)
//	DELETE /v1/holds/{id}  release it (body: ReleaseRequest)
//	GET    /v1/holds       the holds placed (HoldList)
//
// A held bundle is kept, and stays readable, past its retention until the
// hold is released (docs/retention.md, "Legal hold").

// HoldRequest is the body of POST /v1/holds/{id}.
type HoldRequest struct {
	// Reason says why the bundle is kept; Reference names what the hold
	// rests on, such as a court order or a case number. Both are
	// required, and written to the transfer log.
	Reason    string `json:"reason"`
	Reference string `json:"reference"`
}

// ReleaseRequest is the body of DELETE /v1/holds/{id}.
type ReleaseRequest struct {
	// Reason says why the hold ends; required, and written to the
	// transfer log.
	Reason string `json:"reason"`
}

// Bounds on the holds' requests, in bytes: the body, the reason (as the
// transfer log's reasons) and the reference (as an agreement's).
const (
	MaxHoldBody      = 4 << 10
	MaxHoldReason    = 200
	MaxHoldReference = 64
)

// Hold is a legal hold on a bundle stored at the gateway.
type Hold struct {
	BundleID string `json:"bundle_id"`
	// Boxes are where the bundle is stored at the gateway: "inbox" (it
	// was received), "outbox" (it was sent), or both.
	Boxes     []string  `json:"boxes"`
	Reason    string    `json:"reason"`
	Reference string    `json:"reference"`
	By        string    `json:"by"`
	At        time.Time `json:"at"`
	// Released is set in the answer to DELETE /v1/holds/{id}: the hold
	// above is no longer placed.
	Released *HoldRelease `json:"released,omitempty"`
}

// HoldRelease is the end of a hold: why, by whom and when.
type HoldRelease struct {
	Reason string    `json:"reason"`
	By     string    `json:"by"`
	At     time.Time `json:"at"`
}

// HoldList is the answer of GET /v1/holds: the holds placed, oldest
// first.
type HoldList struct {
	Gateway string `json:"gateway"`
	Holds   []Hold `json:"holds"`
	// Truncated is set when there are more than MaxHoldList holds: only
	// the first MaxHoldList are listed.
	Truncated bool `json:"truncated,omitempty"`
}

// MaxHoldList bounds the holds GET /v1/holds lists.
const MaxHoldList = 10000
