package api

import "time"

// RetentionState is where a stored bundle's retention stands.
type RetentionState string

// The retention states.
const (
	// RetentionKept: before its retain-until; it can be read.
	RetentionKept RetentionState = "kept"
	// RetentionHeld: a legal hold keeps it, whatever its retain-until;
	// it can be read.
	RetentionHeld RetentionState = "held"
	// RetentionExpired: its retain-until has passed; it can no longer be
	// read, and the gateway is deleting it.
	RetentionExpired RetentionState = "expired"
)

// Retention is where a stored bundle's retention stands.
type Retention struct {
	State RetentionState `json:"state"`
	// Until is the retain-until in force: the envelope's, or an earlier
	// one its sender asked for (a recall or a shortening).
	Until time.Time `json:"until"`
	// Held is whether a legal hold is placed on the bundle.
	Held bool `json:"held"`
}
