package api

import (
	"evx/internal/evxtest"
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the code table of docs/api.md from Codes")

const apiDoc = "../docs/api.md"

// codeTable renders Codes as the markdown table of docs/api.md section 4.
func codeTable() string {
	var b strings.Builder
	b.WriteString("| status | code | meaning |\n|--------|------|---------|\n")
	for _, c := range Codes() {
		fmt.Fprintf(&b, "| %d | `%s` | %s |\n", c.Status, c.Code, c.Meaning)
	}
	return b.String()
}

// docTable returns the first markdown table after the heading of section 4
// in doc, and where it starts and ends.
func docTable(t *testing.T, doc string) (string, int, int) {
	t.Helper()
	sec := strings.Index(doc, "\n## 4. Error codes\n")
	if sec < 0 {
		t.Fatalf("%s has no section \"## 4. Error codes\"", apiDoc)
	}
	table, start, end, ok := evxtest.DocTable(doc, sec, "| status |")
	if !ok {
		t.Fatalf("%s section 4 has no table starting with \"| status |\"", apiDoc)
	}
	return table, start, end
}

// The code table in docs/api.md is the one in Codes, row for row, so that
// the document cannot drift from the codes the gateway sends. Run with
// -update after changing Codes.
func TestDocCodeTable(t *testing.T) {
	data, err := os.ReadFile(apiDoc)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	got, start, end := docTable(t, doc)
	want := codeTable()
	if got == want {
		return
	}
	if *update {
		if err := os.WriteFile(apiDoc, []byte(doc[:start]+want+doc[end:]), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("the code table in %s differs from api.Codes; run go test ./api -update.\ngot:\n%s\nwant:\n%s", apiDoc, got, want)
}

// Every code has a status, a meaning and one row; the table is ordered by
// status, then code.
func TestCodes(t *testing.T) {
	seen := map[Code]bool{}
	list := Codes()
	for i, c := range list {
		if c.Status < 400 || c.Status > 599 || c.Meaning == "" || seen[c.Code] {
			t.Errorf("bad row %+v", c)
		}
		seen[c.Code] = true
		if c.Code.Status() != c.Status {
			t.Errorf("%s.Status() = %d, want %d", c.Code, c.Code.Status(), c.Status)
		}
		if i > 0 {
			p := list[i-1]
			if p.Status > c.Status || p.Status == c.Status && p.Code >= c.Code {
				t.Errorf("%s (%d) is listed after %s (%d)", c.Code, c.Status, p.Code, p.Status)
			}
		}
	}
	if got := Code("no-such-code").Status(); got != 500 {
		t.Errorf("unknown code: status %d, want 500", got)
	}
}
