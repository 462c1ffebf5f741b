package gateway

import (
	"bufio"
	"crypto/tls"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// The local API's listener bounds what a connection costs before its TLS
// handshake has shown who is on the other end. Anyone who can reach the API
// address can open connections; each accepted one holds a file descriptor,
// a goroutine and the TLS state, so their number is bounded, in total and
// per source, and a handshake has a deadline of its own. The large read
// buffer that speeds up uploads is taken only while an authenticated
// connection streams data in.

// Defaults of the API's connection limits (see Options).
//
// An idle connection costs a file descriptor, a goroutine (8 KiB of stack
// and up) and its TLS and HTTP state, some tens of KiB, so 1024 of them
// stay well within a small server's memory and the common limits on file
// descriptors, leaving room for storage, peer and S3 connections. A unit's
// client opens one connection per request it has under way (an upload, a
// status wait, a download): 64 per source serve several units behind one
// address, while one source can take no more than a sixteenth of the
// total.
const (
	defaultAPIMaxConns          = 1024
	defaultAPIMaxConnsPerSource = 64
	// defaultAPIHandshakeTimeout is ample for a TLS handshake between a
	// unit and its gateway, and ends a connection that never starts one
	// a third of the time that http.Server would grant (its 30 s header
	// timeout).
	defaultAPIHandshakeTimeout = 10 * time.Second
)

// apiConnLimits returns o's connection limits with defaults for zeros.
func (o *Options) apiConnLimits() (total, perSource int, handshake time.Duration) {
	total, perSource, handshake = o.APIMaxConns, o.APIMaxConnsPerSource, o.APIHandshakeTimeout
	if total <= 0 {
		total = defaultAPIMaxConns
	}
	if perSource <= 0 {
		perSource = defaultAPIMaxConnsPerSource
	}
	if handshake <= 0 {
		handshake = defaultAPIHandshakeTimeout
	}
	return total, perSource, handshake
}

// The limits a refused connection was over: the label values of
// evx_api_connections_refused_total.
const (
	limitTotal  = "total"
	limitSource = "source"
)

// Refused connections are logged once per source and minute, not one line
// each: a flood of them must not flood the log too. The first refusal of a
// source in a minute is logged at once; how many followed is logged at the
// first connection event after the minute, or when the listener closes.
const (
	refusalLogInterval = time.Minute
	// maxRefusalSources bounds the sources counted one by one in a
	// minute; refusals from further sources are summed.
	maxRefusalSources = 256
)

// apiListener accepts connections for the API server up to its limits, and
// closes those over them at once. The count of a source's open connections
// lives only while it has some, so the map holds at most total entries.
type apiListener struct {
	net.Listener
	total, perSource int
	handshake        time.Duration
	log              *zap.Logger
	metrics          *metrics
	now              func() time.Time
	// summary sums refused connections up in the transfer log.
	summary *refusalSummary

	mu       sync.Mutex
	open     int
	bySource map[netip.Prefix]int
	refusals refusalLog
}

// refusalLog counts the refused connections of one interval.
type refusalLog struct {
	start    time.Time
	bySource map[netip.Prefix]*refusalCount
	// other counts refusals from sources beyond maxRefusalSources.
	other int
}

type refusalCount struct {
	n      int
	reason string // of the last refusal: the limit, or why a handshake failed
}

// refusalLine is a log line about refused connections, written once the
// listener's lock is released.
type refusalLine struct {
	source netip.Prefix // invalid for the sum of other sources
	reason string
	n      int
	first  bool
	start  time.Time
}

func (g *Gateway) newAPIListener(ln net.Listener) *apiListener {
	l := &apiListener{Listener: ln, log: g.log.Named("api"), metrics: g.metrics, now: time.Now,
		bySource: map[netip.Prefix]int{}, summary: g.refusalSum}
	l.total, l.perSource, l.handshake = g.opts.apiConnLimits()
	return l
}

// Accept returns the next connection within the limits, closing those over
// them on the way.
func (l *apiListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		src := sourceOf(c.RemoteAddr())
		limit, lines := l.admit(src)
		l.logRefusals(lines)
		if limit == "" {
			return l.newConn(c, src), nil
		}
		// A reset, not a FIN: the socket goes at once, without lingering
		// in TIME_WAIT on this side.
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
		c.Close()
	}
}

// Close closes the listener and logs the refusals not yet logged.
func (l *apiListener) Close() error {
	err := l.Listener.Close()
	l.mu.Lock()
	lines := l.refusals.flush(l.now())
	l.mu.Unlock()
	l.logRefusals(lines)
	return err
}

