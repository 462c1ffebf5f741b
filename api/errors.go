package api

import (
	"fmt"
	"net/http"
)

// Code is the machine-readable reason of an API refusal, from the fixed set
// in [Codes]. Programs act on codes; messages are for people.
type Code string

// The API's error codes. Each is sent with the HTTP status [Codes] gives.
const (
	CodeMalformedEnvelope   Code = "malformed-envelope"
	CodeBadSignature        Code = "bad-signature"
	CodeBadDeliver          Code = "bad-deliver"
	CodeBadWait             Code = "bad-wait"
	CodeBadState            Code = "bad-state"
	CodeBadLimit            Code = "bad-limit"
	CodeBadPreflight        Code = "bad-preflight"
	CodeSizeMismatch        Code = "size-mismatch"
	CodeHashMismatch        Code = "hash-mismatch"
	CodeUnknownRecipient    Code = "unknown-recipient"
	CodeMultipleCountries   Code = "multiple-countries"
	CodeUnauthenticated     Code = "unauthenticated"
	CodeNoIdentity          Code = "no-identity"
	CodeNoRole              Code = "no-role"
	CodeForbidden           Code = "forbidden"
	CodeSenderMismatch      Code = "sender-mismatch"
	CodeUnknownSenderKey    Code = "unknown-sender-key"
	CodeUnknownUnit         Code = "unknown-unit"
	CodeNotFound            Code = "not-found"
	CodeUploadStalled       Code = "upload-stalled"
	CodeDuplicate           Code = "duplicate"
	CodeLengthRequired      Code = "length-required"
	CodeTooLarge            Code = "too-large"
	CodeInternal            Code = "internal"
	CodeUnavailable         Code = "unavailable"
	CodeDeliveryInterrupted Code = "delivery-interrupted"
	CodeStorageUnavailable  Code = "storage-unavailable"
	CodePeerRefused         Code = "peer-refused"
	CodeBadLogPath          Code = "bad-log-path"
	CodeBadFrom             Code = "bad-from"
	CodeNotInLog            Code = "not-in-log"

	// The codes of the agreement with the peer that refuse an upload
	// (agreements.md); too-large above is one of them too.
	CodeNoAgreement         Code = "no-agreement"
	CodeAgreementTerminated Code = "agreement-terminated"
	CodeAgreementSuspended  Code = "agreement-suspended"
	CodeAgreementNotYet     Code = "agreement-not-yet-valid"
	CodeAgreementLapsed     Code = "agreement-lapsed"
	CodePurposeNotAllowed   Code = "purpose-not-allowed"
	CodeHandlingNotAccepted Code = "handling-not-accepted"
	CodeTLPNotAccepted      Code = "tlp-not-accepted"
	CodeRetentionTooLong    Code = "retention-too-long"
	CodeRateLimited         Code = "rate-limited"
	// The peer's own agreement, as its signed summary states it, or its
	// signed directory, refuses: the sender learns it before sealing.
	CodePurposeNotAccepted     Code = "purpose-not-accepted"
	CodeRecipientNotAuthorised Code = "recipient-not-authorised"

	// The operator's agreement endpoints (api.md 3.16–3.19).
	CodeUnknownPeer       Code = "unknown-peer"
	CodeBadReason         Code = "bad-reason"
	CodeInvalidConfig     Code = "invalid-config"
	CodeReloadUnavailable Code = "reload-unavailable"
	CodeAlreadySuspended  Code = "already-suspended"
	CodeNotSuspended      Code = "not-suspended"

	// The legal holds' endpoints (api.md 3.20–3.22); bad-reason above is
	// one of them too.
	CodeBadReference Code = "bad-reference"
	CodeAlreadyHeld  Code = "already-held"
	CodeNotHeld      Code = "not-held"

	// A bundle whose retention has ended (docs/retention.md).
	CodeExpired Code = "expired"
)

// CodeInfo is one row of the code table: the HTTP status a code is sent
// with and what it means.
type CodeInfo struct {
	Code    Code
	Status  int
	Meaning string
}

