package client

import (
	"testing"
	"time"
)

// A retention is written for a pre-flight in the units a gateway reads,
// exactly, or rounded up to the second as the gateway counts a bundle's.
func TestRetentionText(t *testing.T) {
	for d, want := range map[time.Duration]string{
		90 * 24 * time.Hour:     "90d",
		36 * time.Hour:          "36h",
		90 * time.Minute:        "5400s",
		1500 * time.Millisecond: "2s",
	} {
		if got := retentionText(d); got != want {
			t.Errorf("retentionText(%v) = %q, want %q", d, got, want)
		}
	}
}
