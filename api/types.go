package api

import (
	"time"

	"evx/crypto"
)

// Role is what a local user may do through the API. The gateway's
// configuration gives each user identity one role.
type Role string

// The roles of local users.
const (
	// RoleSubmitter is a forensic unit: it looks up recipients, uploads
	// bundles and follows their delivery.
	RoleSubmitter Role = "submitter"
	// RoleRecipient is a prosecutor: it lists its inbox, downloads the
	// bundles addressed to it and acknowledges them.
	RoleRecipient Role = "recipient"
	// RoleAuditor is oversight.
	RoleAuditor Role = "auditor"
	// RoleOperator runs the gateway: it sees the delivery state of every
	// bundle, never an envelope's legal metadata or a payload.
	RoleOperator Role = "operator"
)

// Roles lists the valid roles.
func Roles() []Role { return []Role{RoleSubmitter, RoleRecipient, RoleAuditor, RoleOperator} }

// Valid reports whether r is one of [Roles].
func (r Role) Valid() bool {
	switch r {
	case RoleSubmitter, RoleRecipient, RoleAuditor, RoleOperator:
		return true
	}
	return false
}

// State is the delivery state of a submitted bundle.
type State string

// The delivery states of a submitted bundle. A bundle is queued until the
// peer gateway receipts it (delivered) or finally refuses it (refused);
// both are final.
const (
	StateQueued    State = "queued"
	StateDelivered State = "delivered"
	StateRefused   State = "refused"
)

// States lists the delivery states.
func States() []State { return []State{StateQueued, StateDelivered, StateRefused} }

// Valid reports whether s is one of [States].
func (s State) Valid() bool {
	switch s {
	case StateQueued, StateDelivered, StateRefused:
		return true
	}
	return false
}

// DeliveryMode is how the gateway delivers an upload: the value of
// POST /v1/bundles?deliver=.
type DeliveryMode string

const (
	// Queue stores the bundle and answers; delivery follows.
	Queue DeliveryMode = "queue"
	// Direct forwards the upload to the peer while it arrives and answers
	// with the peer's receipt or refusal, or stores the bundle as Queue
	// does if the peer cannot take it at once.
	Direct DeliveryMode = "direct"
)

// Header names carrying the envelope and signature of an upload, base64.
const (
	HeaderEnvelope  = "Evx-Envelope"
	HeaderSignature = "Evx-Signature"
)

// MaxStatusWait bounds the wait of GET /v1/outbox/{id}?wait=, so that
// clients and proxies with request timeouts get an answer.
const MaxStatusWait = time.Minute

// WhoAmI is the answer of GET /v1/whoami.
type WhoAmI struct {
	Gateway string `json:"gateway"`
	Unit    string `json:"unit"`
	Role    Role   `json:"role"`
}

// OutboxStatus is the delivery state of a submitted bundle: the answer of
// POST /v1/bundles and GET /v1/outbox/{id}, and an element of GET
// /v1/outbox.
type OutboxStatus struct {
	BundleID string `json:"bundle_id"`
	State    State  `json:"state"`
	// Peer is the gateway the bundle goes to.
	Peer string `json:"peer,omitempty"`
	// SubmittedBy and Submitted are the submitting unit and the time the
	// gateway committed the upload.
	SubmittedBy string     `json:"submitted_by,omitempty"`
	Submitted   *time.Time `json:"submitted,omitempty"`
	// Receipt and Delivered are set once delivered: the peer's signed
	// receipt and the time it was stored.
	Receipt   *crypto.Signed `json:"receipt,omitempty"`
	Delivered *time.Time     `json:"delivered,omitempty"`
	// Refusal is set once refused: the peer's final refusal.
	Refusal *Refusal `json:"refusal,omitempty"`
}

// OutboxList is the answer of GET /v1/outbox: submitted bundles, newest
// first, without their receipts (GET /v1/outbox/{id} has them).
type OutboxList struct {
	Bundles []OutboxStatus `json:"bundles"`
	// Truncated reports that more bundles match than the limit let
	// through: the oldest are left out.
	Truncated bool `json:"truncated"`
}

// Limits of GET /v1/outbox?limit=: the number of bundles listed when none
// is asked for, and the most that may be asked for, so that one answer
// stays small and quick to build.
const (
	DefaultOutboxLimit = 100
	MaxOutboxLimit     = 1000
)

