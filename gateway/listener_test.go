package gateway

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// dialFrom opens a TCP connection to addr from the loopback address src
// (any 127.x.y.z is this host on Linux).
func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	c := dialOrReset(t, src, addr)
	if c == nil {
		t.Fatalf("connection to %s from %s reset", addr, src)
	}
	return c
}

// dialOrReset is dialFrom, but returns nil if the server resets the
// connection before the dial returns, as it may one over its limits.
func dialOrReset(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 10 * time.Second}
	c, err := d.Dial("tcp", addr)
	if errors.Is(err, syscall.ECONNRESET) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// wantRefused connects to addr from src and checks that the server closes
// the connection at once: the connection may even be reset before the
// dial returns.
func wantRefused(t *testing.T, src, addr, what string) {
	t.Helper()
	if c := dialOrReset(t, src, addr); c != nil {
		wantClosedByServer(t, c, what)
	}
}

// wantClosedByServer reads from c until the server closes it: a closed
// connection reads EOF or a reset at once. The deadline is far beyond
// "at once", and only stops a test that fails.
func wantClosedByServer(t *testing.T, c net.Conn, what string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.Copy(io.Discard, c)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("%s: still open after 10 s", what)
	}
}

// testListener is an apiListener on loopback whose accepted connections
// arrive on a channel, with its log and metrics.
type testListener struct {
	*apiListener
	accepted chan net.Conn
	logs     *observer.ObservedLogs
	clock    *testClock
}

func newTestListener(t *testing.T, total, perSource int) *testListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.InfoLevel)
	g := &Gateway{opts: Options{APIMaxConns: total, APIMaxConnsPerSource: perSource},
		log: zap.New(core), metrics: newMetrics()}
	tl := &testListener{apiListener: g.newAPIListener(ln), accepted: make(chan net.Conn, 100), logs: logs,
		clock: newTestClock()}
	tl.now = tl.clock.Now
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			tl.accepted <- c
		}
	}()
	t.Cleanup(func() {
		tl.Close()
		<-done
		close(tl.accepted)
		for c := range tl.accepted {
			c.Close()
		}
	})
	return tl
}

// accept returns the next accepted connection.
func (tl *testListener) accept(t *testing.T) *apiConn {
	t.Helper()
	select {
	case c := <-tl.accepted:
		return c.(*apiConn)
	case <-time.After(10 * time.Second):
		t.Fatal("no connection accepted within 10 s")
		return nil
	}
}

func (tl *testListener) refused(limit string) float64 {
	return testutil.ToFloat64(tl.metrics.apiConnsRefused.WithLabelValues(limit))
}

