// Package gateway is the evx gateway daemon: one country's point of contact.
// It composes the other packages: it takes sealed bundles from local
// submitters over an HTTPS API with client certificates, keeps them in its
// storage backend, delivers them to peer gateways with package transfer,
// receives theirs, and serves them to local recipients.
//
// A gateway only ever sees envelopes and ciphertext: sealing and opening
// happen on the units' own machines. The storage backend is the single
// source of truth; what the gateway holds in memory (unit directories of
// peers, the delivery queue) is rebuilt from storage and peers at start.
package gateway
