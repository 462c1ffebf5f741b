package api

import (
	"time"

	"evx/crypto"
)

// Recall and shortening (docs/api.md 3.23, 3.24; docs/retention.md,
// "Recall and shortening"): the unit that submitted a bundle asks the
// gateway that received it to end its retention now, or earlier than its
// envelope says. The unit signs the request itself, with the key that
// signed the envelope (crypto.RecallRequest); its gateway checks it,
// forwards it to the peer and answers with the peer's signed ack
// (crypto.RecallAck), applied or not.

// RecallRequest is the body of POST /v1/outbox/{id}/recall.
type RecallRequest struct {
	// Request is the unit's signed crypto.RecallRequest.
	Request *crypto.Signed `json:"request"`
}

// MaxRecallBody bounds the body of POST /v1/outbox/{id}/recall: a signed
// request of crypto.MaxRecallBodySize, base64-encoded, with its
// signature, takes under 6 KiB.
const MaxRecallBody = 16 << 10

// Recall is a recall request forwarded to the peer and its answer: the
// answer of POST /v1/outbox/{id}/recall, and an entry of RecallStatus.
// Applied, Code, Reason, RetainUntil and At are the ack's, as the sending
// gateway verified it; Request and Ack are the signed documents, for
// anyone to verify again (the ack under the peer's signing key, GET
// /v1/peers).
type Recall struct {
	BundleID string `json:"bundle_id"`
	// Peer is the gateway that received the bundle and signed the ack.
	Peer    string `json:"peer"`
	Applied bool   `json:"applied"`
	// Code and Reason say why the peer did not apply the request: a
	// legal hold there (legal-hold), a shorter retention already in
	// force (not-shorter), or a retention ended already (expired).
	Code   string `json:"code,omitempty"`
	Reason string `json:"reason,omitempty"`
	// RetainUntil is the retain-until in force at the peer after the
	// answer.
	RetainUntil time.Time `json:"retain_until"`
	// At is when the peer answered.
	At      time.Time      `json:"at"`
	Request *crypto.Signed `json:"request"`
	Ack     *crypto.Signed `json:"ack"`
}

// RecallStatus is the answer of GET /v1/outbox/{id}/recall: what the
// submitter needs to sign a request, and the recalls made so far.
type RecallStatus struct {
	BundleID string `json:"bundle_id"`
	// Peer is the gateway the bundle went to.
	Peer string `json:"peer"`
	// Delivered reports whether the peer receipted the bundle: until it
	// has, there is nothing to recall there.
	Delivered bool `json:"delivered"`
	// Envelope is the bundle's canonical envelope, whose SHA-256 a
	// request names (crypto.NewRecallRequest).
	Envelope []byte `json:"envelope"`
	// Recalls are the answers kept, oldest first.
	Recalls []Recall `json:"recalls"`
}

// MaxRecalls bounds the answers a bundle keeps: a unit has no reason to
// recall a bundle more than a few times, and each is kept until the
// bundle's retention ends.
const MaxRecalls = 32
