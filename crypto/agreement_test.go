package crypto

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// A summary's body is the agreement package's: to crypto it is bytes.
const testSummaryBody = `{"agreement":null,"format":"evx-agreement-summary/1","gateway":"DE","issued":"2026-12-03T16:52:50Z","peer":"FR","sequence":7}`

func TestAgreementSummarySignVerify(t *testing.T) {
	k, err := GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	other, err := GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	s, err := k.SignAgreementSummary([]byte(testSummaryBody))
	if err != nil {
		t.Fatal(err)
	}
	body, err := VerifyAgreementSummary(s, k.Public())
	if err != nil {
		t.Fatal(err)
	}
	if string(body) != testSummaryBody {
		t.Errorf("verified body %s", body)
	}
	// The largest body there may be.
	largest := bytes.Repeat([]byte{'x'}, MaxAgreementSummarySize)
	ls, err := k.SignAgreementSummary(largest)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyAgreementSummary(ls, k.Public()); err != nil {
		t.Fatal(err)
	}

	tampered := *s
	tampered.Body = bytes.Replace(s.Body, []byte(`"FR"`), []byte(`"IT"`), 1)
	short := *s
	short.Signature = s.Signature[:63]
	for _, tt := range []struct {
		name   string
		s      *Signed
		signer string
		want   string
	}{
		{"another signer", s, other.Public(), "agreement summary: signature does not verify under " + other.Public()},
		{"a changed body", &tampered, k.Public(), "agreement summary: signature does not verify"},
		{"a short signature", &short, k.Public(), "agreement summary: signature of 63 bytes, want 64"},
		{"no summary", nil, k.Public(), "agreement summary: missing"},
		{"an empty body", &Signed{Signature: s.Signature}, k.Public(), "agreement summary: body of 0 bytes"},
		{"a body over the limit", &Signed{Body: append(largest, 'x'), Signature: ls.Signature}, k.Public(), "agreement summary: body of 32769 bytes, want 1 to 32768"},
		{"a malformed key", s, "ed25519:xyz", "agreement summary: "},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := VerifyAgreementSummary(tt.s, tt.signer)
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("body %q, err = %v, want %q", got, err, tt.want)
			}
		})
	}
	if _, err := VerifyAgreementSummary(s, other.Public()); !errors.Is(err, ErrBadSignature) {
		t.Errorf("err = %v, want ErrBadSignature", err)
	}

	for _, n := range []int{0, MaxAgreementSummarySize + 1} {
		if _, err := k.SignAgreementSummary(make([]byte, n)); err == nil {
			t.Errorf("signed a body of %d bytes", n)
		}
	}
}

// TestAgreementSummaryContext checks that a signature over the same bytes
// as another kind of document is not an agreement summary's, nor the other
// way round.
func TestAgreementSummaryContext(t *testing.T) {
	k, err := GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	for _, context := range []string{receiptContext, directoryContext, "evx-envelope-signature/v1\n", ""} {
		if _, err := VerifyAgreementSummary(signRaw(k, context, testSummaryBody), k.Public()); !errors.Is(err, ErrBadSignature) {
			t.Errorf("a signature under context %q verified as an agreement summary's: %v", context, err)
		}
	}
	s, err := k.SignAgreementSummary([]byte(testSummaryBody))
	if err != nil {
		t.Fatal(err)
	}
	if s2 := signRaw(k, agreementContext, testSummaryBody); !bytes.Equal(s2.Signature, s.Signature) {
		t.Errorf("the signature is not over %q and the body", agreementContext)
	}
	dir := `{"format":"evx-directory/1","gateway":"DE","issued":"2026-12-03T16:52:50Z","units":[]}`
	sd, err := k.SignAgreementSummary([]byte(dir))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyDirectory(sd, k.Public(), "DE"); !errors.Is(err, ErrBadSignature) {
		t.Errorf("an agreement summary's signature verified as a directory's: %v", err)
	}
}
