package storage

import "time"

// NewS3WithWait is NewS3 with wait, instead of the default, as the bound
// on every wait for the server once connected (and the TLS handshake), so
// that tests of servers that never answer end quickly.
func NewS3WithWait(cfg S3Config, wait time.Duration) (*S3, error) {
	lim := defaultS3Limits
	lim.handshake = wait
	lim.wait = wait
	return newS3(cfg, lim)
}

// S3Attempts is how many times the S3 backend sends a request that fails.
var S3Attempts = defaultS3Limits.attempts
