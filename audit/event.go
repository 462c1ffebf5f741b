package audit

import (
	"fmt"
	"math/bits"
	"strings"
)

// Event names what an entry records. The set is closed: [events] lists
// every event with the members its entries carry, and a reader refuses an
// event it does not know (with an error matching [ErrUnknownEvent]).
type Event string

// The events. Those of the cooperation agreements, from
// EventAgreementDecision to EventAgreementResumed, are of entry format 2
// only ([EntryFormat2]); those of retention, from EventBundleExpired on,
// of format 3 only ([EntryFormat3]); the others of format 1.
const (
	EventUploadAccepted        Event = "upload-accepted"
	EventUploadRefused         Event = "upload-refused"
	EventOfferSent             Event = "offer-sent"
	EventDelivered             Event = "delivered"
	EventDeliveryRefused       Event = "delivery-refused"
	EventOfferAccepted         Event = "offer-accepted"
	EventOfferRefused          Event = "offer-refused"
	EventReceiptIssued         Event = "receipt-issued"
	EventPayloadDownloaded     Event = "payload-downloaded"
	EventRetrievalAcknowledged Event = "retrieval-acknowledged"
	EventGatewayStarted        Event = "gateway-started"
	EventRequestsRefused       Event = "requests-refused"
	EventSecurity              Event = "security"
	EventAgreementDecision     Event = "agreement-decision"
	EventConfigReloaded        Event = "config-reloaded"
	EventAgreementChanged      Event = "agreement-changed"
	EventAgreementSuspended    Event = "agreement-suspended"
	EventAgreementResumed      Event = "agreement-resumed"
	EventBundleExpired         Event = "bundle-expired"
	EventKeyShredded           Event = "key-shredded"
	EventBundlePurged          Event = "bundle-purged"
	EventOutboxPayloadDeleted  Event = "outbox-payload-deleted"
	EventOutboxPurged          Event = "outbox-purged"
	EventHoldPlaced            Event = "hold-placed"
	EventHoldReleased          Event = "hold-released"
	EventRecallRequested       Event = "recall-requested"
	EventRecallApplied         Event = "recall-applied"
	EventRecallRefused         Event = "recall-refused"
	EventRecallAcknowledged    Event = "recall-acknowledged"
	EventRecallDeclined        Event = "recall-declined"
)

// Outcome is how an event ended. Each event has one outcome, fixed by
// [events]; entries carry it so that a reader can count refusals without
// knowing every event.
type Outcome string

// The outcomes.
const (
	OutcomeAccepted Outcome = "accepted" // a unit's or a peer's request was taken on
	OutcomeRefused  Outcome = "refused"  // a request was refused, with a code
	OutcomeDone     Outcome = "done"     // the gateway did something (sent, issued, started, handed out)
	OutcomeAlert    Outcome = "alert"    // a security event: something that should never happen did
)

// Direction says which way the bundle an event is about travels, seen from
// the gateway that writes the entry: "outbound" to a peer, "inbound" from
// one. Each event has one direction, or none, fixed by [events].
type Direction string

// The directions.
const (
	Outbound Direction = "outbound"
	Inbound  Direction = "inbound"
)

// SecurityKind is what a security event is about. The set is closed:
// [securityKinds] lists every kind with the members its entries carry.
type SecurityKind string

// The security kinds.
const (
	// KindReceiptNotIncluded: a peer's receipt whose promised log entry
	// the peer did not prove included in its log within the maximum merge
	// delay.
	KindReceiptNotIncluded SecurityKind = "receipt-not-included"
	// KindInconsistentCheckpoint: a peer presented a checkpoint of its log
	// that is not consistent with one it presented before: a rewritten or
	// forked history.
	KindInconsistentCheckpoint SecurityKind = "inconsistent-checkpoint"
)

