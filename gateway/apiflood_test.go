package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"evx/api"
	"evx/crypto"
	"evx/internal/evxtest"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// halfHandshake is a TLS handshake with an API that stops before the
// client's certificate: the server has sent its whole flight and waits for
// the client's, as it would for a client that never authenticates.
type halfHandshake struct {
	raw     net.Conn
	reached chan struct{} // the server's flight has arrived
	release chan struct{}
	done    chan error // the handshake's end
	endOnce sync.Once
}

// startHalfHandshake starts a half handshake with the API at addr of
// country's gateway, from the loopback address src.
func (tw *testWorld) startHalfHandshake(t *testing.T, country, src, addr string) *halfHandshake {
	t.Helper()
	h := &halfHandshake{raw: dialFrom(t, src, addr), reached: make(chan struct{}),
		release: make(chan struct{}), done: make(chan error, 1)}
	host, _, _ := net.SplitHostPort(addr)
	conf := &tls.Config{
		MinVersion: tls.VersionTLS13, RootCAs: tw.Dev.Country(country).CAPool(), ServerName: host,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			close(h.reached)
			<-h.release
			return nil, errors.New("handshake abandoned by the test")
		},
	}
	go func() { h.done <- tls.Client(h.raw, conf).Handshake() }()
	t.Cleanup(h.end)
	return h
}

// wait waits until the server has sent its flight.
func (h *halfHandshake) wait(t *testing.T) {
	t.Helper()
	select {
	case <-h.reached:
	case err := <-h.done:
		t.Fatalf("handshake ended before the client certificate: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no server flight within 10 s")
	}
}

// wantHandshakeRefused checks that a TLS handshake from src with the API
// at addr fails at once: the server closes the connection.
func (tw *testWorld) wantHandshakeRefused(t *testing.T, country, src, addr string) {
	t.Helper()
	c := dialOrReset(t, src, addr)
	if c == nil {
		return
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	host, _, _ := net.SplitHostPort(addr)
	answered := false
	err := tls.Client(c, &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: tw.Dev.Country(country).CAPool(), ServerName: host,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			answered = true
			return nil, errors.New("the server answered the handshake")
		}}).Handshake()
	if answered || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("handshake over the limit: %v, want the connection closed at once", err)
	}
}

// end abandons the handshake and waits for its goroutine.
func (h *halfHandshake) end() {
	h.endOnce.Do(func() {
		close(h.release)
		h.raw.Close()
		<-h.done
	})
}

// closeWaitServer half-closes c and reads until the server has closed it
// too: the gateway releases a connection's count before closing it, so it
// has been released when this returns.
func closeWaitServer(t *testing.T, c net.Conn) {
	t.Helper()
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	wantClosedByServer(t, c, "a connection closed by the client")
}

// A flood of connections from one source that never authenticate takes up
// that source's share of connections only: the surplus is closed at once,
// a user elsewhere is served, and the count is released as the flood ends.
func TestAPIConnectionFlood(t *testing.T) {
	const perSource = 16
	tw := newTestWorld(t, diskStore, func(id string, o *Options) {
		o.APIMaxConnsPerSource = perSource
		o.APIHandshakeTimeout = time.Minute
	})
	tw.Start(t, "DE")
	tw.Start(t, "FR")
	g := tw.gw("DE")
	addr := g.APIAddr()
	ctx := context.Background()

	// Half of the source's limit in TCP connections that never start
	// TLS, the other half in handshakes stopped before the client's
	// certificate. A handshake that has an answer was accepted, and the
	// accept queue is first in, first out: so were the idle connections
	// dialed before it.
	var idle []net.Conn
	for i := 0; i < perSource/2; i++ {
		idle = append(idle, dialFrom(t, "127.0.0.2", addr))
	}
	var half []*halfHandshake
	for i := 0; i < perSource/2; i++ {
		h := tw.startHalfHandshake(t, "DE", "127.0.0.2", addr)
		h.wait(t)
		half = append(half, h)
	}

	// Past the limit, connections are closed at once.
	const surplus = 8
	for i := 0; i < surplus; i++ {
		wantRefused(t, "127.0.0.2", addr, "a connection over the source's limit")
	}
	tw.wantHandshakeRefused(t, "DE", "127.0.0.2", addr)
	if n := testutil.ToFloat64(g.metrics.apiConnsRefused.WithLabelValues(limitSource)); n != surplus+1 {
		t.Errorf(`evx_api_connections_refused_total{limit="source"} = %v, want %d`, n, surplus+1)
	}

	// Meanwhile a user at 127.0.0.1 is served.
	de, deKey := tw.Client("DE", "forensics")
	if w, err := de.WhoAmI(ctx); err != nil || w.Unit != "DE/forensics" {
		t.Fatalf("whoami during the flood: %+v, %v", w, err)
	}
	b := evxtest.Seal(t, deKey, []crypto.PublicKey{tw.recipientKey("FR", "prosecutor")}, 50_000)
	if st, err := upload(ctx, de, b); err != nil || st.State != api.StateQueued {
		t.Fatalf("upload during the flood: %+v, %v", st, err)
	}

	// The refusals were logged once, not once each.
	var lines int
	for _, e := range tw.Logs["DE"].FilterMessage("API connection refused").All() {
		if e.ContextMap()["source"] == "127.0.0.2/32" {
			lines++
		}
	}
	if lines != 1 {
		t.Errorf("%d log entries for refusals from 127.0.0.2 in the minute, want 1", lines)
	}

	// The flood ends: the source may open as many connections again.
	for _, c := range idle {
		closeWaitServer(t, c)
	}
	for _, h := range half {
		closeWaitServer(t, h.raw)
		h.end()
	}
	for i := 0; i < perSource; i++ {
		tw.startHalfHandshake(t, "DE", "127.0.0.2", addr).wait(t)
	}
}

