package config

import (
	"slices"
	"testing"
)

func TestRestartNeeded(t *testing.T) {
	old := &Gateway{ID: "DE", Listen: Listen{Peer: ":7443", API: ":8443"}, SigningKey: "k"}
	same := *old
	same.Peers = []Peer{{ID: "FR"}}
	same.Users = []User{{Identity: "DE/forensics"}}
	if got := old.RestartNeeded(&same); len(got) != 0 {
		t.Errorf("peers and users changed: restart needed for %q, want none", got)
	}
	moved := *old
	moved.Listen.API = ":9443"
	moved.SigningKey = "other"
	if got, want := old.RestartNeeded(&moved), []string{"listen", "signing_key"}; !slices.Equal(got, want) {
		t.Errorf("restart needed for %q, want %q", got, want)
	}
}
