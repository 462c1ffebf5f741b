package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"testing"
)

func FuzzParseEntry(f *testing.F) {
	var vectors entryVectors
	if data, err := os.ReadFile(entryVectorsFile); err == nil {
		if err := json.Unmarshal(data, &vectors); err != nil {
			f.Fatal(err)
		}
	}
	if len(vectors.Valid) == 0 {
		f.Fatal("no seeds for the fuzz corpus: " + entryVectorsFile + " is missing or empty")
	}
	for _, v := range vectors.Valid {
		f.Add([]byte(v.Entry))
	}
	for _, v := range vectors.Invalid {
		f.Add([]byte(v.Entry))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := ParseEntry(data)
		if err != nil {
			if e != nil {
				t.Errorf("ParseEntry returned an entry and the error %v", err)
			}
			return
		}
		// Only the canonical form is accepted: the entry re-encodes to
		// exactly its bytes, which are canonical by the generic
		// definition too.
		again, err := e.MarshalCanonical()
		if err != nil {
			t.Fatalf("a parsed entry does not marshal: %v", err)
		}
		if !bytes.Equal(again, data) {
			t.Fatalf("a parsed entry re-encodes to other bytes:\n%q\n%q", data, again)
		}
		if !bytes.Equal(genericCanonical(t, data), data) {
			t.Fatalf("an accepted entry is not canonical: %q", data)
		}
		if len(data) > maxEntryJSON || e.Outcome() == "" {
			t.Fatalf("accepted entry of %d bytes, outcome %q", len(data), e.Outcome())
		}
		if sensitive(e.Reason) != "" {
			t.Fatalf("accepted reason %q", e.Reason)
		}
		if len(e.Changes) > MaxChanges {
			t.Fatalf("accepted %d lines of changes", len(e.Changes))
		}
		for _, l := range e.Changes {
			if l == "" || len(l) > MaxReasonLength || sensitive(l) != "" {
				t.Fatalf("accepted a line of changes %q", l)
			}
		}
		// Each event is of the one format that holds it, and only format
		// 3 has the members of retention.
		if e.Format != formatOf(e.Event) {
			t.Fatalf("accepted event %s in format %s", e.Event, e.Format)
		}
		if (!e.RetainUntil.IsZero() || e.Reference != "") && e.Format != EntryFormat3 {
			t.Fatalf("accepted retain_until or reference in format %s", e.Format)
		}
		if len(e.Reference) > MaxReferenceLength || sensitive(e.Reference) != "" {
			t.Fatalf("accepted a reference %q", e.Reference)
		}
		if y := e.RetainUntil.Year(); !e.RetainUntil.IsZero() && (y < 2000 || y > 9999) {
			t.Fatalf("accepted retain_until %v", e.RetainUntil)
		}
		// An entry that parses is no newer entry.
		if _, err := ParseEntry(data); errors.Is(err, ErrUnknownEvent) || errors.Is(err, ErrUnsupportedFormat) {
			t.Fatal(err)
		}
	})
}
