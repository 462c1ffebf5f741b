package gateway

import (
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// apiErrorLog is the API server's error log. net/http writes a line there
// for every failed TLS handshake, which anyone who can reach the API port
// can cause at will: those lines are counted in metrics one by one, but
// logged as the peers' refused handshakes are (protocol.md 2.3): the first
// of a source in a minute at once, the rest summed up per source and
// minute, for a bounded number of sources. Other lines are logged as they
// come: they are the server's own errors.
type apiErrorLog struct {
	log     *zap.Logger
	metrics *metrics
	now     func() time.Time
	// counted, if set, is called after each failed handshake is counted:
	// tests wait on it.
	counted func(reason string)
	// summary sums failed handshakes up in the transfer log.
	summary *refusalSummary

	mu       sync.Mutex
	refusals refusalLog
}

const tlsHandshakeErrorPrefix = "http: TLS handshake error from "

func (w *apiErrorLog) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	rest, ok := strings.CutPrefix(line, tlsHandshakeErrorPrefix)
	if !ok {
		w.log.Warn("API server error", zap.String("error", line))
		return len(p), nil
	}
	addr, reason, _ := strings.Cut(rest, ": ")
	reason = handshakeFailure(reason)
	w.metrics.refusals.WithLabelValues("api-handshake", reason).Inc()
	var src netip.Prefix
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		src = sourceOf(net.TCPAddrFromAddrPort(ap))
	}
	if w.summary != nil {
		w.summary.add(src, "api-handshake-"+reason)
	}
	w.mu.Lock()
	now := w.now()
	lines := w.refusals.roll(now)
	if l, first := w.refusals.add(src, reason, now); first {
		lines = append(lines, l)
	}
	w.mu.Unlock()
	w.write(lines)
	if w.counted != nil {
		w.counted(reason)
	}
	return len(p), nil
}

// flush logs the handshake failures not yet logged.
func (w *apiErrorLog) flush() {
	w.mu.Lock()
	lines := w.refusals.flush(w.now())
	w.mu.Unlock()
	w.write(lines)
}

func (w *apiErrorLog) write(lines []refusalLine) {
	logRefusalLines(w.log, lines, "API handshake failed", "API handshakes failed", "reason")
}

// handshakeFailure sorts the error of a failed TLS handshake, as net/http
// words it, into a fixed category, for a metric label.
func handshakeFailure(msg string) string {
	switch {
	case strings.Contains(msg, "didn't provide a certificate"):
		return "no-certificate"
	case strings.Contains(msg, "expired or is not yet valid"):
		return "expired"
	case strings.Contains(msg, "failed to verify certificate"), strings.Contains(msg, "bad certificate"):
		return "bad-certificate"
	case strings.Contains(msg, "does not look like a TLS handshake"):
		return "not-tls"
	case strings.Contains(msg, "timeout"):
		return "timeout"
	case msg == "EOF" || strings.Contains(msg, "connection reset"):
		return "closed"
	}
	return "other"
}
