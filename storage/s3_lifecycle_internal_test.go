package storage

import (
	"encoding/xml"
	"testing"

	"github.com/minio/minio-go/v7/pkg/lifecycle"
)

// The backstop's rules read back from a server that keeps them as sent,
// beside an operator's rules, need no write; any change to them does.
// (MinIO refuses the abort rule, so its tests never have it in place.)
func TestLifecycleRulesInPlace(t *testing.T) {
	s := &S3{noncurrentDays: 2}
	ops := lifecycle.Rule{ID: "ops", Status: "Enabled", RuleFilter: lifecycle.Filter{Prefix: "logs/"}, Expiration: lifecycle.Expiration{Days: 30}}
	stored := append([]lifecycle.Rule{ops}, s.lifecycleRules(true)...)
	// As GetBucketLifecycle reads them back.
	b, err := xml.Marshal(lifecycle.Configuration{Rules: stored})
	if err != nil {
		t.Fatal(err)
	}
	read := lifecycle.NewConfiguration()
	if err := xml.Unmarshal(b, read); err != nil {
		t.Fatal(err)
	}
	if want := mergeRules(read.Rules, s.lifecycleRules(true)); !sameRules(read.Rules, want) {
		t.Errorf("rules in place need a write:\n%s", b)
	}
	if want := mergeRules(read.Rules, s.lifecycleRules(false)); !sameRules(read.Rules, want) {
		t.Errorf("rules in place need a write without the abort rule")
	}

	for name, change := range map[string]func(r *lifecycle.Rule){
		"disabled": func(r *lifecycle.Rule) { r.Status = "Disabled" },
		"days":     func(r *lifecycle.Rule) { r.AbortIncompleteMultipartUpload.DaysAfterInitiation = 7 },
		"filter":   func(r *lifecycle.Rule) { r.RuleFilter.Prefix = "x/" },
	} {
		changed := append([]lifecycle.Rule(nil), read.Rules...)
		change(&changed[2])
		merged := mergeRules(changed, s.lifecycleRules(true))
		if sameRules(changed, merged) {
			t.Errorf("%s: a changed abort rule needs no write", name)
		}
		if !sameRules(merged, read.Rules) {
			t.Errorf("%s: the merged rules are not the rules as they should be", name)
		}
	}

	// A second rule with one of our IDs is dropped; the operator's stay.
	dup := append(append([]lifecycle.Rule(nil), read.Rules...), read.Rules[1])
	if got := mergeRules(dup, s.lifecycleRules(true)); !sameRules(got, read.Rules) {
		t.Errorf("a duplicate backstop rule is kept: %d rules", len(got))
	}
}