// Actors. An entry's actor is who made the event happen: a local unit
// whose request it is (authenticated by its API client certificate), the
// peer gateway whose offer, receipt or refusal it is (authenticated by its
// QUIC certificate), or the gateway acting on its own. Each event has one
// kind of actor, fixed by [events].
const (
	GatewayActor = "gateway"
	unitActor    = "unit:"
	peerActor    = "peer:"
)

// UnitActor returns the actor of an event a unit made happen, such as
// "unit:DE/forensics".
func UnitActor(unit string) string { return unitActor + unit }

// PeerActor returns the actor of an event a peer gateway made happen,
// such as "peer:FR".
func PeerActor(gateway string) string { return peerActor + gateway }

// actorKind is a set of kinds of actor.
type actorKind uint8

const (
	byUnit actorKind = 1 << iota
	byPeer
	byGateway
)

// member is a set of the optional members of an entry: those that only
// some events carry. format, time, gateway, actor, event and outcome are
// in every entry; direction in those of events that have one.
type member uint32

const (
	mBundleID member = 1 << iota
	mEnvelopeSHA256
	mPurpose
	mHandling
	mLegalBasis
	mPayloadSHA256
	mPayloadSize
	mPeer
	mCode
	mReason
	mReceipt
	mCount
	mSource
	mWindowStart
	mWindowEnd
	mConfigSHA256
	mKind
	mCheckpoint
	mAgreementVersion
	mAgreementRef
	mOldConfigSHA256
	mOldAgreementVersion
	mChanges
	mRetainUntil
	mReference
	endMembers
)

// memberNames are the JSON names of the members, in the order of the bits.
var memberNames = [...]string{
	"bundle_id", "envelope_sha256", "purpose", "handling", "legal_basis",
	"payload_sha256", "payload_size", "peer", "code", "reason", "receipt",
	"count", "source", "window_start", "window_end", "config_sha256",
	"kind", "checkpoint", "agreement_version", "agreement_ref",
	"old_config_sha256", "old_agreement_version", "changes",
	"retain_until", "reference",
}

// mBundle is what an envelope says about a bundle: the members that every
// event about a whole bundle carries, for the transparency report.
const mBundle = mBundleID | mEnvelopeSHA256 | mPurpose | mHandling | mLegalBasis | mPayloadSHA256 | mPayloadSize

// eventSpec describes one event: what it records and which members its
// entries carry. required members must be present, optional ones may be,
// and no other may.
type eventSpec struct {
	event     Event
	outcome   Outcome
	direction Direction
	actor     actorKind
	required  member
	optional  member
	doc       string
}

// format returns the entry format that holds s's event: format 2 for the
// events of the cooperation agreements, whose members format 1 lacks,
// format 3 for those of retention, whose members format 2 lacks, format 1
// for the others, so that readers of format 1 still read them.
func (s *eventSpec) format() string {
	switch s.event {
	case EventAgreementDecision, EventConfigReloaded, EventAgreementChanged, EventAgreementSuspended, EventAgreementResumed:
		return EntryFormat2
	case EventBundleExpired, EventKeyShredded, EventBundlePurged, EventOutboxPayloadDeleted, EventOutboxPurged,
		EventHoldPlaced, EventHoldReleased,
		EventRecallRequested, EventRecallApplied, EventRecallRefused, EventRecallAcknowledged, EventRecallDeclined:
		return EntryFormat3
	}
	return EntryFormat
}

