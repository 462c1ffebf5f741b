package audit

import (
	"evx/internal/evxtest"
	"fmt"
	"os"
	"strings"
	"testing"
)

const auditDoc = "../docs/audit.md"

// eventTable renders the event table as docs/audit.md shows it.
func eventTable() string {
	var b strings.Builder
	b.WriteString("| event | outcome | direction | actor | requires | allows | records |\n")
	b.WriteString("|-------|---------|-----------|-------|----------|--------|---------|\n")
	for _, s := range events {
		dir, outcome := string(s.direction), string(s.outcome)
		if dir == "" {
			dir = "—"
		}
		if s.event == EventAgreementDecision {
			outcome, dir = "accepted (`code` `allowed`) or refused", "inbound (actor `peer:<peer>`) or outbound"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s | %s | %s |\n", s.event, outcome, dir,
			"`"+strings.ReplaceAll(s.actor.String(), " or ", "` or `")+"`", memberList(s.required), memberList(s.optional), s.doc)
	}
	return b.String()
}

// kindTable renders the security kinds as docs/audit.md shows them.
func kindTable() string {
	var b strings.Builder
	b.WriteString("| kind | requires | records |\n|------|----------|---------|\n")
	for _, k := range securityKinds {
		fmt.Fprintf(&b, "| `%s` | %s | %s |\n", k.kind, memberList(k.required), k.doc)
	}
	return b.String()
}

// memberList writes the members of m, the bundle members as "*bundle*".
func memberList(m member) string {
	var parts []string
	if m&mBundle == mBundle {
		parts = append(parts, "*bundle*")
		m &^= mBundle
	}
	for _, n := range m.names() {
		parts = append(parts, "`"+n+"`")
	}
	if len(parts) == 0 {
		return "—"
	}
	return strings.Join(parts, ", ")
}

// docTable returns the markdown table of doc whose first line starts with
// head, and where it starts and ends.
func docTable(t *testing.T, doc, head string) (string, int, int) {
	t.Helper()
	table, start, end, ok := evxtest.DocTable(doc, 0, head)
	if !ok {
		t.Fatalf("%s has no table starting with %q", auditDoc, head)
	}
	return table, start, end
}

// The tables of events and security kinds in docs/audit.md are the ones in
// the code, row for row, so that the document cannot drift from what the
// gateway logs. Run with -update-entries after changing a table.
func TestDocEventTables(t *testing.T) {
	data, err := os.ReadFile(auditDoc)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	for _, tt := range []struct{ head, want string }{
		{"| event | outcome |", eventTable()},
		{"| kind | requires |", kindTable()},
	} {
		got, start, end := docTable(t, doc, tt.head)
		if got == tt.want {
			continue
		}
		if *updateEntryVectors {
			doc = doc[:start] + tt.want + doc[end:]
			if err := os.WriteFile(auditDoc, []byte(doc), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		t.Errorf("a table in %s differs from the code; run go test ./audit -run TestDocEventTables -update-entries.\ngot:\n%s\nwant:\n%s", auditDoc, got, tt.want)
	}
}
