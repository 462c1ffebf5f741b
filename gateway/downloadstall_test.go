package gateway

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"evx/client"
	"evx/crypto"
	"evx/internal/evxtest"
)

// A recipient that stops reading a payload download is cut off after the
// stall timeout: the gateway ends the download and what the recipient
// reads afterwards is cut short. A download read to its end is whole.
func TestDownloadStall(t *testing.T) {
	ended := make(chan error, 4)
	tw := newTestWorld(t, diskStore, func(id string, o *Options) {
		o.UploadStallTimeout = 300 * time.Millisecond
		o.onDownloadEnded = func(_ string, err error) { ended <- err }
	})
	tw.Start(t, "DE")
	tw.Start(t, "FR")
	ctx := context.Background()
	de, deKey := tw.Client("DE", "forensics")
	// More than loopback's socket buffers hold, so that a writer blocks.
	const size = 32 << 20
	b := evxtest.Seal(t, deKey, []crypto.PublicKey{tw.recipientKey("FR", "prosecutor")}, size)
	if _, err := upload(ctx, de, b); err != nil {
		t.Fatal(err)
	}
	if _, err := client.WaitDelivered(ctx, de, b.Env.BundleID, 30*time.Second); err != nil {
		t.Fatal(err)
	}

	fr := tw.Dev.Country("FR")
	conn, err := tls.Dial("tcp", tw.gw("FR").APIAddr(), &tls.Config{
		MinVersion: tls.VersionTLS13, RootCAs: fr.CAPool(), Certificates: []tls.Certificate{fr.User("prosecutor").Cert},
		NextProtos: []string{"http/1.1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /v1/inbox/%s/payload HTTP/1.1\r\nHost: x\r\n\r\n", b.Env.BundleID)
	select {
	case err := <-ended:
		if err == nil {
			t.Fatal("the download ended in full although nothing was read")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the gateway still sends to a recipient that stopped reading")
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := io.Copy(io.Discard, resp.Body)
	if n >= int64(len(b.Payload)) {
		t.Errorf("read %d bytes of a download the gateway gave up on, want fewer than %d", n, len(b.Payload))
	}

	// A recipient that reads gets the payload whole.
	c, _ := tw.Client("FR", "prosecutor")
	got, err := c.Download(ctx, b.Env.BundleID, io.Discard)
	if err != nil || got != int64(len(b.Payload)) {
		t.Fatalf("download read to its end: %d bytes, %v; want %d", got, err, len(b.Payload))
	}
	if err := <-ended; err != nil {
		t.Errorf("a download read to its end ended with %v", err)
	}
}
