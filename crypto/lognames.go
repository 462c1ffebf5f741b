package crypto

// The names of a gateway's transfer-log keys (docs/audit.md): its log's
// origin, which is also the name of the key that signs its checkpoints,
// and the name of the key with which it cosigns its peers' checkpoints.
// Names are fixed by the gateway id, so that a key configured for one
// peer cannot stand in for another's.

// LogOrigin returns the origin of gateway's transfer log, such as
// "evx.transfer-log/DE".
func LogOrigin(gateway string) string { return "evx.transfer-log/" + gateway }

// WitnessName returns the name of gateway's witness key, such as
// "evx.witness/DE".
func WitnessName(gateway string) string { return "evx.witness/" + gateway }

// LogVerifierKeys returns the verifier keys of the transfer-log keys that
// k derives for gateway: the checkpoint key and the witness key, as peers
// and auditors pin them.
func (k *SigningKey) LogVerifierKeys(gateway string) (checkpoint, witness string) {
	return k.CheckpointVerifierKey(LogOrigin(gateway)), k.WitnessVerifierKey(WitnessName(gateway))
}
