package transfer

import (
	"errors"
	"net"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Refused handshakes are logged aggregated: anyone who can send UDP
// packets can make a server refuse handshakes, as fast as it likes and from
// addresses it chooses, and must not be able to flood the log with them.
const (
	// refusalWindow is the period whose refusals from one source, for
	// one reason, are summed up in one log line.
	refusalWindow = time.Minute
	// maxRefusalSources bounds the sources counted apart; refusals from
	// further sources are counted under the source "other".
	maxRefusalSources = 64
)

// refusalReason returns the category of a refused handshake.
func refusalReason(err error) string {
	var he *HandshakeError
	if errors.As(err, &he) {
		return he.Reason
	}
	return "other"
}

// logRefusal logs a refused handshake and returns its reason category. A
// client logs each refusal of a peer it dials: it dials at its own pace.
func logRefusal(log *zap.Logger, err error) string {
	reason := refusalReason(err)
	log.Warn("peer handshake refused", zap.String("reason", reason), zap.Error(err))
	return reason
}

// refusalSource is the network a refused handshake came from: the /24 of
// an IPv4 address, the /48 of an IPv6 one. One host can send from many
// addresses of its network, and all count as one source.
func refusalSource(remote net.Addr) string {
	ua, ok := remote.(*net.UDPAddr)
	if !ok || ua == nil {
		return "unknown"
	}
	ip := ua.AddrPort().Addr().Unmap()
	if !ip.IsValid() {
		return "unknown"
	}
	bits := 24
	if ip.Is6() {
		bits = 48
	}
	p, err := ip.Prefix(bits)
	if err != nil {
		return "unknown"
	}
	return p.String()
}

type refusalKey struct{ source, reason string }

type refusalCount struct {
	n     int  // refusals since the last line for this key
	quiet bool // no refusal since the last flush but one
}

// refusalLog logs the first refused handshake of a source and reason at
// once, then one line per window with the number of further refusals,
// until a whole window passes without any. A timer flushes each window;
// close stops it, waits for a flush that is running and logs what is left.
type refusalLog struct {
	log      *zap.Logger
	window   time.Duration
	maxKeys  int
	schedule func(time.Duration, func()) (stop func() bool)

	mu      sync.Mutex
	counts  map[refusalKey]*refusalCount
	armed   bool        // a flush is scheduled
	stop    func() bool // cancels the scheduled flush
	closed  bool
	flushes sync.WaitGroup // the scheduled flush, until it has run or is stopped
}

func newRefusalLog(log *zap.Logger, o listenOptions) *refusalLog {
	l := &refusalLog{log: log, window: o.refusalWindow, maxKeys: o.maxRefusalSources, schedule: o.schedule, counts: map[refusalKey]*refusalCount{}}
	if l.window <= 0 {
		l.window = refusalWindow
	}
	if l.maxKeys <= 0 {
		l.maxKeys = maxRefusalSources
	}
	if l.schedule == nil {
		l.schedule = func(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop }
	}
	return l
}

// record notes a handshake from remote refused with err, and returns the
// refusal's reason category.
func (l *refusalLog) record(remote net.Addr, err error) string {
	reason := refusalReason(err)
	k := refusalKey{refusalSource(remote), reason}
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.counts[k]
	// The reasons are a fixed set, so "other" adds a few keys at most.
	if c == nil && len(l.counts) >= l.maxKeys {
		k.source = "other"
		c = l.counts[k]
	}
	if c != nil && !l.closed {
		c.n++
		c.quiet = false
		return reason
	}
	addr := "unknown"
	if remote != nil {
		addr = remote.String()
	}
	l.log.Warn("peer handshake refused", zap.String("source", k.source), zap.String("addr", addr),
		zap.String("reason", reason), zap.Error(err))
	if !l.closed {
		l.counts[k] = &refusalCount{}
		l.arm()
	}
	return reason
}

// arm schedules a flush if none is. l.mu is held.
func (l *refusalLog) arm() {
	if l.armed || l.closed {
		return
	}
	l.armed = true
	l.flushes.Add(1)
	l.stop = l.schedule(l.window, l.tick)
}

// tick is the scheduled flush.
func (l *refusalLog) tick() {
	defer l.flushes.Done()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.armed = false
	l.flushLocked()
	if len(l.counts) > 0 {
		l.arm()
	}
}

// flushLocked logs one line per key with refusals not yet logged, and
// forgets keys that have been quiet for a whole window. l.mu is held.
func (l *refusalLog) flushLocked() {
	for k, c := range l.counts {
		switch {
		case c.n > 0:
			l.log.Warn("peer handshakes refused", zap.String("source", k.source), zap.String("reason", k.reason),
				zap.Int("count", c.n), zap.Duration("window", l.window))
			c.n = 0
		case c.quiet:
			delete(l.counts, k)
		default:
			c.quiet = true
		}
	}
}

// close stops the timer, waits for a flush that is running, and logs the
// refusals not yet logged. Refusals after close are logged one by one.
func (l *refusalLog) close() {
	l.mu.Lock()
	l.closed = true
	if l.armed && l.stop() {
		l.armed = false
		l.flushes.Done()
	}
	l.flushLocked()
	l.mu.Unlock()
	l.flushes.Wait()
}
