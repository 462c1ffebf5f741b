package gateway

import (
	"crypto/tls"
	"net"
	"testing"
	"time"

	"evx/audit"
	"evx/storage"
)

// Connections refused before any request, a failed TLS handshake of the
// API and a connection over the per-source limit, are summed up in the
// transfer log too, by source and category, and recorded as the gateway
// stops.
func TestConnectionRefusalsSummedUpInLog(t *testing.T) {
	failed := make(chan string, 4)
	tw := newTestWorld(t, func(tb testing.TB, id string) storage.Backend { return diskStore(tb, id) }, func(id string, o *Options) {
		o.onAPIHandshakeFailed = func(reason string) { failed <- reason }
		o.APIMaxConnsPerSource = 1
	})
	tw.Start(t, "DE")
	addr := tw.gw("DE").APIAddr()

	// No client certificate.
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: tw.World.Dev.Country("DE").CAPool(), MinVersion: tls.VersionTLS13})
	if err == nil {
		conn.Read(make([]byte, 1)) // TLS 1.3: the refusal comes with the first read
		conn.Close()
	}
	select {
	case <-failed:
	case <-time.After(30 * time.Second):
		t.Fatal("the failed handshake was not counted")
	}

	// Two connections from one source, over the limit of one: the second
	// is closed at once, once counted.
	held, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	// The gateway may close it before the dial returns (a reset).
	if over, err := net.Dial("tcp", addr); err == nil {
		over.SetReadDeadline(time.Now().Add(30 * time.Second))
		if _, err := over.Read(make([]byte, 1)); err == nil || isTimeout(err) {
			t.Fatalf("the connection over the limit was not closed: %v", err)
		}
		over.Close()
	}
	held.Close()

	tw.Stop(t, "DE")
	entries := tw.storedEntries(t, "DE")
	for _, code := range []string{"api-handshake-no-certificate", "api-connection-source"} {
		got := refusedEntries(entries, code)
		if len(got) != 1 || got[0].Count != 1 || got[0].Source != "127.0.0.1/32" || got[0].Actor != audit.GatewayActor {
			t.Errorf("requests-refused entries of %s: %+v, want one of count 1 from 127.0.0.1/32", code, got)
		}
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
