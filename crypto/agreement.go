package crypto

import (
	"crypto/ed25519"
	"errors"
	"fmt"
)

// agreementContext is the signature context of an agreement summary, which
// a gateway sends each peer to state its agreement with it
// (docs/protocol.md section 7.4).
const agreementContext = "evx-agreement-signature/v1\n"

// MaxAgreementSummarySize bounds an agreement summary's body: the bounds
// of its members keep the largest under 32 KiB.
const MaxAgreementSummarySize = 32 << 10

// SignAgreementSummary signs body, a summary of this gateway's agreement
// with a peer, as package agreement writes it. crypto does not read it:
// the summary's meaning, and its checks, are the agreement package's.
func (k *SigningKey) SignAgreementSummary(body []byte) (*Signed, error) {
	if err := checkAgreementSummarySize(len(body)); err != nil {
		return nil, err
	}
	sig := ed25519.Sign(k.key, append([]byte(agreementContext), body...))
	return &Signed{Body: body, Signature: sig}, nil
}

// VerifyAgreementSummary checks s against the issuing gateway's signing key
// and returns its body, for package agreement to parse: whom it names and
// what it states are checked there. The body is s's own, not a copy.
func VerifyAgreementSummary(s *Signed, signer string) ([]byte, error) {
	const what = "agreement summary"
	if s == nil {
		return nil, errors.New(what + ": missing")
	}
	if err := checkAgreementSummarySize(len(s.Body)); err != nil {
		return nil, err
	}
	pk, err := ParseSigningKey(signer)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", what, err)
	}
	if len(s.Signature) != ed25519.SignatureSize || !ed25519.Verify(pk, append([]byte(agreementContext), s.Body...), s.Signature) {
		return nil, &docSignatureError{what: what, signer: signer, size: len(s.Signature)}
	}
	return s.Body, nil
}

func checkAgreementSummarySize(n int) error {
	if n == 0 || n > MaxAgreementSummarySize {
		return fmt.Errorf("agreement summary: body of %d bytes, want 1 to %d", n, MaxAgreementSummarySize)
	}
	return nil
}