// sourceOf returns the source a connection counts against: its IPv4
// address, or the /64 of its IPv6 address, the block one host usually has.
func sourceOf(a net.Addr) netip.Prefix {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.Prefix{}
	}
	ip := ta.AddrPort().Addr().Unmap()
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.WithZone("").Prefix(bits)
	return p
}

// admit counts a new connection from src, or returns the limit it is over.
func (l *apiListener) admit(src netip.Prefix) (limit string, lines []refusalLine) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	lines = l.refusals.roll(now)
	switch {
	case l.open >= l.total:
		limit = limitTotal
	case l.bySource[src] >= l.perSource:
		limit = limitSource
	default:
		l.open++
		l.bySource[src]++
		l.metrics.apiConns.Inc()
		return "", lines
	}
	l.metrics.apiConnsRefused.WithLabelValues(limit).Inc()
	if l.summary != nil {
		l.summary.add(src, "api-connection-"+limit)
	}
	if line, ok := l.refusals.add(src, limit, now); ok {
		lines = append(lines, line)
	}
	return limit, lines
}

// release uncounts a closed connection from src.
func (l *apiListener) release(src netip.Prefix) {
	l.mu.Lock()
	l.open--
	if l.bySource[src]--; l.bySource[src] <= 0 {
		delete(l.bySource, src)
	}
	l.metrics.apiConns.Dec()
	lines := l.refusals.roll(l.now())
	l.mu.Unlock()
	l.logRefusals(lines)
}

// conns returns the number of open connections from src and in total.
func (l *apiListener) conns(src netip.Prefix) (fromSource, total int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.bySource[src], l.open
}

// add counts a refusal; the first of src in the interval is to be logged
// at once.
func (r *refusalLog) add(src netip.Prefix, reason string, now time.Time) (refusalLine, bool) {
	if r.bySource == nil {
		r.bySource = map[netip.Prefix]*refusalCount{}
		r.start = now
	}
	c := r.bySource[src]
	if c == nil {
		if len(r.bySource) >= maxRefusalSources {
			r.other++
			return refusalLine{}, false
		}
		c = &refusalCount{}
		r.bySource[src] = c
	}
	c.n++
	c.reason = reason
	return refusalLine{source: src, reason: reason, n: 1, first: true, start: r.start}, c.n == 1
}

// roll ends the interval if it is over, returning the lines that sum it up.
func (r *refusalLog) roll(now time.Time) []refusalLine {
	if r.bySource == nil || now.Sub(r.start) < refusalLogInterval {
		return nil
	}
	return r.flush(now)
}

// flush ends the interval. Sources refused once were logged already.
func (r *refusalLog) flush(now time.Time) []refusalLine {
	var lines []refusalLine
	for src, c := range r.bySource {
		if c.n > 1 {
			lines = append(lines, refusalLine{source: src, reason: c.reason, n: c.n, start: r.start})
		}
	}
	if r.other > 0 {
		lines = append(lines, refusalLine{n: r.other, start: r.start})
	}
	*r = refusalLog{}
	return lines
}

func (l *apiListener) logRefusals(lines []refusalLine) {
	logRefusalLines(l.log, lines, "API connection refused", "API connections refused", "limit",
		zap.Int("max_total", l.total), zap.Int("max_per_source", l.perSource))
}

// logRefusalLines logs what a refusalLog returned: the first refusal of a
// source as first, with the fields of firstFields, and the sums as
// summed; reasonKey names the reason's field.
func logRefusalLines(log *zap.Logger, lines []refusalLine, first, summed, reasonKey string, firstFields ...zap.Field) {
	for _, ln := range lines {
		switch {
		case ln.first:
			log.Warn(first, append([]zap.Field{zap.Stringer("source", ln.source), zap.String(reasonKey, ln.reason)},
				append(firstFields, zap.String("note", "further refusals of this source are summed up once a minute"))...)...)
		case ln.source.IsValid():
			log.Warn(summed, zap.Stringer("source", ln.source), zap.String(reasonKey, ln.reason),
				zap.Int("count", ln.n), zap.Time("since", ln.start))
		default:
			log.Warn(summed, zap.String("source", "other"), zap.Int("count", ln.n), zap.Time("since", ln.start))
		}
	}
}

// apiReadBuffer is the read buffer under an API connection's TLS while a
// body streams in. TLS reads one record (at most 16 KiB) per read from its
// connection; with the buffer, one read system call takes in whatever has
// arrived, up to this size, and an upload costs a fraction of the system
// calls, which are dear on virtual machines.
const apiReadBuffer = 128 << 10

// bulkFill is the least a buffered read must bring for the next to be
// buffered too: less than a TLS record means that the sender is not ahead
// of the reader, and reading directly costs no more system calls.
const bulkFill = 16 << 10

