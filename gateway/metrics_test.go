package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"evx/api"
	"evx/client"
	"evx/crypto"
	"evx/internal/devenv"
	"evx/internal/evxtest"
	"evx/transfer"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
)

// inventingPeer is FR as a hostile peer sees it: it serves FR's directory
// and refuses every offer with a code of its own invention.
type inventingPeer struct{ dir *crypto.Signed }

func (p inventingPeer) Receive(context.Context, string, *transfer.Offer, func(int64) (io.Reader, error)) (*crypto.Signed, error) {
	return nil, transfer.Reject("made-up-\x1b[2J", "no")
}

func (p inventingPeer) Directory(context.Context, string) (*crypto.Signed, error) { return p.dir, nil }

// A peer's refusal code is a metric label only if protocol v1 defines it:
// a code a peer makes up is counted as "other", so that a peer cannot add
// label values at will.
func TestRefusalCodeLabels(t *testing.T) {
	w, err := devenv.New("DE", "FR")
	if err != nil {
		t.Fatal(err)
	}
	fr := w.Country("FR")
	var frDir crypto.Directory
	frDir.Format, frDir.Gateway, frDir.Issued = crypto.DirectoryFormat, "FR", time.Now().UTC().Format(time.RFC3339)
	p := fr.User("prosecutor")
	frDir.Units = []crypto.DirectoryEntry{{Unit: p.Unit, Role: string(api.RoleRecipient), AgeRecipient: p.Key.Public().AgeRecipient}}
	signed, err := fr.Signing.Signer().SignDirectory(frDir)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := transfer.Listen("127.0.0.1:0", transfer.ServerConfig{ID: "FR", Certificate: fr.Cert,
		PeerCAs: map[string]*x509.CertPool{"DE": w.Country("DE").CAPool()}, Receiver: inventingPeer{signed}, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go srv.Serve(ctx)
	defer srv.Close()

	deAddr, err := devenv.FreeAddr("udp")
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(devOptions(w.GatewayParts("DE", map[string]string{"DE": deAddr, "FR": srv.Addr()}), "127.0.0.1:0", diskStore(t, "DE"), zap.NewNop()))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	de := w.Country("DE")
	c := client.New("https://"+g.APIAddr(), de.User("forensics").Cert, &tls.Config{RootCAs: de.CAPool()})
	b := evxtest.Seal(t, de.User("forensics").Key, []crypto.PublicKey{{Unit: p.Unit, AgeRecipient: p.Key.Public().AgeRecipient}}, 1000)
	if _, err := upload(ctx, c, b); err != nil {
		t.Fatal(err)
	}
	st, err := client.WaitDelivered(ctx, c, b.Env.BundleID, 30*time.Second)
	var refused *client.RefusedError
	if !errors.As(err, &refused) || st.Refusal == nil {
		t.Fatalf("delivery to a peer refusing everything: %+v, %v; want refused", st, err)
	}
	// The refusal is stored before the delivery ends, and counted before.
	if n := testutil.ToFloat64(g.metrics.refusals.WithLabelValues("delivery", "other")); n != 1 {
		t.Errorf("refusals counted as other: %v, want 1", n)
	}
	if n := testutil.CollectAndCount(g.metrics.refusals); n != 1 {
		t.Errorf("%d refusal series, want only the one labelled other", n)
	}
}

// docs/metrics.md lists every metric the gateway exports, with its type
// and labels, and nothing else.
func TestMetricsDoc(t *testing.T) {
	doc, err := os.ReadFile("../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| `(evx_[a-z_]+)` \\| ([a-z]+) \\| ([^|]*) \\|")
	documented := map[string]string{}
	for _, m := range row.FindAllStringSubmatch(string(doc), -1) {
		var labels []string
		for _, l := range regexp.MustCompile("`([a-z_]+)`").FindAllStringSubmatch(m[3], -1) {
			labels = append(labels, l[1])
		}
		documented[m[1]] = m[2] + " " + strings.Join(labels, ",")
	}
	exported := map[string]string{}
	desc := regexp.MustCompile(`fqName: "([^"]+)".*variableLabels: \{([^}]*)\}`)
	for _, c := range newMetrics().collectors() {
		var typ string
		switch c.(type) {
		// A Gauge has the methods of a Counter too: it is asked first.
		case *prometheus.GaugeVec, prometheus.Gauge:
			typ = "gauge"
		case *prometheus.CounterVec, prometheus.Counter:
			typ = "counter"
		case *prometheus.HistogramVec, prometheus.Histogram:
			typ = "histogram"
		default:
			t.Fatalf("collector of type %T", c)
		}
		ch := make(chan *prometheus.Desc, 1)
		c.Describe(ch)
		m := desc.FindStringSubmatch((<-ch).String())
		exported[m[1]] = typ + " " + m[2]
	}
	for name, want := range exported {
		if got := documented[name]; got != want {
			t.Errorf("docs/metrics.md has %s as %q, the gateway exports %q", name, got, want)
		}
	}
	for name := range documented {
		if _, ok := exported[name]; !ok {
			t.Errorf("docs/metrics.md lists %s, which the gateway does not export", name)
		}
	}
}