// Refusal is a peer gateway's final refusal of a bundle.
type Refusal struct {
	Code   string    `json:"code"`
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

// InboxEntry describes a received bundle to its recipient.
type InboxEntry struct {
	BundleID    string    `json:"bundle_id"`
	From        string    `json:"from"`
	Sender      string    `json:"sender"`
	Purpose     string    `json:"purpose"`
	LegalBasis  string    `json:"legal_basis"`
	Case        string    `json:"case,omitempty"`
	Handling    string    `json:"handling"`
	TLP         string    `json:"tlp"`
	Size        int64     `json:"size"`
	ReceivedAt  time.Time `json:"received_at"`
	RetainUntil time.Time `json:"retain_until"`
	// SenderCheck says how the gateway checked the sender's signing key.
	SenderCheck  string `json:"sender_check"`
	Acknowledged bool   `json:"acknowledged"`
	// Retention is where the bundle's retention stands.
	Retention Retention `json:"retention"`
	// Envelope and Signature are set by GET /v1/inbox/{id} only.
	Envelope  []byte `json:"envelope,omitempty"`
	Signature []byte `json:"signature,omitempty"`
	// SenderDirectory is set by GET /v1/inbox/{id} only, when the gateway
	// kept it: the sending gateway's signed unit directory (protocol.md
	// 7.3) that the gateway checked the sender's signing key against, as
	// that gateway signed it. A recipient verifies it with
	// crypto.VerifyDirectory against the signing key GET /v1/peers gives
	// for From, rather than trust the gateway's storage.
	SenderDirectory *crypto.Signed `json:"sender_directory,omitempty"`
}

// Peer is a peer gateway as this gateway's configuration knows it: an
// element of GET /v1/peers.
type Peer struct {
	ID string `json:"id"`
	// SigningKey is the peer's public signing key (ed25519:…), which
	// verifies its receipts and unit directories.
	SigningKey string `json:"signing_key"`
}

// Acknowledged is the answer of POST /v1/inbox/{id}/ack.
type Acknowledged struct {
	BundleID string `json:"bundle_id"`
	Status   string `json:"status"` // "acknowledged"
}

// LogStatus is the answer of GET /v1/log/status: the state of the
// gateway's transfer log, for monitoring. It says what the gateway
// published, not that it is true: evx audit verify checks that.
type LogStatus struct {
	// Origin names the log, such as evx.transfer-log/DE.
	Origin string `json:"origin"`
	// Size and RootHash (base64) are those of the latest checkpoint.
	Size     int64  `json:"size"`
	RootHash string `json:"root_hash"`
	// Published is when the latest checkpoint was stored, by the
	// storage's clock (to the second on some S3 servers); AgeSeconds is
	// the time since, by the gateway's clock. A log with no new events
	// publishes no new checkpoint: age alone is not a fault.
	Published  time.Time `json:"published"`
	AgeSeconds float64   `json:"age_seconds"`
	// Witnesses are the configured peers, by id, each with the time of
	// its cosignature of the latest checkpoint if it has cosigned it.
	Witnesses []LogWitness `json:"witnesses"`
}

// LogWitness is a peer gateway as a witness of the log: an element of
// LogStatus.Witnesses.
type LogWitness struct {
	Peer string `json:"peer"`
	// Name is the name of its witness key, such as evx.witness/FR.
	Name string `json:"name"`
	// Cosigned is the time in its cosignature of the latest checkpoint,
	// by the witness's clock, when it holds one that verifies under the
	// peer's configured witness key; absent otherwise (not yet, as
	// witnessing follows each checkpoint).
	Cosigned *time.Time `json:"cosigned,omitempty"`
}

// LogCheckpoints is the answer of GET /v1/log/checkpoints: the sizes of
// the earlier checkpoints the log published, ascending, from the size
// asked for, at most MaxLogCheckpoints at a time.
type LogCheckpoints struct {
	Sizes []int64 `json:"sizes"`
	// Truncated reports that there are more: ask again from the last
	// size + 1.
	Truncated bool `json:"truncated"`
}

// MaxLogCheckpoints bounds the sizes of one answer of GET
// /v1/log/checkpoints.
const MaxLogCheckpoints = 10000

// PreflightRequest is the body of POST /v1/preflight: what a unit is about
// to seal, as far as the agreement with the recipients' country speaks of
// it, so that the gateway can say before the sealing whether it would
// accept the upload.
type PreflightRequest struct {
	// Recipients are unit ids, such as FR/prosecutor, all of one country.
	Recipients []string `json:"recipients"`
	Purpose    string   `json:"purpose"`
	Handling   string   `json:"handling"`
	TLP        string   `json:"tlp"`
	// RetainUntil or Retention, exactly one: the envelope's retain_until,
	// or how long after its creation that will be, as a whole number of
	// weeks, days, hours, minutes or seconds (12w, 90d, 36h, 10m,
	// 7776000s).
	RetainUntil *time.Time `json:"retain_until,omitempty"`
	Retention   string     `json:"retention,omitempty"`
	// Size is the payload's size in bytes, or an upper bound of it.
	Size int64 `json:"size"`
	// LegalBasis is optional; no clause speaks of it yet.
	LegalBasis string `json:"legal_basis,omitempty"`
}

// MaxPreflightBody bounds the body of POST /v1/preflight.
const MaxPreflightBody = 16 << 10

// Preflight is the answer of POST /v1/preflight when the gateway would
// accept the upload: a refusal is an error with the agreement's code.
type Preflight struct {
	Allowed bool `json:"allowed"`
	// Peer is the recipients' country, whose agreement decided.
	Peer      string             `json:"peer"`
	Agreement PreflightAgreement `json:"agreement"`
}

// PreflightAgreement names the agreement that allowed a pre-flight.
type PreflightAgreement struct {
	Version int    `json:"version"`
	Ref     string `json:"ref"`
}
