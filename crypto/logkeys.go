package crypto

import (
	gocrypto "crypto"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"

	"filippo.io/torchwood"
	"golang.org/x/mod/sumdb/note"
)

// The transfer log (docs/audit.md) needs two more Ed25519 keys beside the
// gateway signing key: one signs the log's checkpoints, one cosigns the
// checkpoints of peers' logs as their witness. They are derived from the
// signing key's seed rather than kept in files of their own, so that a
// gateway has one secret to protect and back up, and the log's keys change
// exactly when the signing key does. Each derived key makes one kind of
// signature only: a checkpoint signature can never pass as a cosignature,
// a receipt or a directory, and the other way round.
//
// Derivation: HKDF-SHA256 (RFC 5869) with the 32-byte Ed25519 seed of the
// signing key as input key material, an empty salt, the label as info and
// 32 bytes of output, which are the derived key's Ed25519 seed.
const (
	checkpointKeyLabel = "evx transfer log checkpoint key v1"
	witnessKeyLabel    = "evx transfer log witness key v1"
)

// Signature algorithm identifiers of c2sp.org/signed-note, the first byte
// of a key in its text forms.
const (
	noteAlgEd25519     = 0x01 // Ed25519 over the note text (checkpoints)
	noteAlgCosignature = 0x04 // c2sp.org/tlog-cosignature, timestamped
)

// deriveKey returns the Ed25519 key derived from k for label.
func (k *SigningKey) deriveKey(label string) ed25519.PrivateKey {
	seed, err := hkdf.Key(sha256.New, k.key.Seed(), nil, label, ed25519.SeedSize)
	if err != nil {
		// HKDF-SHA256 fails only for outputs over 8,160 bytes.
		panic("crypto: deriving a log key: " + err.Error())
	}
	return ed25519.NewKeyFromSeed(seed)
}

// CheckpointSigner returns the signer of the transfer log's checkpoints,
// a signed-note Ed25519 signer named origin (the checkpoint's first line,
// such as "evx.transfer-log/DE"). Its key is derived from k.
func (k *SigningKey) CheckpointSigner(origin string) (note.Signer, error) {
	s, _, err := k.checkpointKey(origin)
	return s, err
}

// CheckpointVerifierKey returns the signed-note verifier key of the
// checkpoints CheckpointSigner(origin) signs: "<origin>+<key hash, 8 hex
// digits>+<base64 of 0x01 and the 32-byte Ed25519 public key>", which
// note.NewVerifier parses. Peers and auditors pin it. It returns "" if
// origin is not a valid key name (CheckpointSigner says why).
func (k *SigningKey) CheckpointVerifierKey(origin string) string {
	_, vkey, err := k.checkpointKey(origin)
	if err != nil {
		return ""
	}
	return vkey
}

func (k *SigningKey) checkpointKey(origin string) (note.Signer, string, error) {
	key := k.deriveKey(checkpointKeyLabel)
	// NewEd25519VerifierKey does not check the name: NewSigner does.
	vkey, err := note.NewEd25519VerifierKey(origin, key.Public().(ed25519.PublicKey))
	if err != nil {
		return nil, "", fmt.Errorf("checkpoint key for origin %q: %v", origin, err)
	}
	// vkey is "<name>+<hash>+<key>"; the signer key text shares name and
	// hash and carries the seed instead of the public key.
	name, hash := splitVerifierKey(vkey)
	skey := "PRIVATE+KEY+" + name + "+" + hash + "+" +
		base64.StdEncoding.EncodeToString(append([]byte{noteAlgEd25519}, key.Seed()...))
	s, err := note.NewSigner(skey)
	if err != nil || s.Name() != origin {
		return nil, "", fmt.Errorf("checkpoint key for origin %q: invalid key name (it must be non-empty, without spaces or '+')", origin)
	}
	return s, vkey, nil
}

// WitnessSigner returns the signer of the cosignatures this gateway makes
// as a witness of its peers' logs, in the c2sp.org/tlog-cosignature format
// (timestamped), named name (such as "evx.witness/DE"). Its key is
// derived from k.
func (k *SigningKey) WitnessSigner(name string) (*torchwood.CosignatureSigner, error) {
	s, err := torchwood.NewCosignatureSigner(name, k.deriveKey(witnessKeyLabel))
	if err != nil {
		return nil, fmt.Errorf("witness key named %q: %v", name, err)
	}
	return s, nil
}

// WitnessVerifierKey returns the verifier key of the cosignatures
// WitnessSigner(name) makes: "<name>+<key hash, 8 hex digits>+<base64 of
// 0x04 and the 32-byte Ed25519 public key>", the tlog-cosignature form,
// which [ParseWitnessVerifierKey] parses (note.NewVerifier knows only
// algorithm 0x01 and refuses it). It returns "" if name is not a valid key
// name (WitnessSigner says why).
func (k *SigningKey) WitnessVerifierKey(name string) string {
	s, err := k.WitnessSigner(name)
	if err != nil {
		return ""
	}
	return s.Verifier().String()
}

// ParseWitnessVerifierKey parses a witness's verifier key as
// [SigningKey.WitnessVerifierKey] writes it and returns the verifier of
// its cosignatures. The key hash must be the one the name and key imply.
func ParseWitnessVerifierKey(vkey string) (*torchwood.CosignatureVerifier, error) {
	// Base64 may contain '+', names and hashes may not.
	parts := strings.SplitN(vkey, "+", 3)
	if len(parts) != 3 || parts[0] == "" || len(parts[1]) != 8 {
		return nil, fmt.Errorf("malformed witness key %q (want name+hash+key)", vkey)
	}
	name, key64 := parts[0], parts[2]
	key, err := base64.StdEncoding.Strict().DecodeString(key64)
	switch {
	case err != nil || base64.StdEncoding.EncodeToString(key) != key64:
		return nil, fmt.Errorf("malformed witness key %q: invalid base64", vkey)
	case len(key) != 1+ed25519.PublicKeySize:
		return nil, fmt.Errorf("malformed witness key %q: %d key bytes, want %d", vkey, len(key), 1+ed25519.PublicKeySize)
	case key[0] != noteAlgCosignature:
		return nil, fmt.Errorf("witness key %q has algorithm %d, want %d (tlog-cosignature)", vkey, key[0], noteAlgCosignature)
	}
	// torchwood makes a verifier only from a signer: one that holds the
	// public key and refuses to sign serves.
	s, err := torchwood.NewCosignatureSigner(name, publicOnly(key[1:]))
	if err != nil {
		return nil, fmt.Errorf("malformed witness key %q: %v", vkey, err)
	}
	v := s.Verifier()
	if v.String() != vkey {
		return nil, fmt.Errorf("witness key %q: key hash does not match the name and key", vkey)
	}
	return v, nil
}

// splitVerifierKey returns the name and key hash fields of a signed-note
// verifier key "<name>+<hash>+<key>"; names contain no '+'.
func splitVerifierKey(vkey string) (name, hash string) {
	name, rest, _ := strings.Cut(vkey, "+")
	hash, _, _ = strings.Cut(rest, "+")
	return name, hash
}

// publicOnly is an Ed25519 public key posing as a crypto.Signer that
// never signs.
type publicOnly ed25519.PublicKey

func (p publicOnly) Public() gocrypto.PublicKey { return ed25519.PublicKey(p) }

func (publicOnly) Sign(io.Reader, []byte, gocrypto.SignerOpts) ([]byte, error) {
	return nil, errors.New("a verifier key cannot sign")
}
