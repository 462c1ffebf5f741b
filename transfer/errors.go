package transfer

import (
	"errors"
	"fmt"
)

// ErrCanceled is what a payload read returns when the sender abandons the
// transfer: a Receiver returns it (wrapped or not) having stored nothing,
// and no rejection is sent.
var ErrCanceled = errors.New("the sender canceled the transfer")

// Rejection codes of protocol v1: a fixed set, so that they can be counted
// in metrics and acted on by the sender.
const (
	CodeMalformed        = "malformed"         // a frame or the envelope does not parse
	CodeBadSignature     = "bad-signature"     // the envelope signature does not verify
	CodeSenderMismatch   = "sender-mismatch"   // the envelope's sender gateway is not the authenticated peer
	CodeUnknownSender    = "unknown-sender"    // the sender unit or its signing key is not in the sending gateway's directory
	CodeUnknownRecipient = "unknown-recipient" // a recipient unit does not exist here, or its key does not match
	CodeTooLarge         = "too-large"         // the payload exceeds the receiver's limit
	CodeConflict         = "conflict"          // the bundle id is known with another payload hash; a witness holds another size of the log (KnownSize)
	CodeSizeMismatch     = "size-mismatch"     // the payload was shorter or longer than declared
	CodeHashMismatch     = "hash-mismatch"     // the payload's SHA-256 differs from the envelope's
	CodeNotAccepted      = "not-accepted"      // policy refuses the bundle (purpose, agreement, suspension)
	CodeUnavailable      = "unavailable"       // the receiver cannot store now; retry later
	CodeInternal         = "internal"          // an unexpected error at the receiver
	CodeInconsistent     = "inconsistent"      // a checkpoint does not extend the one the witness holds of that log
)

// Rejection codes of the receiver's agreement with the sender
// (agreements.md): the same codes the sending gateway's own agreement
// refuses with, so that a unit reads one code whichever side refused.
// too-large above is one of them too.
const (
	CodeNoAgreement          = "no-agreement"             // the receiver has no agreement with the sender: nothing flows
	CodeAgreementTerminated  = "agreement-terminated"     // the receiver's agreement is terminated
	CodeAgreementSuspended   = "agreement-suspended"      // the receiver's agreement is suspended
	CodeAgreementNotYetValid = "agreement-not-yet-valid"  // the receiver's agreement is not yet valid
	CodeAgreementLapsed      = "agreement-lapsed"         // the receiver's agreement has lapsed
	CodePurposeNotAccepted   = "purpose-not-accepted"     // the receiver does not accept the purpose inbound
	CodeHandlingNotAccepted  = "handling-not-accepted"    // the receiver does not accept the handling code
	CodeTLPNotAccepted       = "tlp-not-accepted"         // the receiver does not accept the TLP label
	CodeRetentionTooLong     = "retention-too-long"       // the retention exceeds the receiver's cap for the purpose
	CodeRecipientNotAuth     = "recipient-not-authorised" // a recipient here is not authorised for the purpose
	CodeRateLimited          = "rate-limited"             // the receiver's hourly limit from the sender is reached; retry later
)

// KnownCode reports whether code is one of the rejection codes of protocol
// v1 above. A peer may send any string: a code it makes up must not become,
// say, a new metric label.
func KnownCode(code string) bool {
	switch code {
	case CodeMalformed, CodeBadSignature, CodeSenderMismatch, CodeUnknownSender, CodeUnknownRecipient,
		CodeTooLarge, CodeConflict, CodeSizeMismatch, CodeHashMismatch, CodeNotAccepted,
		CodeUnavailable, CodeInternal, CodeInconsistent,
		CodeNoAgreement, CodeAgreementTerminated, CodeAgreementSuspended, CodeAgreementNotYetValid, CodeAgreementLapsed,
		CodePurposeNotAccepted, CodeHandlingNotAccepted, CodeTLPNotAccepted, CodeRetentionTooLong, CodeRecipientNotAuth,
		CodeRateLimited:
		return true
	}
	return false
}

// Rejection is a refusal with a code from the fixed set above and a reason
// meant for people. Receivers return it to refuse; senders receive it.
type Rejection struct {
	Code   string
	Reason string
	// KnownSize is set only in a conflict answering a witness request:
	// the size of the latest checkpoint of the requesting gateway's log
	// that the witness has cosigned, 0 if none.
	KnownSize *int64
}

func (r *Rejection) Error() string { return fmt.Sprintf("rejected (%s): %s", r.Code, r.Reason) }

// Reject returns a *Rejection with a formatted reason.
func Reject(code, format string, args ...any) *Rejection {
	return &Rejection{Code: code, Reason: fmt.Sprintf(format, args...)}
}

// WitnessConflict returns the rejection of a witness request whose old size
// is not knownSize, the size of the latest checkpoint of the peer's log the
// witness has cosigned (0 if none).
func WitnessConflict(knownSize int64, format string, args ...any) *Rejection {
	r := Reject(CodeConflict, format, args...)
	r.KnownSize = &knownSize
	return r
}

// Temporary reports whether the sender should retry later: a receiver
// that cannot store now, or whose rate limit is reached.
func (r *Rejection) Temporary() bool {
	return r.Code == CodeUnavailable || r.Code == CodeInternal || r.Code == CodeRateLimited
}