// events is the closed table of events. Adding an event is one line here
// (and its row in docs/audit.md, which a test keeps equal); it may use
// only the members above, or it needs a new entry format (docs/audit.md,
// "Versions").
var events = []eventSpec{
	{EventUploadAccepted, OutcomeAccepted, Outbound, byUnit, mBundle | mPeer, 0, "a unit's upload was accepted, for delivery to `peer`"},
	{EventUploadRefused, OutcomeRefused, Outbound, byUnit, mCode, mBundleID | mPeer | mReason, "a unit's upload was refused; `code` is an API error code"},
	{EventOfferSent, OutcomeDone, Outbound, byGateway, mBundleID | mPeer, mEnvelopeSHA256, "the gateway offered the bundle to `peer`, revealing its envelope"},
	{EventDelivered, OutcomeAccepted, Outbound, byPeer, mBundle | mPeer | mReceipt, 0, "`peer` receipted the bundle; `receipt` is its signed receipt"},
	{EventDeliveryRefused, OutcomeRefused, Outbound, byPeer, mBundleID | mPeer | mCode, mEnvelopeSHA256 | mReason, "`peer` refused the bundle for good; `code` is a protocol error code"},
	{EventOfferAccepted, OutcomeAccepted, Inbound, byPeer, mBundle | mPeer, 0, "the gateway accepted `peer`'s offer and takes the payload"},
	{EventOfferRefused, OutcomeRefused, Inbound, byPeer, mPeer | mCode, mBundleID | mEnvelopeSHA256 | mReason, "the gateway refused `peer`'s offer; `code` is a protocol error code"},
	{EventReceiptIssued, OutcomeDone, Inbound, byPeer, mBundle | mPeer, 0, "the gateway stored the bundle and receipted it to `peer`; the receipt points to this entry"},
	{EventPayloadDownloaded, OutcomeDone, Inbound, byUnit, mBundleID, mPeer | mPayloadSHA256 | mPayloadSize, "a unit downloaded the payload of a received bundle"},
	{EventRetrievalAcknowledged, OutcomeDone, Inbound, byUnit, mBundleID, mPeer, "a unit acknowledged that it retrieved a received bundle"},
	{EventGatewayStarted, OutcomeDone, "", byGateway, mConfigSHA256, 0, "the gateway started, with the configuration whose SHA-256 is `config_sha256`"},
	{EventRequestsRefused, OutcomeRefused, "", byGateway, mCode | mCount | mSource | mWindowStart | mWindowEnd, mReason, "`count` connections, handshakes or API requests from `source` were refused between `window_start` and `window_end`; `code` is their category"},
	{EventSecurity, OutcomeAlert, "", byGateway, mKind, mPeer | mBundleID | mEnvelopeSHA256 | mReceipt | mCheckpoint | mReason, "something that should never happen happened; `kind` says what (2.2)"},
	// The one event whose outcome and direction are not fixed: they
	// follow from its code and actor (decisionOutcome, decisionDirection).
	{EventAgreementDecision, "", "", byUnit | byPeer | byGateway, mPeer | mCode, mBundle | mReason | mAgreementVersion | mAgreementRef,
		"the gateway decided under its agreement with `peer` (version `agreement_version`, reference `agreement_ref`; absent when there is none) whether the bundle may flow; `code` is `allowed` or the refusal's code (agreements.md)"},
	// An operator's API call (actor unit) or SIGHUP (actor gateway).
	{EventConfigReloaded, OutcomeDone, "", byUnit | byGateway, mConfigSHA256 | mOldConfigSHA256, mChanges,
		"the gateway applied a reloaded configuration, whose SHA-256 is `config_sha256`, in place of the one whose SHA-256 is `old_config_sha256`; `changes` lists what changed, one line each"},
	{EventAgreementChanged, OutcomeDone, "", byUnit | byGateway, mPeer | mChanges, mAgreementVersion | mAgreementRef | mOldAgreementVersion,
		"a reload changed the agreement with `peer` from version `old_agreement_version` to version `agreement_version` (reference `agreement_ref`); without `old_agreement_version` it was added, without `agreement_version` removed; `changes` lists what changed, one line each"},
	{EventAgreementSuspended, OutcomeDone, "", byUnit | byGateway | byPeer, mPeer | mReason, mAgreementVersion | mAgreementRef,
		"cooperation with `peer` under the agreement (version `agreement_version`, reference `agreement_ref`) was suspended, for `reason`; actor `peer:<peer>` when the peer's signed notice said that it suspended it"},
	{EventAgreementResumed, OutcomeDone, "", byUnit | byGateway | byPeer, mPeer, mAgreementVersion | mAgreementRef,
		"cooperation with `peer` under the agreement (version `agreement_version`, reference `agreement_ref`) was resumed; actor `peer:<peer>` when the peer's signed notice said that it resumed it"},
	// Retention (retention.md). A received bundle's retention ends in
	// three steps, each of which may fail and be retried apart.
	{EventBundleExpired, OutcomeDone, Inbound, byGateway, mBundle | mPeer | mRetainUntil, 0,
		"the retention of the bundle received from `peer` ended at `retain_until` (the envelope's, or a recall's shortened one), without a legal hold: the gateway no longer hands it out"},
	{EventKeyShredded, OutcomeDone, Inbound, byGateway, mBundle | mPeer, 0,
		"the gateway destroyed the shred key of the expired bundle received from `peer`: the stored bundle can no longer be decrypted"},
	{EventBundlePurged, OutcomeDone, Inbound, byGateway, mBundle | mPeer, 0,
		"the gateway deleted every version of the objects of the expired bundle received from `peer`, once their locks allowed it"},
	{EventOutboxPayloadDeleted, OutcomeDone, Outbound, byGateway, mBundle | mPeer, 0,
		"the gateway deleted its copy of the payload of the bundle `peer` receipted, once the grace after the receipt had passed"},
	{EventOutboxPurged, OutcomeDone, Outbound, byGateway, mBundle | mPeer, 0,
		"the gateway deleted every version of its records of the bundle sent to `peer`, at the end of the bundle's retention"},
	{EventHoldPlaced, OutcomeDone, "", byUnit, mBundle | mReason | mReference, 0,
		"a unit placed a legal hold on the bundle, for `reason`, under `reference` (a court order's or a case's): it is kept and readable past its retention until the hold is released"},
	{EventHoldReleased, OutcomeDone, "", byUnit, mBundle | mReason | mReference, 0,
		"a unit released the legal hold under `reference` on the bundle, for `reason`: its retention ends as if there had been none"},
	{EventRecallRequested, OutcomeAccepted, Outbound, byUnit, mBundle | mPeer | mRetainUntil, 0,
		"a unit asked that `peer` shorten the retention of the bundle sent to it to `retain_until`; the gateway sends `peer` the recall"},
	{EventRecallApplied, OutcomeAccepted, Inbound, byPeer, mBundle | mPeer | mRetainUntil, 0,
		"the gateway shortened the retention of the bundle received from `peer` to `retain_until`, as `peer`'s recall asked"},
	{EventRecallRefused, OutcomeRefused, Inbound, byPeer, mBundle | mPeer | mCode | mReason, 0,
		"the gateway refused `peer`'s recall of the bundle; `code` is a protocol error code"},
	{EventRecallAcknowledged, OutcomeAccepted, Outbound, byPeer, mBundle | mPeer | mRetainUntil, 0,
		"`peer` acknowledged the recall of the bundle: it shortened the bundle's retention to `retain_until`"},
	{EventRecallDeclined, OutcomeRefused, Outbound, byPeer, mBundle | mPeer | mCode | mReason, 0,
		"`peer` declined the recall of the bundle; `code` is a protocol error code"},
}

