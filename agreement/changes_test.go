package agreement

import (
	"slices"
	"testing"
	"time"
)

func TestChanges(t *testing.T) {
	day := 24 * time.Hour
	base := func() *Agreement {
		return &Agreement{Peer: "FR", Version: 3, Ref: "2026/114", Status: Active,
			Outbound: []string{"criminal-investigation", "prosecution"}, Inbound: []string{"prosecution"},
			Handling: []string{"H1"}, TLP: []string{"amber"},
			MaxRetention: map[string]time.Duration{"prosecution": 365 * day, "criminal-investigation": 180 * day}}
	}
	tests := []struct {
		name   string
		change func(a *Agreement) *Agreement
		want   []string
	}{
		{"none", func(a *Agreement) *Agreement { return a }, nil},
		{"version", func(a *Agreement) *Agreement { a.Version, a.Ref = 4, "2026/120"; return a },
			[]string{"agreement FR: version 3 → 4 (ref 2026/114 → 2026/120)"}},
		{"purposes", func(a *Agreement) *Agreement {
			a.Outbound = []string{"prosecution", "incident-response"}
			return a
		}, []string{"agreement FR: outbound purposes + incident-response; - criminal-investigation"}},
		{"order only", func(a *Agreement) *Agreement {
			a.Outbound = []string{"prosecution", "criminal-investigation"}
			return a
		}, nil},
		{"status", func(a *Agreement) *Agreement { a.Status, a.StatusReason = Suspended, "audit"; return a },
			[]string{"agreement FR: status active → suspended: audit"}},
		{"retention", func(a *Agreement) *Agreement {
			a.MaxRetention = map[string]time.Duration{"prosecution": 200 * day, "incident-response": 30 * day}
			return a
		}, []string{
			`agreement FR: maximum retention for "criminal-investigation": 180d → none`,
			`agreement FR: maximum retention for "incident-response": none → 30d`,
			`agreement FR: maximum retention for "prosecution": 365d → 200d`,
		}},
		{"limits", func(a *Agreement) *Agreement {
			a.MaxBundleSize, a.RateBundles, a.RateBytes = 1<<30, 10, 0
			a.ValidUntil = time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
			return a
		}, []string{
			"agreement FR: maximum bundle size no limit → 1073741824 bytes",
			"agreement FR: rate no limit → 10 bundles an hour",
			"agreement FR: valid until unbounded → 2027-01-01T00:00:00Z",
		}},
		{"removed", func(a *Agreement) *Agreement { return nil }, []string{"agreement FR removed: nothing flows with FR"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Changes(base(), tt.change(base()))
			if !slices.Equal(got, tt.want) {
				t.Errorf("Changes:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
	if got := Changes(nil, base()); len(got) != 1 || got[0] != "agreement FR added: version 3 (ref 2026/114), active" {
		t.Errorf("added: %q", got)
	}
}
