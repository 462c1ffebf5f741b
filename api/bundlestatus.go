package api

import "time"

// BundleState is the answer of GET /v1/bundles/{id} (docs/api.md 3.25):
// what the caller may see of a bundle stored at the gateway, sent or
// received, with where its retention stands. To anyone it is neither
// addressed to nor submitted by, and who is not an operator, the bundle
// does not exist (not-found).
type BundleState struct {
	BundleID string `json:"bundle_id"`
	// Gateway is the gateway that answers.
	Gateway string `json:"gateway"`
	// At is the gateway's time of the answer: a client counts the time
	// left until a retain-until from it rather than from its own clock,
	// since the gateway's clock decides.
	At time.Time `json:"at"`
	// Outbox is set for a bundle submitted at this gateway, for its
	// submitter and for operators.
	Outbox *SentState `json:"outbox,omitempty"`
	// Inbox is set for a bundle received by this gateway, without its
	// envelope and signature (GET /v1/inbox/{id} gives them while the
	// bundle can be read): for a recipient it is addressed to, the
	// InboxEntry of GET /v1/inbox; for an operator only the members that
	// the transfer log records of every bundle anyway: bundle_id, from,
	// sender, purpose, size, received_at, retain_until and retention.
	Inbox *InboxEntry `json:"inbox,omitempty"`
	// Hold is the legal hold placed on the bundle, if any.
	Hold *Hold `json:"hold,omitempty"`
}

// SentState is the sending side of a BundleState: the delivery state of
// GET /v1/outbox/{id}, and the retention of the sender's records.
type SentState struct {
	OutboxStatus
	// Retention is where the retention of the sender's records stands:
	// they are kept until the envelope's retain_until.
	Retention Retention `json:"retention"`
	// PayloadStored is whether the sender's copy of the payload is still
	// stored at the gateway. It is removed once the peer's receipt is
	// stored and a grace period has passed; a bundle delivered directly
	// (POST /v1/bundles?deliver=direct) never had one.
	PayloadStored bool `json:"payload_stored"`
}
