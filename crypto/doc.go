// Package crypto implements evx's sealed evidence bundles: unit keys, the
// signed envelope that gateways route on, and sealing and opening of the
// age-encrypted payload.
//
// A bundle is a zip container with three stored entries: payload.age (an age
// file, encrypted to post-quantum hybrid recipients, whose plaintext is a zip
// of the evidence files and their manifest), envelope.json (the canonical JSON
// envelope) and envelope.sig (the sender's Ed25519 signature over it). The
// format is specified in docs/bundle-format.md.
//
// The package imports no other evx package: gateways, storage and the
// command line all build on it.
package crypto
