package config

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoad checks that no input makes Parse panic, that every error is an
// Errors list of located messages, and that whatever it accepts is valid
// and prints as a configuration that parses back to itself.
func FuzzLoad(f *testing.F) {
	seeds := [][]byte{Example(), []byte(head)}
	for _, tc := range errorCases {
		seeds = append(seeds, []byte(tc.yaml))
	}
	for _, name := range []string{"valid/gateway.yaml"} {
		data, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		seeds = append(seeds, data)
	}
	if len(seeds) < 50 {
		f.Fatalf("seed corpus has %d entries; it should hold every error case", len(seeds))
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		g, err := Parse(data, "/etc/evx")
		if err != nil {
			var list Errors
			if !errors.As(err, &list) || len(list) == 0 {
				t.Fatalf("error %T is not a non-empty Errors: %v", err, err)
			}
			for _, e := range list {
				if e.Msg == "" || e.Line < 0 {
					t.Fatalf("malformed error %+v", e)
				}
			}
			return
		}
		if err := g.Validate(); err != nil {
			t.Fatalf("Parse accepted what Validate refuses: %v", err)
		}
		_ = g.Summary()
		again, err := Parse([]byte(g.String()), "/elsewhere")
		if err != nil {
			t.Fatalf("String output does not parse: %v\n%s", err, g)
		}
		if again.String() != g.String() {
			t.Fatalf("round trip changed the configuration:\n%s\nthen:\n%s", g, again)
		}
	})
}
