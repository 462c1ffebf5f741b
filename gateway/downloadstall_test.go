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
	tw.start(t, "DE")
	tw.start(t, "FR")
	ctx := context.Background()
	de, deKey := tw.client(t, "DE", "forensics")
	// More than loopback's socket buffers hold, so that a writer blocks.
	const size = 32 << 20
	b := seal(t, deKey, []crypto.PublicKey{tw.recipientKey("FR", "prosecutor")}, size)
	if _, err := b.upload(ctx, de); err != nil {
		t.Fatal(err)
	}
	if _, err := client.WaitDelivered(ctx, de, b.env.BundleID, 30*time.Second); err != nil {
		t.Fatal(err)
	}

	fr := tw.world.Country("FR")
	conn, err := tls.Dial("tcp", tw.gateways["FR"].APIAddr(), &tls.Config{
		MinVersion: tls.VersionTLS13, RootCAs: fr.CAPool(), Certificates: []tls.Certificate{fr.User("prosecutor").Cert},
		NextProtos: []string{"http/1.1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /v1/inbox/%s/payload HTTP/1.1\r\nHost: x\r\n\r\n", b.env.BundleID)
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
	if n >= int64(len(b.payload)) {
		t.Errorf("read %d bytes of a download the gateway gave up on, want fewer than %d", n, len(b.payload))
	}

	// A recipient that reads gets the payload whole.
	c, _ := tw.client(t, "FR", "prosecutor")
	got, err := c.Download(ctx, b.env.BundleID, io.Discard)
	if err != nil || got != int64(len(b.payload)) {
		t.Fatalf("download read to its end: %d bytes, %v; want %d", got, err, len(b.payload))
	}
	if err := <-ended; err != nil {
		t.Errorf("a download read to its end ended with %v", err)
	}
}
