package gateway

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"evx/transfer"

	"go.uber.org/zap"
)

// A peer whose certificate this gateway refuses in the TLS handshake (a
// transfer.HandshakeError) cannot be reached until an operator changes a
// configuration or a certificate, here or at the peer: it is reported as
// such, never as a peer that is down for now.

// peerRefusal returns the explanation of err if it is a handshake refused
// because of peer's certificate.
func peerRefusal(peer string, err error) (string, bool) {
	var he *transfer.HandshakeError
	if !errors.As(err, &he) {
		return "", false
	}
	var what string
	switch he.Reason {
	case "wrong-ca":
		what = fmt.Sprintf("gateway %s's certificate is not issued by the CA configured for it (peers: %s, ca)", peer, peer)
	case "expired":
		what = fmt.Sprintf("gateway %s's certificate has expired or is not valid yet", peer)
	case "wrong-peer":
		what = fmt.Sprintf("the gateway at %s's address (peers: %s, address) presents another gateway's certificate", peer, peer)
	case "bad-identity":
		what = fmt.Sprintf("gateway %s's certificate does not name exactly one valid evx://gateway/ identity", peer)
	case "unknown-peer":
		what = fmt.Sprintf("gateway %s presents the certificate of a gateway that is not a configured peer", peer)
	case "refused-by-peer":
		what = fmt.Sprintf("gateway %s refuses this gateway's certificate (its peers entry for this gateway must pin this country's CA and identity)", peer)
	case "no-certificate":
		what = fmt.Sprintf("gateway %s presents no certificate", peer)
	default:
		what = fmt.Sprintf("gateway %s's certificate is refused (%s)", peer, he.Reason)
	}
	return fmt.Sprintf("%s: %v; a configuration problem, not a temporary one", what, he.Err), true
}

// logFetchFailure logs a failed directory fetch: at error level if the
// peer's certificate was refused, else as a warning.
func logFetchFailure(log *zap.Logger, peer string, err error, msg string) {
	if why, ok := peerRefusal(peer, err); ok {
		log.Error("peer authentication failed", zap.String("peer", peer), zap.String("during", "directory fetch"), zap.String("reason", why))
		return
	}
	log.Warn(msg, zap.String("peer", peer), zap.Error(err))
}

// peerError is the error of an exchange with a peer, naming the peer.
type peerError struct {
	peer string
	err  error
}

func (e *peerError) Error() string { return e.err.Error() }
func (e *peerError) Unwrap() error { return e.err }

// authFailures remembers when a peer's authentication failure was last
// logged for a delivery, so that a peer with many bundles waiting is logged
// once per backoff wait, not once per bundle. The zero value is ready to use.
type authFailures struct {
	mu     sync.Mutex
	logged map[string]time.Time
}

// deliveryFailed logs a failed delivery attempt of bundle id that will be
// retried after wait. A delivery that failed because the peer's
// certificate was refused is still retried, since an operator may fix the
// configuration, but it is logged as an authentication failure, at error
// level, once per peer per wait.
func (g *Gateway) deliveryFailed(id string, attempt int, wait time.Duration, err error) {
	if g.opts.onDeliveryFailed != nil {
		defer g.opts.onDeliveryFailed(id, err)
	}
	var pe *peerError
	if errors.As(err, &pe) {
		if why, ok := peerRefusal(pe.peer, err); ok {
			now := g.now()
			g.authFailures.mu.Lock()
			last, seen := g.authFailures.logged[pe.peer]
			due := !seen || now.Sub(last) >= wait
			if due {
				if g.authFailures.logged == nil {
					g.authFailures.logged = map[string]time.Time{}
				}
				g.authFailures.logged[pe.peer] = now
			}
			g.authFailures.mu.Unlock()
			if due {
				g.log.Error("peer authentication failed", zap.String("peer", pe.peer), zap.String("during", "delivery"),
					zap.String("bundle", id), zap.Int("attempt", attempt), zap.Duration("next_attempt_in", wait), zap.String("reason", why))
			}
			return
		}
	}
	g.log.Warn("delivery failed; will retry", zap.String("bundle", id),
		zap.Int("attempt", attempt), zap.Duration("wait", wait), zap.Error(err))
}
