package gateway

import (
	"crypto/tls"
	"testing"
	"time"

	"evx/storage"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// Failed API handshakes are counted one by one, but logged as the first of
// a source in a minute and then a sum per source and minute, so that a
// flood of them cannot flood the log.
func TestAPIHandshakeFailuresSummedUp(t *testing.T) {
	clock := newTestClock()
	core, logs := observer.New(zap.InfoLevel)
	w := &apiErrorLog{log: zap.New(core), metrics: newMetrics(), now: clock.Now}
	write := func(line string) {
		if _, err := w.Write([]byte(line + "\n")); err != nil {
			t.Fatal(err)
		}
	}
	for range 50 {
		write("http: TLS handshake error from 192.0.2.7:40000: tls: client didn't provide a certificate")
	}
	write("http: TLS handshake error from 192.0.2.8:40000: EOF")
	write("http: TLS handshake error from [2001:db8::1]:443: tls: first record does not look like a TLS handshake")
	if n := testutil.ToFloat64(w.metrics.refusals.WithLabelValues("api-handshake", "no-certificate")); n != 50 {
		t.Errorf("counted %v handshakes without a certificate, want 50", n)
	}
	if n := logs.FilterMessage("API handshake failed").Len(); n != 3 {
		t.Errorf("%d handshake failures logged at once, want one per source (3)", n)
	}
	clock.Add(refusalLogInterval)
	write("http: TLS handshake error from 192.0.2.9:1: read tcp 192.0.2.1:443->192.0.2.9:1: i/o timeout")
	sums := logs.FilterMessage("API handshakes failed").Filter(func(e observer.LoggedEntry) bool {
		return e.ContextMap()["source"] == "192.0.2.7/32"
	}).All()
	if len(sums) != 1 || sums[0].ContextMap()["count"] != int64(50) || sums[0].ContextMap()["reason"] != "no-certificate" {
		t.Errorf("summary lines %v, want one for 192.0.2.7 with 50 no-certificate", sums)
	}
	write("http: Accept error: too many open files")
	if n := logs.FilterMessage("API server error").Len(); n != 1 {
		t.Errorf("other server errors logged %d times, want 1", n)
	}
}

// The gateway's API server reports its failed handshakes there.
func TestAPIHandshakeFailureCounted(t *testing.T) {
	failed := make(chan string, 4)
	tw := newTestWorld(t, func(tb testing.TB, id string) storage.Backend { return diskStore(tb, id) }, func(id string, o *Options) {
		o.onAPIHandshakeFailed = func(reason string) { failed <- reason }
	})
	tw.Start(t, "DE")
	conn, err := tls.Dial("tcp", tw.gw("DE").APIAddr(), &tls.Config{RootCAs: tw.World.Dev.Country("DE").CAPool(), MinVersion: tls.VersionTLS13})
	if err == nil {
		// TLS 1.3: the refusal of the missing certificate comes with the
		// first read.
		conn.Read(make([]byte, 1))
		conn.Close()
	}
	select {
	case reason := <-failed:
		if reason != "no-certificate" {
			t.Errorf("failure counted as %q, want no-certificate", reason)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the failed handshake was not counted")
	}
	if n := testutil.ToFloat64(tw.gw("DE").metrics.refusals.WithLabelValues("api-handshake", "no-certificate")); n != 1 {
		t.Errorf("counted %v, want 1", n)
	}
}