func src(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func TestAPIListenerLimits(t *testing.T) {
	tl := newTestListener(t, 4, 2)
	addr := tl.Addr().String()

	// Two from 127.0.0.2, the most one source may have.
	dialFrom(t, "127.0.0.2", addr)
	a1 := tl.accept(t)
	dialFrom(t, "127.0.0.2", addr)
	a2 := tl.accept(t)
	if a1.src != src("127.0.0.2/32") || a2.src != src("127.0.0.2/32") {
		t.Fatalf("sources %v, %v, want 127.0.0.2/32", a1.src, a2.src)
	}
	// A third is closed at once, and counted.
	wantRefused(t, "127.0.0.2", addr, "a third connection from 127.0.0.2")
	if n := tl.refused(limitSource); n != 1 {
		t.Errorf("refused for the source limit: %v, want 1", n)
	}
	// Others still get in, up to the total.
	dialFrom(t, "127.0.0.3", addr)
	dialFrom(t, "127.0.0.3", addr)
	a3, a4 := tl.accept(t), tl.accept(t)
	wantRefused(t, "127.0.0.4", addr, "a fifth connection in all")
	if n := tl.refused(limitTotal); n != 1 {
		t.Errorf("refused for the total limit: %v, want 1", n)
	}
	if n := testutil.ToFloat64(tl.metrics.apiConns); n != 4 {
		t.Errorf("evx_api_connections = %v, want 4", n)
	}

	// Closing releases the count once, however often it is closed.
	a1.Close()
	a1.Close()
	if s, total := tl.conns(src("127.0.0.2/32")); s != 1 || total != 3 {
		t.Fatalf("after closing one connection twice: %d from 127.0.0.2, %d in all; want 1 and 3", s, total)
	}
	dialFrom(t, "127.0.0.4", addr)
	a5 := tl.accept(t)
	// Sources without connections leave the map: it holds at most the
	// total's number of entries.
	for _, c := range []*apiConn{a2, a3, a4, a5} {
		c.Close()
	}
	tl.mu.Lock()
	n, open := len(tl.bySource), tl.open
	tl.mu.Unlock()
	if n != 0 || open != 0 {
		t.Errorf("after closing all: %d sources, %d connections counted; want none", n, open)
	}
	if n := testutil.ToFloat64(tl.metrics.apiConns); n != 0 {
		t.Errorf("evx_api_connections = %v, want 0", n)
	}
}

// Refusals are logged once per source and minute, then summed up.
func TestAPIListenerRefusalLog(t *testing.T) {
	tl := newTestListener(t, 100, 1)
	addr := tl.Addr().String()
	dialFrom(t, "127.0.0.2", addr)
	tl.accept(t)
	for i := 0; i < 10; i++ {
		wantRefused(t, "127.0.0.2", addr, "a connection over the limit")
	}
	logged := byMessage(tl.logs.TakeAll())
	first := logged["API connection refused"]
	if len(first) != 1 || first[0].ContextMap()["source"] != "127.0.0.2/32" || first[0].ContextMap()["limit"] != limitSource {
		t.Fatalf("logged at once: %v, want one entry for 127.0.0.2/32", first)
	}
	if n := len(logged["API connections refused"]); n != 0 {
		t.Fatalf("%d sums logged within the minute, want none", n)
	}
	// The next event after the minute logs the sum; the refusal that
	// is that event starts the next minute.
	tl.clock.Add(refusalLogInterval)
	wantRefused(t, "127.0.0.2", addr, "a connection over the limit")
	logged = byMessage(tl.logs.TakeAll())
	sums := logged["API connections refused"]
	if len(sums) != 1 || sums[0].ContextMap()["count"] != int64(10) {
		t.Fatalf("sums %v, want one of 10 refusals", sums)
	}
	if n := len(logged["API connection refused"]); n != 1 {
		t.Errorf("%d refusals logged at once in the next minute, want 1", n)
	}
	if n := tl.refused(limitSource); n != 11 {
		t.Errorf("refused: %v, want 11", n)
	}
}

func byMessage(entries []observer.LoggedEntry) map[string][]observer.LoggedEntry {
	m := map[string][]observer.LoggedEntry{}
	for _, e := range entries {
		m[e.Message] = append(m[e.Message], e)
	}
	return m
}

// The refusals of one minute are counted for a bounded number of sources.
func TestRefusalLogBounded(t *testing.T) {
	var r refusalLog
	now := time.Now()
	firsts := 0
	for i := 0; i < maxRefusalSources+50; i++ {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), 32)
		for j := 0; j < 2; j++ {
			if _, ok := r.add(p, limitTotal, now); ok {
				firsts++
			}
		}
	}
	if len(r.bySource) != maxRefusalSources || r.other != 100 || firsts != maxRefusalSources {
		t.Fatalf("%d sources, %d others, %d logged at once; want %d, 100, %d",
			len(r.bySource), r.other, firsts, maxRefusalSources, maxRefusalSources)
	}
	lines := r.flush(now)
	if len(lines) != maxRefusalSources+1 || lines[len(lines)-1].source.IsValid() || lines[len(lines)-1].n != 100 {
		t.Errorf("flush: %d lines, want %d with the others summed last", len(lines), maxRefusalSources+1)
	}
}

func TestSourceOf(t *testing.T) {
	for _, c := range []struct {
		addr string
		want string
	}{
		{"127.0.0.2:443", "127.0.0.2/32"},
		{"[::ffff:192.0.2.1]:443", "192.0.2.1/32"},
		{"[2001:db8:1:2:3:4:5:6]:443", "2001:db8:1:2::/64"},
		{"[fe80::1%eth0]:443", "fe80::/64"},
	} {
		a, err := net.ResolveTCPAddr("tcp", c.addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := sourceOf(a); got.String() != c.want {
			t.Errorf("sourceOf(%s) = %s, want %s", c.addr, got, c.want)
		}
	}
}
