package gateway

import (
	"context"
	"net"
	"strings"
	"testing"

	"evx/internal/devenv"
	"evx/storage"

	"go.uber.org/zap"
)

// Close releases the listeners of a gateway that never ran, so that its
// addresses can be listened on again at once; a second Close is harmless;
// Run closes a gateway as it returns.
func TestClose(t *testing.T) {
	w, err := devenv.New("DE", "FR")
	if err != nil {
		t.Fatal(err)
	}
	udp, err := devenv.FreeAddr("udp")
	if err != nil {
		t.Fatal(err)
	}
	addrs := map[string]string{"DE": udp, "FR": "127.0.0.1:9"}
	g, err := New(devOptions(w.GatewayParts("DE", addrs), "127.0.0.1:0", diskStore(t, "DE"), zap.NewNop()))
	if err != nil {
		t.Fatal(err)
	}
	api := g.APIAddr()
	if err := g.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := g.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	relisten := func() {
		t.Helper()
		l, err := net.Listen("tcp", api)
		if err != nil {
			t.Fatalf("the API address is still taken after Close: %v", err)
		}
		l.Close()
		c, err := net.ListenPacket("udp", udp)
		if err != nil {
			t.Fatalf("the peer address is still taken after Close: %v", err)
		}
		c.Close()
	}
	relisten()

	// Run with a context that is already done returns having closed.
	g, err = New(devOptions(w.GatewayParts("DE", addrs), api, diskStore(t, "DE"), zap.NewNop()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := g.Run(ctx); err != nil {
		t.Fatalf("Run: %v", err)
	}
	relisten()
}

// A maximum bundle size that storage cannot hold is refused, not lowered.
func TestNewRefusesOversizedBundles(t *testing.T) {
	w, err := devenv.New("DE", "FR")
	if err != nil {
		t.Fatal(err)
	}
	o := devOptions(w.GatewayParts("DE", map[string]string{"DE": "127.0.0.1:0", "FR": "127.0.0.1:9"}), "127.0.0.1:0", diskStore(t, "DE"), zap.NewNop())
	o.MaxBundleSize = storage.MaxObjectSize + 1
	if g, err := New(o); err == nil {
		g.Close()
		t.Fatal("New accepted a maximum bundle size over what storage holds")
	} else if !strings.Contains(err.Error(), "maximum bundle size 68719476737 is out of range") {
		t.Errorf("error %q does not say what is wrong", err)
	}
}