// decisionOutcome and decisionDirection are an agreement-decision's
// outcome and direction: accepted when its code is allowed, refused
// otherwise; inbound when a peer's offer asked for it, outbound when a
// unit's upload or the gateway's delivery did.
func decisionOutcome(code string) Outcome {
	if code == "allowed" {
		return OutcomeAccepted
	}
	return OutcomeRefused
}

func decisionDirection(actor string) Direction {
	if strings.HasPrefix(actor, peerActor) {
		return Inbound
	}
	return Outbound
}

// securityKinds is the closed table of security kinds, with the members
// each requires beyond kind (the security event allows them).
var securityKinds = []struct {
	kind     SecurityKind
	required member
	doc      string
}{
	{KindReceiptNotIncluded, mPeer | mBundleID | mReceipt, "`peer` did not prove, within the maximum merge delay, that its log includes the entry its `receipt` for the bundle promised"},
	{KindInconsistentCheckpoint, mPeer | mCheckpoint, "`peer` presented `checkpoint` (its signed note), which is not consistent with a checkpoint of its log it presented before"},
}

func lookupEvent(e Event) (*eventSpec, bool) {
	for i := range events {
		if events[i].event == e {
			return &events[i], true
		}
	}
	return nil, false
}

// names returns the JSON names of the members in m, in the order of the
// bits.
func (m member) names() []string {
	var names []string
	for m != 0 {
		i := bits.TrailingZeros32(uint32(m))
		names = append(names, memberNames[i])
		m &^= 1 << i
	}
	return names
}

