// Package audit keeps a gateway's transfer log: an append-only,
// tamper-evident record of every event that changes or reveals something,
// which peers witness and auditors verify without seeing any evidence.
//
// The log is a Merkle tree in the style of Certificate Transparency and the
// Go checksum database (RFC 6962 hashing, golang.org/x/mod/sumdb/tlog). Its
// state is published as signed checkpoints (c2sp.org/tlog-checkpoint) and
// its contents as tiles and entry bundles (c2sp.org/tlog-tiles), all kept
// in the gateway's storage backend, so that anyone holding the checkpoint
// verifier key can check the whole log, or one entry with an inclusion
// proof (c2sp.org/tlog-proof), offline. Peers cosign checkpoints
// (c2sp.org/tlog-cosignature) after checking that they extend the ones
// they saw before, so that the gateway cannot show two histories.
//
// An entry is opaque bytes to this part of the package: 1 to 65,535 bytes,
// as an entry bundle can hold.
//
// # Invariants
//
//   - Durable before acknowledged: [Log.Append] returns nil only once its
//     entry is stored in a batch object that no later write changes; a
//     crash at any point after that loses no acknowledged entry.
//   - One history: batch objects are created once, each at the index just
//     after the previous one, so two processes appending to one bucket
//     claim disjoint ranges of one sequence, and every checkpoint either
//     writes is of a prefix of that sequence. The latest checkpoint is
//     replaced only with a compare-and-swap, and only by a larger one.
//   - Checkpoints follow their data: the tiles of a tree are stored before
//     the checkpoint that covers them, and a checkpoint is added to the
//     history before it becomes the latest, so every published checkpoint
//     can be proved from storage.
//   - Deterministic output: tiles, bundles and checkpoints (Ed25519, no
//     timestamp) are functions of the entries, so two writers that race
//     write identical bytes, and a difference means a fork or tampering.
//   - Bounded memory: the log keeps only the right edge of the tree; older
//     hashes are read back from tiles, through a small cache.
//
// # Storage layout
//
// Under the prefix "log/": "checkpoint" (the latest signed checkpoint,
// written only with a compare-and-swap), "checkpoints/<size>" (every
// checkpoint ever published), "batch/<first index>" (staged entries),
// "tile/..." (hash tiles and entry bundles, at their tlog-tiles paths) and
// "cosignatures/<size>/<witness name>". Sizes and indexes are 20 decimal
// digits. Everything but "checkpoint" is created once and never changed.
//
// # What verification proves
//
// [Verify] recomputes the tree from the entries and checks it against a
// checkpoint signed by the pinned log key, cosigned by the pinned
// witnesses, and consistent with the checkpoint the verifier saved last
// time. A verifier that never saved a checkpoint and trusts no witness
// cannot tell a fork from the real history; nobody can tell that an event
// the gateway never acknowledged is missing.
package audit