// readBuffers are the apiReadBuffer buffers of connections that are not
// streaming data in at the moment.
var readBuffers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, apiReadBuffer) }}

// apiConn is an accepted API connection. It is counted until it closes;
// until its TLS handshake is done, no deadline set on it runs past the
// handshake deadline; and its reads go through a buffer of apiReadBuffer
// bytes only while an authenticated client streams data in, so that idle
// connections, and those of clients that never authenticate, hold none.
type apiConn struct {
	net.Conn
	l      *apiListener
	src    netip.Prefix
	closed atomic.Bool

	// handshakeEnd is the deadline of the TLS handshake. http.Server
	// gives a handshake the least of its read, header and write
	// timeouts (the 30 s header timeout here), so the deadlines it sets
	// before the handshake are clamped to handshakeEnd, rather than the
	// header timeout lowered for every request.
	handshakeEnd time.Time
	// tls is the TLS connection over this one, from the API server's
	// ConnState hook (trackAPIConn), which asks whether the handshake is
	// done.
	tls atomic.Pointer[tls.Conn]
	// handshook is set once the handshake is known to be done: at the
	// first deadline set after it, which http.Server sets at once.
	handshook atomic.Bool
	dmu       sync.Mutex // serialises setting deadlines until handshook

	// rmu serialises reads, which tls.Conn already does, so that the
	// buffer's use does not depend on it.
	rmu  sync.Mutex
	br   *bufio.Reader // from readBuffers while streaming
	bulk bool          // the next read is to go through br
}

func (l *apiListener) newConn(c net.Conn, src netip.Prefix) *apiConn {
	ac := &apiConn{Conn: c, l: l, src: src, handshakeEnd: time.Now().Add(l.handshake)}
	c.SetDeadline(ac.handshakeEnd)
	return ac
}

// trackAPIConn is the API server's ConnState hook: it tells each new
// apiConn the tls.Conn over it, before the server starts the handshake.
func trackAPIConn(c net.Conn, state http.ConnState) {
	if state != http.StateNew {
		return
	}
	if tc, ok := c.(*tls.Conn); ok {
		if ac, ok := tc.NetConn().(*apiConn); ok {
			ac.tls.Store(tc)
		}
	}
}

// Close closes the connection and releases its count, once.
func (c *apiConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		// Released before the socket closes, so that a client that sees
		// it closed may connect again at once.
		c.l.release(c.src)
	}
	return c.Conn.Close()
}

func (c *apiConn) SetDeadline(t time.Time) error {
	return c.setDeadline(t, c.Conn.SetDeadline)
}

func (c *apiConn) SetReadDeadline(t time.Time) error {
	return c.setDeadline(t, c.Conn.SetReadDeadline)
}

func (c *apiConn) SetWriteDeadline(t time.Time) error {
	return c.setDeadline(t, c.Conn.SetWriteDeadline)
}

// setDeadline sets t with set, or during the handshake the earlier of t
// and its deadline. No deadline is set from inside the handshake, which
// holds the lock that ConnectionState takes.
func (c *apiConn) setDeadline(t time.Time, set func(time.Time) error) error {
	if !c.handshook.Load() {
		c.dmu.Lock()
		defer c.dmu.Unlock()
		switch tc := c.tls.Load(); {
		case c.handshook.Load():
		case tc != nil && tc.ConnectionState().HandshakeComplete:
			// The handshake's deadlines end with it, in both
			// directions.
			c.Conn.SetDeadline(time.Time{})
			c.handshook.Store(true)
		case t.IsZero() || t.After(c.handshakeEnd):
			t = c.handshakeEnd
		}
	}
	return set(t)
}

func (c *apiConn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if c.br != nil {
		if c.br.Buffered() > 0 {
			return c.br.Read(p)
		}
		if !c.bulk {
			c.br.Reset(nil)
			readBuffers.Put(c.br)
			c.br = nil
		}
	}
	if !c.bulk {
		n, err := c.Conn.Read(p)
		// A read that fills p found more waiting: a body is streaming
		// in. Only an authenticated client gets the buffer.
		c.bulk = n == len(p) && n < apiReadBuffer && err == nil && c.handshook.Load()
		return n, err
	}
	if c.br == nil {
		c.br = readBuffers.Get().(*bufio.Reader)
		c.br.Reset(c.Conn)
	}
	n, err := c.br.Read(p)
	if err != nil || n+c.br.Buffered() < bulkFill {
		c.bulk = false
	}
	if err != nil && c.br.Buffered() == 0 {
		c.br.Reset(nil)
		readBuffers.Put(c.br)
		c.br = nil
	}
	return n, err
}
