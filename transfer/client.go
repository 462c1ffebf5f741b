package transfer

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"evx/crypto"

	"github.com/quic-go/quic-go"
	"go.uber.org/zap"
)

// Peer is a gateway this one delivers to.
type Peer struct {
	ID      string
	Address string // UDP host:port
	CA      *x509.CertPool
	// SigningKey is the peer gateway's public signing key, which verifies
	// its receipts and directory.
	SigningKey string
}

// Client delivers bundles to peer gateways, keeping one connection per peer.
type Client struct {
	id    string
	cert  tls.Certificate
	log   *zap.Logger
	now   func() time.Time
	mu    sync.Mutex
	conns map[string]*quic.Conn
}

// NewClient returns a client for gateway id presenting cert.
func NewClient(id string, cert tls.Certificate, log *zap.Logger) *Client {
	return &Client{id: id, cert: cert, log: log.Named("transfer"), now: time.Now, conns: map[string]*quic.Conn{}}
}

// conn returns an open connection to peer, dialling if needed.
func (c *Client) conn(ctx context.Context, p Peer) (*quic.Conn, error) {
	c.mu.Lock()
	conn := c.conns[p.ID]
	c.mu.Unlock()
	if conn != nil && conn.Context().Err() == nil {
		return conn, nil
	}
	tlsConf := clientTLS(c.cert, p.ID, p.CA, c.now, func(err error) { logRefusal(c.log.With(zap.String("peer", p.ID)), err) })
	conn, err := quic.DialAddr(ctx, p.Address, tlsConf, quicConfig())
	if err != nil {
		return nil, fmt.Errorf("connecting to gateway %s at %s: %w", p.ID, p.Address, err)
	}
	c.mu.Lock()
	if old := c.conns[p.ID]; old != nil && old.Context().Err() == nil {
		// Another caller connected meanwhile; keep one connection.
		c.mu.Unlock()
		conn.CloseWithError(0, "duplicate connection")
		return old, nil
	}
	c.conns[p.ID] = conn
	c.mu.Unlock()
	return conn, nil
}

// Close closes every peer connection.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, conn := range c.conns {
		conn.CloseWithError(0, "closing")
		delete(c.conns, id)
	}
	return nil
}

// Delivery is the outcome of a successful Send.
type Delivery struct {
	Receipt *crypto.Signed
	// Duplicate reports that the peer already had the bundle and returned
	// its original receipt.
	Duplicate bool
}

// Send offers a bundle to peer and, if accepted, streams its payload (of
// the envelope's declared size) from payload. It returns the peer's receipt,
// verified against the peer's signing key, or a *Rejection.
func (c *Client) Send(ctx context.Context, p Peer, envJSON, sig []byte, payload io.ReaderAt) (*Delivery, error) {
	env, err := crypto.ParseEnvelope(envJSON)
	if err != nil {
		return nil, err
	}
	conn, err := c.conn(ctx, p)
	if err != nil {
		return nil, err
	}
	str, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, fmt.Errorf("opening a stream to %s: %w", p.ID, err)
	}
	defer str.CancelRead(0)
	stop := context.AfterFunc(ctx, func() { str.CancelWrite(0); str.CancelRead(0) })
	defer stop()

	if err := writeFrame(str, frameOffer, offerFrame{Envelope: envJSON, Signature: sig}); err != nil {
		return nil, fmt.Errorf("sending offer to %s: %w", p.ID, err)
	}
	str.SetReadDeadline(time.Now().Add(stallTimeout))
	typ, body, err := readFrame(str, MaxFrameSize)
	if err != nil {
		return nil, fmt.Errorf("reading %s's answer to the offer: %w", p.ID, err)
	}
	duplicate := false
	switch typ {
	case frameAccept:
		var a acceptFrame
		if err := unmarshalStrict(body, &a); err != nil {
			return nil, err
		}
		if a.Offset < 0 || a.Offset > env.PayloadSize {
			return nil, fmt.Errorf("%s asked to resume at offset %d of %d", p.ID, a.Offset, env.PayloadSize)
		}
		sent, err := io.Copy(stallWriter{str}, io.NewSectionReader(payload, a.Offset, env.PayloadSize-a.Offset))
		if err != nil {
			// The receiver may have stopped reading to reject: its
			// reason is worth more than the write error.
			if rej := c.readRejection(str); rej != nil {
				return nil, rej
			}
			return nil, fmt.Errorf("sending payload to %s after %d bytes: %w", p.ID, sent, err)
		}
		if err := str.Close(); err != nil {
			return nil, err
		}
	case frameReceipt:
		duplicate = true
	case frameReject:
		return nil, decodeRejection(body)
	default:
		return nil, fmt.Errorf("%w: unexpected frame type %d in answer to offer", errMalformedFrame, typ)
	}
	var rf receiptFrame
	if duplicate {
		err = unmarshalStrict(body, &rf)
	} else {
		// Storing a large payload may take a while after the last byte.
		str.SetReadDeadline(time.Now().Add(10 * stallTimeout))
		err = decodeFrame(str, frameReceipt, &rf)
	}
	if err != nil {
		return nil, err
	}
	r, err := crypto.VerifyReceipt(rf.Receipt, p.SigningKey)
	if err != nil {
		return nil, fmt.Errorf("receipt from %s: %w", p.ID, err)
	}
	want := crypto.NewReceipt(env, c.id, p.ID, time.Time{})
	if r.BundleID != want.BundleID || r.PayloadSHA256 != want.PayloadSHA256 || r.Sender != c.id || r.Receiver != p.ID {
		return nil, fmt.Errorf("receipt from %s does not match the bundle sent", p.ID)
	}
	return &Delivery{Receipt: rf.Receipt, Duplicate: duplicate}, nil
}

func (c *Client) readRejection(str *quic.Stream) *Rejection {
	str.SetReadDeadline(time.Now().Add(5 * time.Second))
	typ, body, err := readFrame(str, MaxFrameSize)
	if err != nil || typ != frameReject {
		return nil
	}
	var rej *Rejection
	if errors.As(decodeRejection(body), &rej) {
		return rej
	}
	return nil
}

func decodeRejection(body []byte) error {
	var rf rejectFrame
	if err := unmarshalStrict(body, &rf); err != nil {
		return err
	}
	return &Rejection{Code: rf.Code, Reason: rf.Reason}
}

// FetchDirectory asks peer for its signed unit directory and verifies it.
func (c *Client) FetchDirectory(ctx context.Context, p Peer) (*crypto.Directory, error) {
	conn, err := c.conn(ctx, p)
	if err != nil {
		return nil, err
	}
	str, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, err
	}
	defer str.CancelRead(0)
	if err := writeFrame(str, frameDirectoryRequest, struct{}{}); err != nil {
		return nil, err
	}
	str.Close()
	str.SetReadDeadline(time.Now().Add(stallTimeout))
	var df directoryFrame
	if err := decodeFrame(str, frameDirectory, &df); err != nil {
		return nil, fmt.Errorf("directory of %s: %w", p.ID, err)
	}
	return crypto.VerifyDirectory(df.Directory, p.SigningKey, p.ID)
}

// stallWriter fails a write that makes no progress for stallTimeout, so that
// a receiver that stops reading cannot hold a delivery forever while
// keep-alives hold the connection open.
type stallWriter struct{ str *quic.Stream }

func (w stallWriter) Write(p []byte) (int, error) {
	w.str.SetWriteDeadline(time.Now().Add(stallTimeout))
	return w.str.Write(p)
}
