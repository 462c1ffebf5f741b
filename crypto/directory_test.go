package crypto

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// testDirectoryHead is the start of a directory body, up to its units.
const testDirectoryHead = `{"format":"evx-directory/1","gateway":"FR","issued":"2026-11-27T12:00:00Z","units":[`

// A recipient's purposes survive signing and verifying, in the canonical
// form: the member sorted among the others, the purposes in the issuer's
// order.
func TestDirectoryPurposesRoundTrip(t *testing.T) {
	k, _ := GenerateSigningKey()
	d := Directory{Format: DirectoryFormat, Gateway: "FR", Issued: "2026-11-27T12:00:00Z", Units: []DirectoryEntry{
		{Unit: "FR/forensics", Role: "submitter", SigningKey: "ed25519:x"},
		{Unit: "FR/prosecutor", Role: "recipient", AgeRecipient: "age1pq1x", Purposes: []string{"prosecution", "criminal-investigation"}},
	}}
	s, err := k.SignDirectory(d)
	if err != nil {
		t.Fatal(err)
	}
	want := testDirectoryHead + `{"role":"submitter","signing_key":"ed25519:x","unit":"FR/forensics"},` +
		`{"age_recipient":"age1pq1x","purposes":["prosecution","criminal-investigation"],"role":"recipient","unit":"FR/prosecutor"}]}`
	if string(s.Body) != want {
		t.Errorf("body:\n%s\nwant\n%s", s.Body, want)
	}
	got, err := VerifyDirectory(s, k.Public(), "FR")
	if err != nil {
		t.Fatal(err)
	}
	e, ok := got.Lookup("FR/prosecutor")
	if !ok || !slices.Equal(e.Purposes, []string{"prosecution", "criminal-investigation"}) {
		t.Fatalf("lookup after verify: %+v %v", e, ok)
	}
	if e.Refuses("prosecution") || !e.Refuses("incident-response") {
		t.Errorf("%+v: Refuses(prosecution) = %v, Refuses(incident-response) = %v", e, e.Refuses("prosecution"), e.Refuses("incident-response"))
	}
	if f, _ := got.Lookup("FR/forensics"); f.Purposes != nil || f.Refuses("prosecution") {
		t.Errorf("submitter entry %+v has purposes or refuses one", f)
	}
}