// codes is the one table of error codes, in the order of docs/api.md
// section 4 (by status, then code).
var codes = []CodeInfo{
	{CodeBadDeliver, http.StatusBadRequest, "`deliver` is neither `queue` nor `direct`"},
	{CodeBadFrom, http.StatusBadRequest, "`from` is not a tree size (a whole number from 0)"},
	{CodeBadLimit, http.StatusBadRequest, "`limit` is not a number from 1 to 1000"},
	{CodeBadLogPath, http.StatusBadRequest, "not a path of the transfer log: `checkpoint`, `checkpoints/<size>` or a tile path (audit.md 4.2)"},
	{CodeBadPreflight, http.StatusBadRequest, "the pre-flight's body is not one JSON object of the members of 3.14, is over 16 KiB, or holds a value an envelope may not have"},
	{CodeBadReason, http.StatusBadRequest, "a suspension, or a hold's placing or release, without a reason, or with one over 256 bytes (200 for a hold) or with control characters"},
	{CodeBadReference, http.StatusBadRequest, "a hold without a reference, or with one over 64 bytes, not printable text, with leading or trailing spaces, or that looks like a file path or a key"},
	{CodeBadSignature, http.StatusBadRequest, "`Evx-Signature` not base64, or the signature does not verify"},
	{CodeBadState, http.StatusBadRequest, "`state` is not `queued`, `delivered` or `refused`"},
	{CodeBadWait, http.StatusBadRequest, "`wait` is not a duration from `0s` to `1m`"},
	{CodeHashMismatch, http.StatusBadRequest, "the body's SHA-256 differs from `payload.sha256`"},
	{CodeMalformedEnvelope, http.StatusBadRequest, "`Evx-Envelope` missing, not base64, or not a valid canonical envelope"},
	{CodeMultipleCountries, http.StatusBadRequest, "the recipients belong to more than one country; seal one bundle per country"},
	{CodeSizeMismatch, http.StatusBadRequest, "`Content-Length` or the body length differs from `payload.size`"},
	{CodeUnknownRecipient, http.StatusBadRequest, "a recipient without unit id, unknown, with another key, not a recipient, or local"},
	{CodeUnauthenticated, http.StatusUnauthorized, "no client certificate (not reached in practice: the TLS handshake requires one)"},
	{CodeAgreementLapsed, http.StatusForbidden, "the agreement with the recipients' country has lapsed (`valid_until`)"},
	{CodeAgreementNotYet, http.StatusForbidden, "the agreement with the recipients' country is not yet valid (`valid_from`)"},
	{CodeAgreementSuspended, http.StatusForbidden, "the agreement with the recipients' country is suspended"},
	{CodeAgreementTerminated, http.StatusForbidden, "the agreement with the recipients' country is terminated"},
	{CodeForbidden, http.StatusForbidden, "the caller's role may not call this endpoint"},
	{CodeHandlingNotAccepted, http.StatusForbidden, "the agreement does not accept the envelope's handling code"},
	{CodeNoAgreement, http.StatusForbidden, "no agreement with the recipients' country: nothing flows with it (agreements.md)"},
	{CodeNoIdentity, http.StatusForbidden, "the client certificate has no `evx://unit/` URI SAN, or a malformed one"},
	{CodeNoRole, http.StatusForbidden, "the identity is not among the gateway's users"},
	{CodePurposeNotAccepted, http.StatusForbidden, "the peer's agreement, as its last signed summary states it, does not accept the envelope's purpose inbound"},
	{CodePurposeNotAllowed, http.StatusForbidden, "the agreement does not allow the envelope's purpose outbound"},
	{CodeRecipientNotAuthorised, http.StatusForbidden, "a recipient is not authorised for the envelope's purpose, as its country's signed directory states"},
	{CodeRetentionTooLong, http.StatusForbidden, "the envelope's retention exceeds the agreement's cap for its purpose: refused, not shortened"},
	{CodeSenderMismatch, http.StatusForbidden, "the envelope's sender is not the caller"},
	{CodeTLPNotAccepted, http.StatusForbidden, "the agreement does not accept the envelope's TLP label"},
	{CodeUnknownSenderKey, http.StatusForbidden, "the envelope is signed with a key other than the caller's configured one"},
	{CodeNotFound, http.StatusNotFound, "no such bundle for this caller"},
	{CodeNotInLog, http.StatusNotFound, "no such checkpoint, tile or entry bundle in the transfer log"},
	{CodeUnknownPeer, http.StatusNotFound, "no such peer in the gateway's configuration"},
	{CodeUnknownUnit, http.StatusNotFound, "directory lookup: no such unit, or its country is not a peer"},
	{CodeUploadStalled, http.StatusRequestTimeout, "the upload's body brought no byte for the gateway's stall timeout (30 s by default); nothing was stored: upload again"},
	{CodeAlreadyHeld, http.StatusConflict, "a legal hold is already placed on the bundle"},
	{CodeAlreadySuspended, http.StatusConflict, "cooperation with the peer is already suspended by an operator"},
	{CodeDuplicate, http.StatusConflict, "the bundle id was already submitted"},
	{CodeNotHeld, http.StatusConflict, "no legal hold is placed on the bundle"},
	{CodeNotSuspended, http.StatusConflict, "cooperation with the peer is not suspended by an operator"},
	{CodeReloadUnavailable, http.StatusConflict, "the gateway was not started from a configuration file it can read again"},
	{CodeExpired, http.StatusGone, "the bundle's retention has ended: it can no longer be read, and is being deleted (retention.md); or an upload whose `retain_until` has passed"},
	{CodeLengthRequired, http.StatusLengthRequired, "upload without `Content-Length` (chunked)"},
	{CodeTooLarge, http.StatusRequestEntityTooLarge, "`payload.size` exceeds the gateway's maximum bundle size, or the agreement's"},
	{CodeInvalidConfig, http.StatusUnprocessableEntity, "the configuration file is invalid: nothing of it applies, the running configuration stays; the message names the field and line"},
	{CodeRateLimited, http.StatusTooManyRequests, "the agreement's hourly limit of bundles or bytes to that country is reached; `Retry-After` and the message say when to retry"},
	{CodeInternal, http.StatusInternalServerError, "an unexpected error, logged at the gateway"},
	{CodePeerRefused, http.StatusBadGateway, "the peer gateway's certificate is refused (CA, expiry or identity): a configuration problem at one of the two gateways, not a temporary one"},
	{CodeDeliveryInterrupted, http.StatusServiceUnavailable, "a direct delivery broke off part-way; nothing was stored: upload again"},
	{CodeStorageUnavailable, http.StatusServiceUnavailable, "the gateway's storage cannot be reached; nothing was changed: retry later"},
	{CodeUnavailable, http.StatusServiceUnavailable, "the peer gateway's directory cannot be fetched and none is kept: retry later"},
}

// Codes returns the table of error codes, ordered by status, then code.
func Codes() []CodeInfo { return append([]CodeInfo(nil), codes...) }

// Status returns the HTTP status code c is sent with: 500 for a code not in
// the table, which is a bug in the gateway.
func (c Code) Status() int {
	for _, i := range codes {
		if i.Code == c {
			return i.Status
		}
	}
	return http.StatusInternalServerError
}

// Temporary reports whether the same request may succeed later unchanged.
func (c Code) Temporary() bool { return c.Status() == http.StatusServiceUnavailable }

// Error is a refusal of the API: a code from [Codes] and a message for
// people. The gateway's request handling returns it; the HTTP layer sends
// it with c.Status() as {"error": {"code", "message"}}; clients get it back
// as an error.
type Error struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
	// HTTPStatus is the status the error came with, set by clients; the
	// gateway sends Code.Status().
	HTTPStatus int `json:"-"`
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %s", e.Code, e.Message) }

// Errorf returns an *Error with a formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorBody is the JSON body of every refusal.
type ErrorBody struct {
	Error *Error `json:"error"`
}