func (k actorKind) String() string {
	var s []string
	if k&byUnit != 0 {
		s = append(s, "unit:<unit id>")
	}
	if k&byPeer != 0 {
		s = append(s, "peer:<peer>")
	}
	if k&byGateway != 0 {
		s = append(s, GatewayActor)
	}
	return strings.Join(s, " or ")
}

// EventInfo describes an event, for documentation and for tools that list
// or check event names.
type EventInfo struct {
	Event     Event
	Outcome   Outcome
	Direction Direction // "" if the event has none
	Actor     string    // the form of its actor
	Required  []string  // the members it must carry beyond those of every entry
	Optional  []string  // the members it may carry
	Doc       string
}

// Events returns the events of this entry format, in the order of the
// table in docs/audit.md.
func Events() []EventInfo {
	infos := make([]EventInfo, len(events))
	for i, s := range events {
		infos[i] = EventInfo{Event: s.event, Outcome: s.outcome, Direction: s.direction, Actor: s.actor.String(),
			Required: s.required.names(), Optional: s.optional.names(), Doc: s.doc}
	}
	return infos
}

// SecurityKindInfo describes a security kind.
type SecurityKindInfo struct {
	Kind     SecurityKind
	Required []string // the members it requires beyond kind
	Doc      string
}

// SecurityKinds returns the security kinds of this entry format.
func SecurityKinds() []SecurityKindInfo {
	infos := make([]SecurityKindInfo, len(securityKinds))
	for i, k := range securityKinds {
		infos[i] = SecurityKindInfo{Kind: k.kind, Required: k.required.names(), Doc: k.doc}
	}
	return infos
}

// ValidEvent reports whether e is an event of this entry format.
func ValidEvent(e Event) bool {
	_, ok := lookupEvent(e)
	return ok
}

// checkMembers checks that the members present, of an entry of spec (and
// of kind, for a security event), are those the tables require and allow.
func checkMembers(spec *eventSpec, kind SecurityKind, present member) error {
	required := spec.required
	if spec.event == EventSecurity {
		found := false
		for _, k := range securityKinds {
			if k.kind == kind {
				required |= k.required
				found = true
			}
		}
		if !found {
			return fmt.Errorf("unknown security kind %q", kind)
		}
	}
	if missing := required &^ present; missing != 0 {
		return fmt.Errorf("%s entry needs %s", describe(spec.event, kind), strings.Join(missing.names(), ", "))
	}
	if extra := present &^ (spec.required | spec.optional); extra != 0 {
		return fmt.Errorf("%s entry has no %s", describe(spec.event, kind), strings.Join(extra.names(), ", "))
	}
	// An agreement added has no old version, one removed no new one; a
	// change without either would not say which agreement it was.
	if spec.event == EventAgreementChanged && present&(mAgreementVersion|mOldAgreementVersion) == 0 {
		return fmt.Errorf("%s entry needs agreement_version, old_agreement_version or both", spec.event)
	}
	return nil
}

func describe(e Event, kind SecurityKind) string {
	if e == EventSecurity {
		return string(e) + " " + string(kind)
	}
	return string(e)
}