// A directory whose entries have no purposes is signed exactly as before
// the member existed, so verifiers that predate it, which refuse unknown
// members, still read it; and a directory signed by a gateway that
// predates the member still verifies, its recipients refusing no purpose.
func TestDirectoryWithoutPurposes(t *testing.T) {
	k, _ := GenerateSigningKey()
	old := testDirectoryHead + `{"age_recipient":"age1pq1x","role":"recipient","unit":"FR/prosecutor"}]}`
	s, err := k.SignDirectory(Directory{Format: DirectoryFormat, Gateway: "FR", Issued: "2026-11-27T12:00:00Z",
		Units: []DirectoryEntry{{Unit: "FR/prosecutor", Role: "recipient", AgeRecipient: "age1pq1x", Purposes: []string{}}}})
	if err != nil {
		t.Fatal(err)
	}
	if string(s.Body) != old {
		t.Errorf("directory without purposes signed as\n%s\nwant the form before purposes\n%s", s.Body, old)
	}
	// A verifier before purposes: the entry as it was, no unknown member.
	type oldEntry struct {
		Unit         string `json:"unit"`
		Role         string `json:"role"`
		AgeRecipient string `json:"age_recipient,omitempty"`
		SigningKey   string `json:"signing_key,omitempty"`
	}
	var od struct {
		Format, Gateway, Issued string
		Units                   []oldEntry
	}
	dec := json.NewDecoder(bytes.NewReader(s.Body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&od); err != nil {
		t.Errorf("a verifier before purposes refuses the directory: %v", err)
	}

	got, err := VerifyDirectory(signRaw(k, directoryContext, old), k.Public(), "FR")
	if err != nil {
		t.Fatalf("directory of a gateway before purposes: %v", err)
	}
	e, _ := got.Lookup("FR/prosecutor")
	if e.Purposes != nil || e.Refuses("incident-response") {
		t.Errorf("entry without purposes: %+v, refuses incident-response: %v", e, e.Refuses("incident-response"))
	}
}

// A peer's entry may carry a bounded number of purposes of bounded length,
// of the purposes' form, each once, on a recipient only. Purposes unknown
// here pass: the vocabulary may grow at the peer. SignDirectory refuses
// what VerifyDirectory would.
func TestDirectoryPurposesBounds(t *testing.T) {
	k, _ := GenerateSigningKey()
	many := make([]string, MaxDirectoryPurposes+1)
	for i := range many {
		many[i] = fmt.Sprintf("purpose-%d", i)
	}
	long := strings.Repeat("a", MaxPurposeLength+1)
	for _, tt := range []struct {
		name     string
		role     string
		purposes []string
		want     string // "" if accepted
	}{
		{"vocabulary", "recipient", Purposes, ""},
		{"unknown here", "recipient", []string{"prosecution", "future-purpose-2"}, ""},
		{"at the count limit", "recipient", many[:MaxDirectoryPurposes], ""},
		{"at the length limit", "recipient", []string{long[1:]}, ""},
		{"over the count limit", "recipient", many, "unit FR/prosecutor: 33 purposes, over the limit of 32"},
		{"over the length limit", "recipient", []string{"prosecution", long}, "unit FR/prosecutor: purpose of 65 bytes, over the limit of 64"},
		{"empty", "recipient", []string{""}, `unit FR/prosecutor: malformed purpose ""`},
		{"upper case", "recipient", []string{"Prosecution"}, `unit FR/prosecutor: malformed purpose "Prosecution"`},
		{"space", "recipient", []string{"prosecution "}, `unit FR/prosecutor: malformed purpose "prosecution "`},
		{"control", "recipient", []string{"pro\nsecution"}, `unit FR/prosecutor: malformed purpose "pro\nsecution"`},
		{"hyphen at the end", "recipient", []string{"prosecution-"}, `malformed purpose "prosecution-"`},
		{"twice", "recipient", []string{"prosecution", "criminal-investigation", "prosecution"}, `unit FR/prosecutor: purpose "prosecution" listed twice`},
		{"on a submitter", "submitter", []string{"prosecution"}, `unit FR/prosecutor: purposes on a unit with role "submitter": only recipients have them`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := DirectoryEntry{Unit: "FR/prosecutor", Role: tt.role, Purposes: tt.purposes}
			d := Directory{Format: DirectoryFormat, Gateway: "FR", Issued: "2026-11-27T12:00:00Z", Units: []DirectoryEntry{e}}
			entry, err := json.Marshal(e)
			if err != nil {
				t.Fatal(err)
			}
			// Signed as a hostile peer would, past SignDirectory's checks.
			_, verr := VerifyDirectory(signRaw(k, directoryContext, testDirectoryHead+string(entry)+`]}`), k.Public(), "FR")
			_, serr := k.SignDirectory(d)
			if tt.want == "" {
				if verr != nil || serr != nil {
					t.Fatalf("verify: %v; sign: %v", verr, serr)
				}
				return
			}
			if verr == nil || !strings.HasPrefix(verr.Error(), "unit directory of FR: ") || !strings.Contains(verr.Error(), tt.want) {
				t.Errorf("verify: %v, want an error containing %q", verr, tt.want)
			}
			if serr == nil || !strings.HasPrefix(serr.Error(), "unit directory: ") || !strings.Contains(serr.Error(), tt.want) {
				t.Errorf("sign: %v, want an error containing %q", serr, tt.want)
			}
		})
	}
	// An entry whose unit id is malformed is named by its position, not
	// by what the peer put there.
	bad := testDirectoryHead + `{"role":"recipient","unit":"` + strings.Repeat("x", 1000) + `"},{"purposes":[""],"role":"recipient","unit":"` + strings.Repeat("y", 1000) + `"}]}`
	_, err := VerifyDirectory(signRaw(k, directoryContext, bad), k.Public(), "FR")
	if err == nil || err.Error() != `unit directory of FR: entry 1: malformed purpose ""` {
		t.Errorf("entry with a malformed unit id: %v", err)
	}
}