// Idle connections that have not authenticated hold no read buffer: the
// gateway's live heap grows by a fraction of apiReadBuffer per connection.
func TestAPIIdleConnectionMemory(t *testing.T) {
	const n = 128
	tw := newTestWorld(t, diskStore, func(id string, o *Options) {
		o.APIMaxConnsPerSource = n
		o.APIHandshakeTimeout = time.Minute
	})
	tw.Start(t, "DE")
	addr := tw.gw("DE").APIAddr()
	// One first, for what the first handshake allocates once.
	h := tw.startHalfHandshake(t, "DE", "127.0.0.2", addr)
	h.wait(t)
	closeWaitServer(t, h.raw)
	h.end()

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	hs := make([]*halfHandshake, n)
	for i := range hs {
		hs[i] = tw.startHalfHandshake(t, "DE", "127.0.0.2", addr)
		hs[i].wait(t)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	// Both ends of each connection are in this process; the client's
	// half of a handshake holds some KiB too.
	perConn := (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / n
	t.Logf("live heap per idle connection, both ends: %d bytes", perConn)
	if perConn > apiReadBuffer/2 {
		t.Errorf("live heap grew by %d bytes per idle connection, want at most %d", perConn, apiReadBuffer/2)
	}
	runtime.KeepAlive(hs)
}

// A handshake that does not end within APIHandshakeTimeout is cut off,
// whatever stage it stopped at; once it has ended, the connection has no
// such deadline.
func TestAPIHandshakeDeadline(t *testing.T) {
	tw := newTestWorld(t, diskStore, func(id string, o *Options) {
		o.APIHandshakeTimeout = 200 * time.Millisecond
	})
	tw.Start(t, "DE")
	addr := tw.gw("DE").APIAddr()

	t.Run("no ClientHello", func(t *testing.T) {
		wantClosedByServer(t, dialFrom(t, "127.0.0.1", addr), "a connection without a handshake")
	})
	t.Run("part of a ClientHello", func(t *testing.T) {
		c := dialFrom(t, "127.0.0.1", addr)
		// A handshake record header announcing 512 bytes, and no more.
		if _, err := c.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00}); err != nil {
			t.Fatal(err)
		}
		wantClosedByServer(t, c, "a connection with a partial ClientHello")
	})
	t.Run("no client certificate", func(t *testing.T) {
		h := tw.startHalfHandshake(t, "DE", "127.0.0.1", addr)
		h.wait(t)
		wantClosedByServer(t, h.raw, "a handshake without the client's flight")
	})
	t.Run("served after the handshake", func(t *testing.T) {
		// A request that lasts five handshake deadlines: a status wait
		// for a bundle that cannot be delivered, FR being down.
		ctx := context.Background()
		de, deKey := tw.Client("DE", "forensics")
		tw.Start(t, "FR")
		if _, err := de.Lookup(ctx, "FR/prosecutor"); err != nil {
			t.Fatal(err)
		}
		tw.Stop(t, "FR")
		b := evxtest.Seal(t, deKey, []crypto.PublicKey{tw.recipientKey("FR", "prosecutor")}, 1000)
		if _, err := upload(ctx, de, b); err != nil {
			t.Fatal(err)
		}
		st, err := de.OutboxStatusWait(ctx, b.Env.BundleID, time.Second)
		if err != nil || st.State != api.StateQueued {
			t.Fatalf("status after a wait of 1 s: %+v, %v", st, err)
		}
	})
}
