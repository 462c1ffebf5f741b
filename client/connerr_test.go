package client_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"evx/client"
	"evx/crypto"
)

// A certificate refused in the TLS handshake is reported with the side
// that refused it, the file it came from, and that the gateway was
// reached; an unreachable gateway is a temporary condition.
func TestConnErrors(t *testing.T) {
	w := startWorld(t)
	ctx := context.Background()
	de := w.Dev.Country("DE")
	forensics := de.User("forensics")

	t.Run("accepted", func(t *testing.T) {
		certFile, keyFile, caFile := w.files(t, "DE", forensics.Cert)
		c, err := client.Load(w.URL("DE"), certFile, keyFile, caFile)
		if err != nil {
			t.Fatal(err)
		}
		conn, err := c.Check(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if conn.WhoAmI.Unit != "DE/forensics" || conn.WhoAmI.Role != "submitter" || conn.WhoAmI.Gateway != "DE" ||
			len(conn.GatewayCert.URIs) != 1 || conn.GatewayCert.URIs[0].String() != "evx://gateway/DE" {
			t.Errorf("check: %+v, gateway certificate %v", conn.WhoAmI, conn.GatewayCert.URIs)
		}
		if !c.Certificate().Equal(forensics.Cert.Leaf) {
			t.Error("Certificate is not the client certificate")
		}
	})

	expired, err := de.CA.Issue(crypto.CertRequest{CommonName: "DE/forensics", URIs: []string{crypto.UnitURI("DE/forensics")}, Client: true,
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := w.Dev.Country("FR").CA.Issue(crypto.CertRequest{CommonName: "DE/forensics", URIs: []string{crypto.UnitURI("DE/forensics")}, Client: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		cert      func() (certFile, keyFile, caFile string)
		side      client.Side
		alert     string
		wantTexts []string
	}{
		{
			name:  "client certificate from another CA",
			cert:  func() (string, string, string) { return w.files(t, "DE", foreign) },
			side:  client.RefusedByGateway,
			alert: "unknown_ca",
			wantTexts: []string{"was reached, but refused the client certificate in ", "cert.pem",
				"(TLS alert unknown_ca from the gateway)", "not issued by the CA the gateway trusts"},
		},
		{
			name:  "expired client certificate",
			cert:  func() (string, string, string) { return w.files(t, "DE", expired) },
			side:  client.RefusedByGateway,
			alert: "certificate_expired",
			wantTexts: []string{"was reached, but refused the client certificate in ", "cert.pem",
				"(TLS alert certificate_expired from the gateway)", "it was valid until " + expired.Leaf.NotAfter.UTC().Format(time.RFC3339)},
		},
		{
			name: "gateway certificate from another CA",
			cert: func() (string, string, string) {
				certFile, keyFile, _ := w.files(t, "DE", forensics.Cert)
				_, _, frCA := w.files(t, "FR", forensics.Cert)
				return certFile, keyFile, frCA
			},
			side:      client.RefusedByClient,
			wantTexts: []string{"was reached, but its certificate failed verification on this side against the CA in ", "ca.pem", "not issued by that CA"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			certFile, keyFile, caFile := tc.cert()
			c, err := client.Load(w.URL("DE"), certFile, keyFile, caFile)
			if err != nil {
				t.Fatal(err)
			}
			// Every request reports it so, not only Check.
			_, err = c.Inbox(ctx)
			var ce *client.ConnError
			if !errors.As(err, &ce) || ce.Refused != tc.side || ce.Alert != tc.alert || ce.Temporary() {
				t.Fatalf("inbox: %#v; want refused by the %s with alert %q", err, tc.side, tc.alert)
			}
			for _, want := range append(tc.wantTexts, w.URL("DE")) {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q lacks %q", err, want)
				}
			}
			if _, err := c.Check(ctx); !errors.As(err, &ce) || ce.Refused != tc.side {
				t.Errorf("check: %v", err)
			}
		})
	}

	t.Run("unreachable", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		c := client.New("https://"+addr, forensics.Cert, nil)
		_, err = c.Check(ctx)
		var ce *client.ConnError
		if !errors.As(err, &ce) || ce.Refused != "" || !ce.Temporary() || !strings.HasPrefix(err.Error(), "cannot reach the gateway at https://"+addr+": ") {
			t.Errorf("check of a closed port: %v", err)
		}
	})
}
