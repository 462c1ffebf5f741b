package transfer

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"evx/crypto"
	"evx/internal/evxtest"

	"github.com/quic-go/quic-go"
	"go.uber.org/zap"
)

// benchSize is the bytes moved per benchmark operation: 256 MiB unless
// EVX_BENCH_SIZE_MIB says otherwise, so that one operation lasts long
// enough for the congestion window to open and the figure to mean
// throughput.
func benchSize(b *testing.B) int64 { return evxtest.BenchSize(b, 256) }

// benchPeers returns the DE and FR gateway certificates and CA pools, as
// two gateways are set up.
func benchPeers(b *testing.B) (certDE, certFR tls.Certificate, poolDE, poolFR *x509.CertPool) {
	b.Helper()
	issue := func(id string) (tls.Certificate, *x509.CertPool) {
		ca, err := crypto.NewCA(id, time.Hour)
		if err != nil {
			b.Fatal(err)
		}
		cert, err := ca.Issue(crypto.CertRequest{CommonName: "gateway " + id, URIs: []string{GatewayURI(id)}, Server: true, Client: true})
		if err != nil {
			b.Fatal(err)
		}
		p := x509.NewCertPool()
		p.AddCert(ca.Cert)
		return cert, p
	}
	certDE, poolDE = issue("DE")
	certFR, poolFR = issue("FR")
	return
}

