package storage

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/lifecycle"
)

// The lifecycle backstop. The gateway removes every version of an expired
// object itself ([Locker.Purge]); these rules only catch what it misses:
// the data of a plain Delete or Replace, which a versioned bucket keeps as
// a noncurrent version, and the parts of a multipart upload that a crash
// left behind. The server never removes a version under retention or
// legal hold (AWS S3 documents it; MinIO's scanner checks both before it
// applies a rule), so the rules cannot remove evidence early.
const (
	// LifecycleRuleNoncurrent is the ID of the rule that expires a
	// version S3Config.NoncurrentExpiryDays after it becomes noncurrent.
	LifecycleRuleNoncurrent = "evx-noncurrent-expiry"
	// LifecycleRuleAbort is the ID of the rule that aborts a multipart
	// upload AbortMultipartDays after it started.
	LifecycleRuleAbort = "evx-abort-multipart"
	// DefaultNoncurrentExpiryDays is S3Config.NoncurrentExpiryDays unless
	// set: S3 counts whole days, so a day is the shortest.
	DefaultNoncurrentExpiryDays = 1
	// AbortMultipartDays is how long an upload may stay incomplete before
	// the rule aborts it: longer than any upload that the backend's
	// limits let progress.
	AbortMultipartDays = 1

	maxNoncurrentExpiryDays = 36500 // 100 years, as MaxRetention
)

// ErrLifecycleUnsupported is wrapped by the error of EnsureBucket when the
// storage server does not support the lifecycle backstop, in whole (it
// answers 501 Not Implemented to lifecycle requests) or in part (it
// refuses the rule LifecycleRuleAbort, as MinIO does, but installs
// LifecycleRuleNoncurrent). The bucket is ready and its Object Lock
// checked: the gateway works without the backstop, and a caller should
// warn rather than stop.
var ErrLifecycleUnsupported = errors.New("the storage server does not support the lifecycle backstop")

// lifecycleRules returns the rules of the backstop, each for the whole
// bucket. withAbort false leaves out LifecycleRuleAbort.
func (s *S3) lifecycleRules(withAbort bool) []lifecycle.Rule {
	rules := []lifecycle.Rule{{
		ID:     LifecycleRuleNoncurrent,
		Status: "Enabled",
		NoncurrentVersionExpiration: lifecycle.NoncurrentVersionExpiration{
			NoncurrentDays: lifecycle.ExpirationDays(s.noncurrentDays),
		},
	}}
	if withAbort {
		rules = append(rules, lifecycle.Rule{
			ID:     LifecycleRuleAbort,
			Status: "Enabled",
			AbortIncompleteMultipartUpload: lifecycle.AbortIncompleteMultipartUpload{
				DaysAfterInitiation: AbortMultipartDays,
			},
		})
	}
	return rules
}

// ensureLifecycle installs the backstop's rules in the bucket's lifecycle
// configuration, replacing rules with the same IDs and keeping the others
// in place, and writes nothing if the rules are there already as they
// should be. S3 has no conditional write of a lifecycle configuration: an
// operator's change made between the read and the write is lost, which
// only matters when a rule of ours is missing or changed.
func (s *S3) ensureLifecycle(ctx context.Context) error {
	raw, err := s.readLifecycle(ctx)
	cur := lifecycle.NewConfiguration()
	switch {
	case err == nil:
		if err := xml.Unmarshal(raw, cur); err != nil {
			return fmt.Errorf("s3 storage: reading the lifecycle rules of bucket %q: %w", s.bucket, err)
		}
	case minio.ToErrorResponse(err).Code == "NoSuchLifecycleConfiguration":
	default:
		return s.lifecycleError(ctx, "reading", err)
	}
	want := mergeRules(cur.Rules, s.lifecycleRules(true))
	if sameRules(cur.Rules, want) {
		return nil
	}
	// The configuration is written whole, from minio-go's reading of it:
	// a rule that it cannot represent would be changed.
	if id, what, ok := unwritableRule(raw); !ok {
		return fmt.Errorf("s3 storage: bucket %q: the lifecycle rules are not installed: the rule %q has %s, "+
			"which would be lost in rewriting the configuration; add the rules %q (noncurrent versions expire after %d days) "+
			"and %q (incomplete multipart uploads aborted after %d day) to it by hand",
			s.bucket, id, what, LifecycleRuleNoncurrent, s.noncurrentDays, LifecycleRuleAbort, AbortMultipartDays)
	}
	err = s.client.SetBucketLifecycle(ctx, s.bucket, &lifecycle.Configuration{Rules: want})
	if err == nil {
		return nil
	}
	if ctx.Err() != nil || minio.ToErrorResponse(err).StatusCode != http.StatusBadRequest {
		return s.lifecycleError(ctx, "installing", err)
	}
	// A server that implements lifecycle rules but not the abort action
	// refuses the configuration as malformed (MinIO: it removes stale
	// uploads by itself, after a day by default). If it takes the
	// configuration without that rule, that rule was the reason.
	partial := mergeRules(cur.Rules, s.lifecycleRules(false))
	if !sameRules(cur.Rules, partial) {
		if perr := s.client.SetBucketLifecycle(ctx, s.bucket, &lifecycle.Configuration{Rules: partial}); perr != nil {
			return fmt.Errorf("s3 storage: installing the lifecycle rules of bucket %q: %w (and without the rule %q: %w)",
				s.bucket, s3Failure(err), LifecycleRuleAbort, s3Failure(perr))
		}
	}
	return fmt.Errorf("s3 storage: bucket %q: %w: the server refused the rule %q that aborts incomplete multipart uploads (%w); the rule %q is installed",
		s.bucket, ErrLifecycleUnsupported, LifecycleRuleAbort, err, LifecycleRuleNoncurrent)
}

