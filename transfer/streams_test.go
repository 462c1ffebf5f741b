package transfer

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"evx/crypto"

	"github.com/quic-go/quic-go"
	"go.uber.org/zap"
)

// More exchanges than a connection has streams (maxStreams): each one that
// did not give its stream back would leave the sender one fewer.
const manyExchanges = maxStreams + 4

// bounded returns a context for a test's exchanges: reaching its deadline
// means an exchange hung.
func bounded(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestStreamsAreGivenBack refuses, answers as duplicates, or serves
// directories on more streams than a connection has, and then delivers a
// bundle on the same connection: the receiver must have finished both
// halves of every stream, or the sender can open no more.
func TestStreamsAreGivenBack(t *testing.T) {
	w := newWorld(t)
	srv, recv, _ := startFR(t, w)
	peer := w.peerFR(srv)
	frUnit, err := crypto.GenerateUnitKey("FR/forensics")
	if err != nil {
		t.Fatal(err)
	}
	deliver := func(t *testing.T, ctx context.Context, c *Client) {
		t.Helper()
		env, sig, payload := sealed(t, w.unitDE, w.recipientFR, 100_000)
		d, err := c.Send(ctx, peer, env, sig, bytes.NewReader(payload))
		if err != nil {
			t.Fatalf("delivery after %d exchanges on the connection: %v", manyExchanges, err)
		}
		if d.Duplicate {
			t.Error("new bundle delivered as a duplicate")
		}
	}

	t.Run("refused offers", func(t *testing.T) {
		ctx := bounded(t)
		c := newTestClient(t, "DE", w.certDE)
		env, sig, _ := sealed(t, frUnit, w.recipientFR, 1000)
		for range manyExchanges {
			_, err := c.Offer(ctx, peer, env, sig)
			wantRejection(t, err, CodeSenderMismatch)
		}
		deliver(t, ctx, c)
	})
	t.Run("duplicate offers", func(t *testing.T) {
		ctx := bounded(t)
		c := newTestClient(t, "DE", w.certDE)
		env, sig, payload := sealed(t, w.unitDE, w.recipientFR, 1000)
		if _, err := c.Send(ctx, peer, env, sig, bytes.NewReader(payload)); err != nil {
			t.Fatal(err)
		}
		for range manyExchanges {
			o, err := c.Offer(ctx, peer, env, sig)
			if err != nil {
				t.Fatal(err)
			}
			if o.Delivery == nil || !o.Delivery.Duplicate {
				t.Fatalf("offer of a delivered bundle answered with %+v, want its receipt", o)
			}
		}
		deliver(t, ctx, c)
	})
	t.Run("directory requests", func(t *testing.T) {
		ctx := bounded(t)
		c := newTestClient(t, "DE", w.certDE)
		for range manyExchanges {
			if _, err := c.FetchDirectory(ctx, peer); err != nil {
				t.Fatal(err)
			}
		}
		deliver(t, ctx, c)
	})
	t.Run("directory requests ended after the answer", func(t *testing.T) {
		// The request's FIN arrives after the server has answered:
		// the server must not wait to read it to finish the stream.
		ctx := bounded(t)
		c := newTestClient(t, "DE", w.certDE)
		for range manyExchanges {
			str := rawStream(t, ctx, c, peer)
			if err := writeFrame(str, frameDirectoryRequest, struct{}{}); err != nil {
				t.Fatal(err)
			}
			var df directoryFrame
			if err := decodeFrame(str, frameDirectory, &df); err != nil {
				t.Fatal(err)
			}
			str.Close()
			str.CancelRead(0)
		}
		deliver(t, ctx, c)
	})
	t.Run("malformed first frames", func(t *testing.T) {
		ctx := bounded(t)
		c := newTestClient(t, "DE", w.certDE)
		for range manyExchanges {
			str := rawStream(t, ctx, c, peer)
			str.Write(append([]byte{99, 0, 0, 0, 2}, "{}"...))
			var rf receiptFrame
			wantRejection(t, decodeFrame(str, frameReceipt, &rf), CodeMalformed)
			str.Close()
			str.CancelRead(0)
		}
		deliver(t, ctx, c)
	})
	if n := recv.count(); n != 6 {
		t.Errorf("%d bundles stored, want 6", n)
	}
}

// gateReceiver blocks every Receive until its context ends and then until
// released, counting the calls still running.
type gateReceiver struct {
	entered  chan struct{}
	stopping chan struct{}
	release  chan struct{}
	running  atomic.Int32
}

func newGateReceiver(n int) *gateReceiver {
	return &gateReceiver{entered: make(chan struct{}, n), stopping: make(chan struct{}, n), release: make(chan struct{})}
}

func (g *gateReceiver) Receive(ctx context.Context, peer string, o *Offer, accept func(int64) (io.Reader, error)) (*crypto.Signed, error) {
	g.running.Add(1)
	defer g.running.Add(-1)
	g.entered <- struct{}{}
	<-ctx.Done()
	g.stopping <- struct{}{}
	<-g.release
	return nil, Reject(CodeUnavailable, "shutting down")
}

func (g *gateReceiver) Directory(ctx context.Context, peer string) (*crypto.Signed, error) {
	return nil, Reject(CodeInternal, "no directory")
}

// TestCloseWaitsForHandlers closes a server while its receiver is busy with
// offers: Close must end their contexts and return only once every
// Receive has returned.
func TestCloseWaitsForHandlers(t *testing.T) {
	for _, cancelServe := range []bool{false, true} {
		name := "Close alone"
		if cancelServe {
			name = "Serve's context canceled, then Close"
		}
		t.Run(name, func(t *testing.T) {
			w := newWorld(t)
			const offers = 3
			recv := newGateReceiver(offers)
			srv, err := Listen("127.0.0.1:0", ServerConfig{ID: "FR", Certificate: w.certFR,
				PeerCAs: map[string]*x509.CertPool{"DE": w.poolDE}, Receiver: recv, Logger: zap.NewNop()})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			served := make(chan error, 1)
			go func() { served <- srv.Serve(ctx) }()
			released := false
			t.Cleanup(func() {
				// Only reached with Close still running if the test
				// failed: let everything end.
				if !released {
					close(recv.release)
				}
				cancel()
				srv.Close()
				<-served
			})

			c := newTestClient(t, "DE", w.certDE)
			env, sig, _ := sealed(t, w.unitDE, w.recipientFR, 1000)
			var senders sync.WaitGroup
			for range offers {
				senders.Go(func() { c.Offer(bounded(t), w.peerFR(srv), env, sig) })
			}
			for range offers {
				<-recv.entered
			}
			if cancelServe {
				cancel()
				for range offers {
					<-recv.stopping
				}
			}
			closed := make(chan struct{})
			go func() { srv.Close(); close(closed) }()
			if !cancelServe {
				for range offers {
					select {
					case <-recv.stopping:
					case <-closed:
						t.Fatal("Close returned without ending the receiver's context, while Receive was running")
					}
				}
			}
			select {
			case <-closed:
				t.Fatalf("Close returned while %d Receive calls were running", recv.running.Load())
			default:
			}
			released = true
			close(recv.release)
			<-closed
			if n := recv.running.Load(); n != 0 {
				t.Errorf("%d Receive calls still running after Close returned", n)
			}
			senders.Wait()
		})
	}
}

// TestOpeningAStreamIsBounded talks to a peer that allows no stream at all:
// every exchange must fail once the open timeout has passed, with an error
// that says so, rather than wait for a stream that never comes.
func TestOpeningAStreamIsBounded(t *testing.T) {
	w := newWorld(t)
	conf := quicConfig()
	conf.MaxIncomingStreams = -1
	ln, err := quic.ListenAddr("127.0.0.1:0", serverTLS(w.certFR, map[string]*x509.CertPool{"DE": w.poolDE}, time.Now, func(net.Addr, error) {}), conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	peer := Peer{ID: "FR", Address: ln.Addr().String(), CA: w.poolFR, SigningKey: w.signFR.Public()}
	env, sig, payload := sealed(t, w.unitDE, w.recipientFR, 1000)
	c := newTestClient(t, "DE", w.certDE)
	c.wait.open = 100 * time.Millisecond
	ctx := bounded(t)
	for name, exchange := range map[string]func() error{
		"offer":     func() error { _, err := c.Offer(ctx, peer, env, sig); return err },
		"send":      func() error { _, err := c.Send(ctx, peer, env, sig, bytes.NewReader(payload)); return err },
		"directory": func() error { _, err := c.FetchDirectory(ctx, peer); return err },
	} {
		err := exchange()
		if ctx.Err() != nil {
			t.Fatalf("%s: still waiting for a stream after the test's deadline: %v", name, err)
		}
		if !errors.Is(err, errNoStream) || !strings.HasPrefix(err.Error(), "opening a stream to FR: the peer allowed no new stream within 100ms") {
			t.Errorf("%s: err = %v, want the open timeout", name, err)
		}
	}
}

// stuckReceiver takes an offer as far as its stage and then waits for its
// context to end; it never serves a directory, a cosignature or a proof.
type stuckReceiver struct{ stage string }

func (r stuckReceiver) Receive(ctx context.Context, peer string, o *Offer, accept func(int64) (io.Reader, error)) (*crypto.Signed, error) {
	switch r.stage {
	case "accepted":
		if _, err := accept(0); err != nil {
			return nil, err
		}
	case "read":
		p, err := accept(0)
		if err != nil {
			return nil, err
		}
		if _, err := io.Copy(io.Discard, p); err != nil {
			return nil, err
		}
	}
	<-ctx.Done()
	return nil, ctx.Err()
}

func (r stuckReceiver) Directory(ctx context.Context, peer string) (*crypto.Signed, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func (r stuckReceiver) Cosign(ctx context.Context, peer string, req *WitnessRequest) ([]byte, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func (r stuckReceiver) Prove(ctx context.Context, peer string, req *ProofRequest) (*ProofResponse, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

// TestSilentPeer meets a peer that stops answering at each step of an
// exchange: each must end with a deadline error, and none may wait for the
// caller's context.
func TestSilentPeer(t *testing.T) {
	w := newWorld(t)
	// Larger than the initial stream window, so that a peer that does
	// not read stalls the sender.
	env, sig, payload := sealed(t, w.unitDE, w.recipientFR, 8<<20)
	tests := []struct {
		stage    string
		exchange func(context.Context, *Client, Peer) error
	}{
		{"offered", func(ctx context.Context, c *Client, p Peer) error {
			_, err := c.Offer(ctx, p, env, sig)
			return err
		}},
		{"accepted", func(ctx context.Context, c *Client, p Peer) error {
			_, err := c.Send(ctx, p, env, sig, bytes.NewReader(payload))
			return err
		}},
		{"read", func(ctx context.Context, c *Client, p Peer) error {
			_, err := c.Send(ctx, p, env, sig, bytes.NewReader(payload))
			return err
		}},
		{"directory", func(ctx context.Context, c *Client, p Peer) error {
			_, err := c.FetchDirectory(ctx, p)
			return err
		}},
		{"witness", func(ctx context.Context, c *Client, p Peer) error {
			_, err := c.Witness(ctx, p, WitnessRequest{Checkpoint: []byte("x")})
			return err
		}},
		{"proof", func(ctx context.Context, c *Client, p Peer) error {
			_, err := c.Prove(ctx, p, ProofRequest{LeafHash: make([]byte, HashSize)})
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.stage, func(t *testing.T) {
			srv := serve(t, ServerConfig{ID: "FR", Certificate: w.certFR,
				PeerCAs: map[string]*x509.CertPool{"DE": w.poolDE}, Receiver: stuckReceiver{tt.stage}, Logger: zap.NewNop()})
			c := newTestClient(t, "DE", w.certDE)
			c.wait.stall, c.wait.result, c.wait.rejection = 200*time.Millisecond, 200*time.Millisecond, 100*time.Millisecond
			ctx := bounded(t)
			err := tt.exchange(ctx, c, w.peerFR(srv))
			if ctx.Err() != nil {
				t.Fatalf("still waiting after the test's deadline: %v", err)
			}
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("err = %v, want a deadline error", err)
			}
		})
	}
}