// BenchmarkQUICStream is the ceiling for delivery between two gateways:
// one quic-go stream over real loopback UDP with exactly the TLS and QUIC
// settings of the peer transport (serverTLS, clientTLS, quicConfig), the
// sender writing as fast as the receiver drains. No framing, hashing or
// storage. Sub-benchmarks vary the size of each Write: 32 KiB is what
// io.Copy uses, 256 KiB what Outgoing.Send writes (sendBufferSize).
func BenchmarkQUICStream(b *testing.B) {
	size := benchSize(b)
	certDE, certFR, poolDE, poolFR := benchPeers(b)
	nop := func(error) {}
	ln, err := quic.ListenAddr("127.0.0.1:0", serverTLS(certFR, map[string]*x509.CertPool{"DE": poolDE}, time.Now, func(net.Addr, error) {}), quicConfig())
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	ctx := context.Background()
	received := make(chan error, 1)
	go func() {
		conn, err := ln.Accept(ctx)
		if err != nil {
			received <- err
			return
		}
		buf := make([]byte, 1<<20)
		for {
			str, err := conn.AcceptStream(ctx)
			if err != nil {
				return
			}
			_, err = io.CopyBuffer(io.Discard, struct{ io.Reader }{str}, buf)
			if err == nil {
				_, err = str.Write([]byte{1}) // the application-level acknowledgement
				str.Close()
			}
			received <- err
		}
	}()
	conn, err := quic.DialAddr(ctx, ln.Addr().String(), clientTLS(certDE, "FR", poolFR, time.Now, nop), quicConfig())
	if err != nil {
		b.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	for _, bufSize := range []int{32 << 10, 256 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("write=%dKiB", bufSize>>10), func(b *testing.B) {
			buf := make([]byte, bufSize)
			rand.Read(buf)
			b.SetBytes(size)
			before := conn.ConnectionStats()
			defer func() {
				// Loss on loopback means the receiver's socket buffer
				// overflowed: it costs retransmissions and a smaller
				// congestion window.
				after := conn.ConnectionStats()
				// PacketsLost can go down again when a packet declared
				// lost arrives after all.
				lost := max(0, int64(after.PacketsLost)-int64(before.PacketsLost))
				if sent := after.PacketsSent - before.PacketsSent; sent > 0 {
					b.ReportMetric(100*float64(lost)/float64(sent), "%lost")
				}
			}()
			for range b.N {
				str, err := conn.OpenStreamSync(ctx)
				if err != nil {
					b.Fatal(err)
				}
				for left := size; left > 0; {
					n, err := str.Write(buf[:min(left, int64(len(buf)))])
					if err != nil {
						b.Fatal(err)
					}
					left -= int64(n)
				}
				str.Close()
				// Done when the receiver has everything, not when the
				// last byte is queued.
				if _, err := io.ReadFull(str, make([]byte, 1)); err != nil {
					b.Fatal(err)
				}
				if err := <-received; err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// discardReceiver takes every offer and drains its payload through the
// verifier (size and SHA-256), storing nothing.
type discardReceiver struct{ sign *crypto.SigningKey }

func (d discardReceiver) Receive(ctx context.Context, peer string, o *Offer, accept func(int64) (io.Reader, error)) (*crypto.Signed, error) {
	r, err := accept(0)
	if err != nil {
		return nil, err
	}
	if _, err := io.Copy(io.Discard, r); err != nil {
		return nil, err
	}
	return signReceipt(d.sign, o.Envelope, peer, "FR", 0)
}

func (d discardReceiver) Directory(ctx context.Context, peer string) (*crypto.Signed, error) {
	return nil, Reject(CodeInternal, "no directory")
}

// BenchmarkSend is protocol v1 on top of BenchmarkQUICStream: Client.Send
// of a sealed payload from a file to a Server whose receiver verifies size
// and hash and discards the bytes. The receiver keeps nothing, so every
// operation is a first offer of the same bundle.
func BenchmarkSend(b *testing.B) {
	size := benchSize(b)
	certDE, certFR, poolDE, poolFR := benchPeers(b)
	signFR, err := crypto.GenerateSigningKey()
	if err != nil {
		b.Fatal(err)
	}
	unitDE, err := crypto.GenerateUnitKey("DE/forensics")
	if err != nil {
		b.Fatal(err)
	}
	recipientFR, err := crypto.GenerateUnitKey("FR/prosecutor")
	if err != nil {
		b.Fatal(err)
	}
	envJSON, sig, payload := sealedFile(b, unitDE, recipientFR, size)
	defer payload.Close()
	srv, err := Listen("127.0.0.1:0", ServerConfig{ID: "FR", Certificate: certFR,
		PeerCAs: map[string]*x509.CertPool{"DE": poolDE}, Receiver: discardReceiver{signFR}, Logger: zap.NewNop()})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go srv.Serve(ctx)
	defer srv.Close()
	c := NewClient("DE", certDE, zap.NewNop())
	defer c.Close()
	peer := Peer{ID: "FR", Address: srv.Addr(), CA: poolFR, SigningKey: signFR.Public()}
	info, err := payload.Stat()
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(info.Size())
	b.ResetTimer()
	for range b.N {
		if _, err := c.Send(ctx, peer, envJSON, sig, payload); err != nil {
			b.Fatal(err)
		}
	}
}

// sealedFile seals size random bytes and returns the envelope, signature
// and the payload in a temporary file, as a gateway holds it on disk.
func sealedFile(b *testing.B, sender, to *crypto.UnitKey, size int64) ([]byte, []byte, *os.File) {
	b.Helper()
	files := evxtest.Evidence(b, size)
	bundle, err := os.Create(filepath.Join(b.TempDir(), "bundle.evx"))
	if err != nil {
		b.Fatal(err)
	}
	defer bundle.Close()
	opts := evxtest.SealOptions()
	opts.Sender, opts.Recipients = sender, []crypto.PublicKey{to.Public()}
	if _, err := crypto.Seal(context.Background(), bundle, files, opts); err != nil {
		b.Fatal(err)
	}
	info, err := bundle.Stat()
	if err != nil {
		b.Fatal(err)
	}
	bd, err := crypto.ReadBundle(bundle, info.Size())
	if err != nil {
		b.Fatal(err)
	}
	payload, err := os.Create(filepath.Join(b.TempDir(), "payload.age"))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.Copy(payload, bd.Payload()); err != nil {
		b.Fatal(err)
	}
	os.Remove(files[0].OSPath)
	os.Remove(bundle.Name())
	return bd.EnvelopeJSON, bd.Signature, payload
}