// lifecycleError maps the error of a lifecycle request to the bucket.
func (s *S3) lifecycleError(ctx context.Context, op string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("s3 storage: %s the lifecycle rules of bucket %q: %w", op, s.bucket, ctx.Err())
	}
	resp := minio.ToErrorResponse(err)
	if resp.StatusCode == http.StatusNotImplemented || resp.Code == "NotImplemented" {
		return fmt.Errorf("s3 storage: bucket %q: %w: %w", s.bucket, ErrLifecycleUnsupported, err)
	}
	return fmt.Errorf("s3 storage: %s the lifecycle rules of bucket %q: %w", op, s.bucket, s3Failure(err))
}

// mergeRules returns have with each rule of ours in place of the rule
// with its ID, or appended if there is none; a second rule with one of
// our IDs, which S3 does not allow, is dropped. The other rules stay as
// they are, in their order.
func mergeRules(have, ours []lifecycle.Rule) []lifecycle.Rule {
	out := make([]lifecycle.Rule, 0, len(have)+len(ours))
	placed := make([]bool, len(ours))
	for _, r := range have {
		i := ruleIndex(ours, r.ID)
		switch {
		case i < 0:
			out = append(out, r)
		case !placed[i]:
			out = append(out, ours[i])
			placed[i] = true
		}
	}
	for i, r := range ours {
		if !placed[i] {
			out = append(out, r)
		}
	}
	return out
}

func ruleIndex(rules []lifecycle.Rule, id string) int {
	for i, r := range rules {
		if r.ID == id {
			return i
		}
	}
	return -1
}

// sameRules reports whether a and b are the same rules in the same order,
// comparing their XML as minio-go writes it: a rule read back from the
// server then equals the rule that was sent.
func sameRules(a, b []lifecycle.Rule) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, err := xml.Marshal(a[i])
		if err != nil {
			return false
		}
		y, err := xml.Marshal(b[i])
		if err != nil || !bytes.Equal(x, y) {
			return false
		}
	}
	return true
}

// maxLifecycleXML bounds the lifecycle configuration read from the
// server. S3 allows 1,000 rules; an operator's are a few hundred bytes
// each.
const maxLifecycleXML = 4 << 20

// readLifecycle returns the bucket's lifecycle configuration as the server
// sends it, read up to maxLifecycleXML, or the server's error as a
// minio.ErrorResponse. minio-go's GetBucketLifecycle gives neither the
// document, which ensureLifecycle needs in order to find rules that
// minio-go would change, nor a bound on its size. The request is signed
// by minio-go as a presigned URL.
func (s *S3) readLifecycle(ctx context.Context) ([]byte, error) {
	u, err := s.client.Presign(ctx, http.MethodGet, s.bucket, "", time.Minute, url.Values{"lifecycle": {""}})
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxLifecycleXML+1))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		er := minio.ErrorResponse{StatusCode: resp.StatusCode, Server: resp.Header.Get("Server")}
		if xml.Unmarshal(body, &er) != nil || er.Code == "" {
			er.Code, er.Message = resp.Status, http.StatusText(resp.StatusCode)
		}
		return nil, er
	}
	if len(body) > maxLifecycleXML {
		return nil, fmt.Errorf("the lifecycle configuration is longer than %d bytes", maxLifecycleXML)
	}
	return body, nil
}

// rawRule is a lifecycle rule as sent, with what minio-go's
// lifecycle.Rule cannot hold: S3 allows several transitions in a rule,
// where lifecycle.Rule keeps one, and elements it does not know, which it
// drops. The other fields are the ones lifecycle.Rule knows, so that they
// do not count as unknown.
type rawRule struct {
	ID                    string     `xml:"ID"`
	Transitions           []struct{} `xml:"Transition"`
	NoncurrentTransitions []struct{} `xml:"NoncurrentVersionTransition"`
	Status                []struct{} `xml:"Status"`
	Filter                []struct{} `xml:"Filter"`
	Prefix                []struct{} `xml:"Prefix"`
	Expiration            []struct{} `xml:"Expiration"`
	NoncurrentExpiration  []struct{} `xml:"NoncurrentVersionExpiration"`
	Abort                 []struct{} `xml:"AbortIncompleteMultipartUpload"`
	DelMarker             []struct{} `xml:"DelMarkerExpiration"`
	AllVersions           []struct{} `xml:"AllVersionsExpiration"`
	Compression           []struct{} `xml:"Compression"`
	NoncurrentCompression []struct{} `xml:"NoncurrentVersionCompression"`
	Other                 []struct {
		XMLName xml.Name
	} `xml:",any"`
}

// unwritableRule finds, in a lifecycle configuration as sent by the
// server, a rule other than the backstop's that minio-go's types would
// change if written back, and says what of it. ok is true if there is
// none, or no configuration.
func unwritableRule(raw []byte) (id, what string, ok bool) {
	if len(raw) == 0 {
		return "", "", true
	}
	var doc struct {
		Rules []rawRule `xml:"Rule"`
	}
	if err := xml.Unmarshal(raw, &doc); err != nil {
		return "", fmt.Sprintf("a configuration that cannot be parsed (%v)", err), false
	}
	for _, r := range doc.Rules {
		switch {
		case r.ID == LifecycleRuleNoncurrent || r.ID == LifecycleRuleAbort:
		case len(r.Transitions) > 1:
			return r.ID, fmt.Sprintf("%d transitions", len(r.Transitions)), false
		case len(r.NoncurrentTransitions) > 1:
			return r.ID, fmt.Sprintf("%d noncurrent version transitions", len(r.NoncurrentTransitions)), false
		case len(r.Other) > 0:
			return r.ID, fmt.Sprintf("an element %q", r.Other[0].XMLName.Local), false
		}
	}
	return "", "", true
}
