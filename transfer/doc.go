// Package transfer implements protocol v1 between evx gateways: QUIC with
// mutual TLS 1.3, each peer pinned to its own country's CA and to its
// identity (a URI SAN evx://gateway/<ID>), carrying bundle offers, payloads,
// signed receipts and unit directories, the transfer logs' witnessing and
// inclusion proofs, and signed summaries of the gateways' agreements. The
// protocol is specified in docs/protocol.md.
//
// transfer decides nothing about bundles itself: a [Receiver] supplied by
// the gateway checks each offer against its policy and stores what it
// accepts. transfer guarantees the receiver that the peer is authenticated,
// that frames are within limits, and that a payload reader returns io.EOF
// only after exactly the declared number of bytes whose SHA-256 matches the
// signed envelope.
package transfer
