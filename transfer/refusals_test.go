package transfer

import (
	"crypto/x509"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"evx/crypto"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// fakeTimer holds the refusal log's scheduled flush for the test to run.
type fakeTimer struct {
	t  *testing.T
	mu sync.Mutex
	f  func()
}

func (ft *fakeTimer) schedule(d time.Duration, f func()) func() bool {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	if ft.f != nil {
		ft.t.Error("a second flush scheduled while one is")
	}
	ft.f = f
	return func() bool {
		ft.mu.Lock()
		defer ft.mu.Unlock()
		pending := ft.f != nil
		ft.f = nil
		return pending
	}
}

// fire runs the scheduled flush, as the timer would at the end of the
// window, and reports whether one was scheduled.
func (ft *fakeTimer) fire() bool {
	ft.mu.Lock()
	f := ft.f
	ft.f = nil
	ft.mu.Unlock()
	if f == nil {
		return false
	}
	f()
	return true
}

func (ft *fakeTimer) scheduled() bool {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	return ft.f != nil
}

// TestRefusedHandshakesAreAggregated has FR refuse many handshakes from one
// source: the first is logged at once, the others in one line per window,
// while OnRefuse still counts each.
func TestRefusedHandshakesAreAggregated(t *testing.T) {
	w := newWorld(t)
	ft := &fakeTimer{t: t}
	core, logs := observer.New(zap.InfoLevel)
	refused := make(chan string, 1)
	recv := &memReceiver{id: "FR", sign: w.signFR, got: map[string][]byte{}, rcpt: map[string]*crypto.Signed{}}
	srv := serveWith(t, ServerConfig{ID: "FR", Certificate: w.certFR,
		PeerCAs: map[string]*x509.CertPool{"DE": w.poolDE}, Receiver: recv, Logger: zap.New(core),
		OnRefuse: func(stage, code string, _ net.Addr) { refused <- stage + " " + code },
	}, listenOptions{schedule: ft.schedule})
	forged := issueGateway(t, w.caXX, "DE", time.Time{})
	refuse := func(n int) {
		t.Helper()
		for range n {
			c := newTestClient(t, "DE", forged)
			if _, err := c.FetchDirectory(bounded(t), w.peerFR(srv)); err == nil {
				t.Fatal("forged certificate accepted")
			}
			// OnRefuse fires per refusal, before the alert.
			if got := <-refused; got != "handshake wrong-ca" {
				t.Fatalf("refusal %q, want handshake wrong-ca", got)
			}
		}
	}
	atOnce := func() *observer.ObservedLogs {
		return logs.FilterMessage("peer handshake refused").FilterField(zap.String("source", "127.0.0.0/24")).FilterField(zap.String("reason", "wrong-ca"))
	}
	summaries := func() []observer.LoggedEntry {
		return logs.FilterMessage("peer handshakes refused").FilterField(zap.String("source", "127.0.0.0/24")).FilterField(zap.String("reason", "wrong-ca")).AllUntimed()
	}
	wantSummaries := func(counts ...int64) {
		t.Helper()
		got := summaries()
		if len(got) != len(counts) {
			t.Fatalf("%d summary lines, want %d: %v", len(got), len(counts), got)
		}
		for i, e := range got {
			f := e.ContextMap()
			if f["count"] != counts[i] || f["window"] != refusalWindow {
				t.Errorf("summary %d: %v, want count %d over %v", i, f, counts[i], refusalWindow)
			}
		}
	}

	refuse(manyExchanges)
	if n := atOnce().Len(); n != 1 {
		t.Fatalf("%d refusals logged at once, want 1", n)
	}
	if f := atOnce().All()[0].ContextMap(); f["addr"] == "" || f["addr"] == "unknown" {
		t.Errorf("first refusal logged without the address: %v", f)
	}
	wantSummaries()
	// The window ends: one line for the rest.
	if !ft.fire() {
		t.Fatal("no flush scheduled after refusals")
	}
	wantSummaries(manyExchanges - 1)
	// A quiet window logs nothing, and after a second one the source is
	// forgotten and no flush is scheduled any more.
	ft.fire()
	ft.fire()
	wantSummaries(manyExchanges - 1)
	if ft.scheduled() {
		t.Error("a flush is scheduled after two quiet windows")
	}
	// A forgotten source is logged at once again.
	refuse(1)
	if n := atOnce().Len(); n != 2 {
		t.Errorf("%d refusals logged at once, want 2", n)
	}
	// Close logs what is left and stops the timer.
	refuse(2)
	srv.Close()
	wantSummaries(manyExchanges-1, 2)
	if ft.scheduled() {
		t.Error("a flush is still scheduled after Close")
	}
}

// TestRefusalSourcesAreBounded refuses handshakes from more sources than
// are counted apart: the rest count under "other", and the log's memory
// stays bounded whatever addresses an attacker uses.
func TestRefusalSourcesAreBounded(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	ft := &fakeTimer{t: t}
	l := newRefusalLog(zap.New(core), listenOptions{maxRefusalSources: 4, schedule: ft.schedule})
	refusal := &HandshakeError{"unknown-peer", errors.New("gateway XX is not a configured peer")}
	for i := range 100 {
		l.record(&net.UDPAddr{IP: net.IPv4(10, byte(i), 0, 1), Port: 4433}, refusal)
	}
	// Another address of the first /24 is the same source.
	l.record(&net.UDPAddr{IP: net.IPv4(10, 0, 0, 200), Port: 4433}, refusal)
	if n := len(l.counts); n > 4+1 {
		t.Errorf("%d sources kept, want at most 5", n)
	}
	var sources []string
	for _, e := range logs.FilterMessage("peer handshake refused").All() {
		sources = append(sources, e.ContextMap()["source"].(string))
	}
	want := []string{"10.0.0.0/24", "10.1.0.0/24", "10.2.0.0/24", "10.3.0.0/24", "other"}
	if len(sources) != len(want) {
		t.Fatalf("logged at once from %q, want %q", sources, want)
	}
	for i := range want {
		if sources[i] != want[i] {
			t.Fatalf("logged at once from %q, want %q", sources, want)
		}
	}
	ft.fire()
	counts := map[string]int64{}
	for _, e := range logs.FilterMessage("peer handshakes refused").All() {
		f := e.ContextMap()
		counts[f["source"].(string)] = f["count"].(int64)
	}
	if counts["other"] != 95 || counts["10.0.0.0/24"] != 1 || len(counts) != 2 {
		t.Errorf("summaries %v, want other: 95 and 10.0.0.0/24: 1", counts)
	}
	l.close()
}

func TestRefusalSource(t *testing.T) {
	for addr, want := range map[net.Addr]string{
		&net.UDPAddr{IP: net.ParseIP("192.0.2.77"), Port: 1}:         "192.0.2.0/24",
		&net.UDPAddr{IP: net.ParseIP("::ffff:192.0.2.77"), Port: 1}:  "192.0.2.0/24",
		&net.UDPAddr{IP: net.ParseIP("2001:db8:1:2::1"), Port: 1}:    "2001:db8:1::/48",
		&net.UDPAddr{IP: net.ParseIP("2001:db8:1:ffff::9"), Port: 1}: "2001:db8:1::/48",
		&net.UDPAddr{}: "unknown",
		&net.TCPAddr{IP: net.ParseIP("192.0.2.1")}: "unknown",
	} {
		if got := refusalSource(addr); got != want {
			t.Errorf("refusalSource(%v) = %q, want %q", addr, got, want)
		}
	}
	if got := refusalSource(nil); got != "unknown" {
		t.Errorf("refusalSource(nil) = %q", got)
	}
}
