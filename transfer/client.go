package transfer

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
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
	// LogKey and WitnessKey are the verifier keys of the peer's transfer
	// log (docs/audit.md): of its checkpoints, and of the cosignatures it
	// makes of this gateway's. transfer carries the log's exchanges as
	// opaque bytes; the gateway checks them with these.
	LogKey, WitnessKey string
}

// Client delivers bundles to peer gateways, keeping one connection per peer.
// Every network step of its exchanges has a deadline, so that a peer that
// stops answering costs an error, never a wait without end.
type Client struct {
	id    string
	cert  tls.Certificate
	log   *zap.Logger
	now   func() time.Time
	wait  timeouts
	mu    sync.Mutex
	conns map[string]*quic.Conn
}

// timeouts bound the steps of a Client's exchanges; tests shorten them.
type timeouts struct {
	dial      time.Duration // resolving the peer's address and the handshake
	open      time.Duration // the peer allowing one more stream
	stall     time.Duration // each write, and the answer to an offer or a directory request
	result    time.Duration // the result after the payload's last byte
	rejection time.Duration // the REJECT after a failed payload write
}

func defaultTimeouts() timeouts {
	return timeouts{dial: dialTimeout, open: openStreamTimeout, stall: stallTimeout, result: resultTimeout, rejection: rejectionTimeout}
}

// NewClient returns a client for gateway id presenting cert.
func NewClient(id string, cert tls.Certificate, log *zap.Logger) *Client {
	return &Client{id: id, cert: cert, log: log.Named("transfer"), now: time.Now, wait: defaultTimeouts(), conns: map[string]*quic.Conn{}}
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
	// The connection outlives this context: quic-go uses it for the
	// handshake only.
	dctx, cancel := context.WithTimeout(ctx, c.wait.dial)
	defer cancel()
	addr, err := resolveUDP(dctx, p.Address)
	if err != nil {
		return nil, fmt.Errorf("connecting to gateway %s at %s: %w", p.ID, p.Address, err)
	}
	conn, err = quic.DialAddr(dctx, addr, tlsConf, quicConfig())
	if err != nil {
		return nil, fmt.Errorf("connecting to gateway %s at %s: %w", p.ID, p.Address, refusedByPeer(p.ID, err))
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

// resolveUDP resolves addr's host under ctx: quic.DialAddr would resolve
// it without a deadline. It picks the address net.ResolveUDPAddr would:
// the first IPv4 one, else the first.
func resolveUDP(ctx context.Context, addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	if _, err := netip.ParseAddr(host); err == nil || host == "" {
		return addr, nil
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return "", err
	}
	if len(ips) == 0 {
		return "", fmt.Errorf("no address for %q", host)
	}
	ip := ips[0]
	for _, a := range ips {
		if a.Unmap().Is4() {
			ip = a.Unmap()
			break
		}
	}
	return net.JoinHostPort(ip.String(), port), nil
}

// errNoStream is wrapped by the error of an exchange that could not start
// because the peer allowed no new stream in time.
var errNoStream = errors.New("the peer allowed no new stream")

// openStream opens a stream to p, waiting at most c.wait.open for the
// peer to allow one: a peer allows maxStreams at a time and gets each back
// only when both of its halves are finished.
func (c *Client) openStream(ctx context.Context, conn *quic.Conn, p Peer) (*quic.Stream, error) {
	octx, cancel := context.WithTimeoutCause(ctx, c.wait.open, errNoStream)
	defer cancel()
	str, err := conn.OpenStreamSync(octx)
	if err != nil {
		if ctx.Err() == nil && errors.Is(context.Cause(octx), errNoStream) {
			return nil, fmt.Errorf("opening a stream to %s: %w within %v (all it allows may be in use)", p.ID, errNoStream, c.wait.open)
		}
		return nil, fmt.Errorf("opening a stream to %s: %w", p.ID, err)
	}
	return str, nil
}

// Connect makes sure that a connection to peer is open, dialling if
// needed, so that a caller can give reaching the peer a shorter deadline
// than the transfer that follows.
func (c *Client) Connect(ctx context.Context, p Peer) error {
	_, err := c.conn(ctx, p)
	return err
}

// ClosePeer closes the connection to peer id, if one is open, ending the
// exchanges on it: when the peer is removed from the configuration or its
// CA changes, or to stop its transfers at once. The next exchange with it
// dials afresh; a dial already under way is not affected.
func (c *Client) ClosePeer(id string) {
	c.mu.Lock()
	conn := c.conns[id]
	delete(c.conns, id)
	c.mu.Unlock()
	if conn != nil {
		conn.CloseWithError(0, "closing")
	}
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
	// Log is the receipt's promise of an entry in the peer's transfer
	// log, for the caller to ask for its inclusion proof (Client.Prove);
	// nil for a version 1 receipt, which makes none.
	Log *crypto.ReceiptLog
}

// Send offers a bundle to peer and, if accepted, streams its payload (of
// the envelope's declared size) from payload. It returns the peer's receipt,
// verified against the peer's signing key, or a *Rejection.
func (c *Client) Send(ctx context.Context, p Peer, envJSON, sig []byte, payload io.ReaderAt) (*Delivery, error) {
	o, err := c.Offer(ctx, p, envJSON, sig)
	if err != nil {
		return nil, err
	}
	if o.Delivery != nil {
		return o.Delivery, nil
	}
	return o.Send(io.NewSectionReader(payload, o.Offset, o.env.PayloadSize-o.Offset))
}

// Outgoing is a delivery whose offer the peer has answered: either it
// already holds the bundle (Delivery is set and nothing is to be sent), or
// it accepted the offer and waits for the payload from Offset on, which
// Send streams. Abort ends a delivery that will not be sent.
type Outgoing struct {
	// Offset is where the peer asked the payload to start: 0, or the
	// bytes it already holds of an interrupted earlier transfer.
	Offset int64
	// Delivery is the peer's original receipt when it already holds the
	// bundle.
	Delivery *Delivery

	c    *Client
	peer Peer
	env  *crypto.Envelope
	str  *quic.Stream
	stop func() bool
}

// Offer sends a bundle's offer to peer and reads the answer. An error means
// that no byte of the payload was sent, so the caller may still choose
// another way to deliver the bundle; a refusal is a *Rejection. Unless the
// returned Outgoing holds a Delivery, the caller must call Send or Abort.
func (c *Client) Offer(ctx context.Context, p Peer, envJSON, sig []byte) (*Outgoing, error) {
	env, err := crypto.ParseEnvelope(envJSON)
	if err != nil {
		return nil, err
	}
	conn, err := c.conn(ctx, p)
	if err != nil {
		return nil, err
	}
	// A peer that refuses this gateway's certificate may say so only
	// once the handshake is over on this side (TLS 1.3 ends the client's
	// part first), when the stream is opened or the offer answered.
	str, err := c.openStream(ctx, conn, p)
	if err != nil {
		return nil, refusedByPeer(p.ID, err)
	}
	o := &Outgoing{c: c, peer: p, env: env, str: str}
	o.stop = context.AfterFunc(ctx, func() { str.CancelWrite(0); str.CancelRead(0) })
	if err := o.offer(envJSON, sig); err != nil {
		o.Abort()
		return nil, refusedByPeer(p.ID, err)
	}
	return o, nil
}

func (o *Outgoing) offer(envJSON, sig []byte) error {
	p, str, wait := o.peer, o.str, o.c.wait
	if err := writeFrame(stallWriter{str, wait.stall}, frameOffer, offerFrame{Envelope: envJSON, Signature: sig}); err != nil {
		return fmt.Errorf("sending offer to %s: %w", p.ID, err)
	}
	str.SetReadDeadline(time.Now().Add(wait.stall))
	typ, body, err := readFrame(str, MaxFrameSize)
	if err != nil {
		return fmt.Errorf("reading %s's answer to the offer: %w", p.ID, err)
	}
	switch typ {
	case frameAccept:
		var a acceptFrame
		if err := unmarshalStrict(body, &a); err != nil {
			return err
		}
		if a.Offset < 0 || a.Offset > o.env.PayloadSize {
			return fmt.Errorf("%s asked to resume at offset %d of %d", p.ID, a.Offset, o.env.PayloadSize)
		}
		o.Offset = a.Offset
		return nil
	case frameReceipt:
		var rf receiptFrame
		if err := unmarshalStrict(body, &rf); err != nil {
			return err
		}
		d, err := o.checkReceipt(rf.Receipt)
		if err != nil {
			return err
		}
		d.Duplicate = true
		o.Delivery = d
		o.Abort()
		return nil
	case frameReject:
		return decodeRejection(body, false)
	default:
		return fmt.Errorf("%w: unexpected frame type %d in answer to offer", errMalformedFrame, typ)
	}
}

// Send streams the payload from Offset to its end, read from payload, and
// returns the peer's receipt, verified against the peer's signing key, or a
// *Rejection. payload must yield exactly the bytes from Offset on: the peer
// checks them against the envelope's size and hash before it stores
// anything.
func (o *Outgoing) Send(payload io.Reader) (d *Delivery, err error) {
	defer func() {
		if err != nil {
			o.Abort()
			return
		}
		// Everything was sent and receipted: only the reading half is
		// left to release.
		o.stop()
		o.str.CancelRead(0)
	}()
	str := o.str
	if err = o.copyPayload(payload); err != nil {
		return nil, err
	}
	// Close fails if the peer stopped reading already, to refuse or
	// because it has all it wants: the answer tells which.
	str.Close()
	// Storing a large payload may take a while after the last byte.
	str.SetReadDeadline(time.Now().Add(o.c.wait.result))
	var rf receiptFrame
	if err = decodeFrame(str, frameReceipt, &rf); err != nil {
		return nil, err
	}
	return o.checkReceipt(rf.Receipt)
}

// copyPayload writes the payload from Offset on into the stream, in writes
// of up to sendBufferSize. A payload that ends early is sent as it is, for
// the peer to refuse; one whose reading fails is abandoned. Reading runs
// ahead in its own goroutine, so that reading the source (a unit's upload
// over TLS, or storage) and sending (QUIC packing and encryption) use two
// cores.
func (o *Outgoing) copyPayload(payload io.Reader) error {
	want := o.env.PayloadSize - o.Offset
	bufs := make([][]byte, sendBuffers)
	for i := range bufs {
		bufs[i] = make([]byte, min(int64(sendBufferSize), max(want, 1)))
	}
	ra := crypto.NewReadAhead(io.LimitReader(payload, want), bufs)
	defer ra.Close()
	var sent int64
	for {
		data, rerr := ra.Next()
		if len(data) > 0 {
			if _, err := (stallWriter{o.str, o.c.wait.stall}).Write(data); err != nil {
				// The receiver may have stopped reading to reject:
				// its reason is worth more than the write error.
				if rej := o.c.readRejection(o.str); rej != nil {
					return rej
				}
				return &SendError{Peer: o.peer.ID, Sent: sent, Err: err}
			}
			sent += int64(len(data))
		}
		switch {
		case rerr == io.EOF:
			return nil
		case rerr != nil:
			return &SendError{Peer: o.peer.ID, Sent: sent, Err: fmt.Errorf("reading the payload: %w", rerr)}
		}
	}
}

// sendBuffers is how many buffers of sendBufferSize a payload being sent
// holds: one being written, the others being filled.
const sendBuffers = 3

// SendError is a payload transfer that failed part-way, by the source or
// the connection: the peer has stored nothing.
type SendError struct {
	Peer string
	Sent int64 // bytes written to the stream
	Err  error
}

func (e *SendError) Error() string {
	return fmt.Sprintf("sending payload to %s after %d bytes: %v", e.Peer, e.Sent, e.Err)
}

func (e *SendError) Unwrap() error { return e.Err }

// sendBufferSize is the size of payload writes into a QUIC stream: each
// write wakes the connection's goroutine, so fewer, larger writes cost less
// CPU than io.Copy's 32 KiB, and reads from a TLS connection (16 KiB
// records) are gathered into one write.
const sendBufferSize = 256 << 10

// Abort ends the delivery without sending (more of) the payload; the peer
// discards what it received. It is safe to call more than once.
func (o *Outgoing) Abort() {
	o.stop()
	o.str.CancelWrite(0)
	o.str.CancelRead(0)
}

// checkReceipt verifies the peer's receipt and checks that it receipts
// this delivery (crypto's Receipt.CheckDelivery): the bundle, its payload,
// both gateways, and for a version 2 receipt the envelope offered, so that
// a receipt for the same id and payload under other legal metadata is not
// taken for this one. The envelope's SHA-256 is that of its canonical
// form, which are the bytes offered: ParseEnvelope takes no other. A
// version 1 receipt, which binds no envelope, is what a gateway issued
// before version 2, and a duplicate's original may be one.
func (o *Outgoing) checkReceipt(receipt *crypto.Signed) (*Delivery, error) {
	p := o.peer
	r, err := crypto.VerifyReceipt(receipt, p.SigningKey)
	if err == nil {
		err = r.CheckDelivery(o.env, o.c.id, p.ID)
	}
	if err != nil {
		return nil, fmt.Errorf("bundle %s at %s: %w", o.env.BundleID, p.ID, err)
	}
	return &Delivery{Receipt: receipt, Log: r.Log}, nil
}

func (c *Client) readRejection(str *quic.Stream) *Rejection {
	str.SetReadDeadline(time.Now().Add(c.wait.rejection))
	typ, body, err := readFrame(str, MaxFrameSize)
	if err != nil || typ != frameReject {
		return nil
	}
	var rej *Rejection
	if errors.As(decodeRejection(body, false), &rej) {
		return rej
	}
	return nil
}

// FetchDirectory asks peer for its signed unit directory and verifies it.
func (c *Client) FetchDirectory(ctx context.Context, p Peer) (*crypto.Directory, error) {
	_, d, err := c.FetchSignedDirectory(ctx, p)
	return d, err
}

// FetchSignedDirectory is FetchDirectory that also returns the signed
// document as received, so that the caller can keep it and show it to
// others, who verify it against the peer's key themselves.
func (c *Client) FetchSignedDirectory(ctx context.Context, p Peer) (*crypto.Signed, *crypto.Directory, error) {
	signed, d, err := c.fetchSignedDirectory(ctx, p)
	return signed, d, refusedByPeer(p.ID, err)
}

func (c *Client) fetchSignedDirectory(ctx context.Context, p Peer) (*crypto.Signed, *crypto.Directory, error) {
	var df directoryFrame
	if err := c.exchange(ctx, p, "unit directory", frameDirectoryRequest, struct{}{}, frameDirectory, &df); err != nil {
		return nil, nil, err
	}
	d, err := crypto.VerifyDirectory(df.Directory, p.SigningKey, p.ID)
	if err != nil {
		return nil, nil, err
	}
	return df.Directory, d, nil
}

// exchange asks p for its what: it sends one frame of type typ with body
// req on a stream of its own and decodes the answer, a frame of type want,
// into resp; a REJECT is returned as a *Rejection.
func (c *Client) exchange(ctx context.Context, p Peer, what string, typ byte, req any, want byte, resp any) error {
	conn, err := c.conn(ctx, p)
	if err != nil {
		return err
	}
	str, err := c.openStream(ctx, conn, p)
	if err != nil {
		return err
	}
	// Both halves end here, so that the peer gets the stream back: the
	// sending half with the request's FIN, or reset if the request was
	// not sent in full; the receiving half once the answer is read.
	sent := false
	stop := context.AfterFunc(ctx, func() { str.CancelWrite(0); str.CancelRead(0) })
	defer func() {
		stop()
		if !sent {
			str.CancelWrite(0)
		}
		str.CancelRead(0)
	}()
	// One deadline for the exchange: the request out, the answer in.
	str.SetDeadline(time.Now().Add(c.wait.stall))
	if err := writeFrame(str, typ, req); err != nil {
		return fmt.Errorf("asking %s for its %s: %w", p.ID, what, err)
	}
	// Close fails if the peer has read the request and stopped reading
	// already, which is no failure: the answer tells.
	str.Close()
	sent = true
	if err := decodeFrame(str, want, resp); err != nil {
		return fmt.Errorf("%s of %s: %w", what, p.ID, err)
	}
	return nil
}

// stallWriter fails a write that does not complete within its timeout, so
// that a peer that stops reading cannot hold an exchange forever while
// keep-alives hold the connection open.
type stallWriter struct {
	str     *quic.Stream
	timeout time.Duration
}

func (w stallWriter) Write(p []byte) (int, error) {
	w.str.SetWriteDeadline(time.Now().Add(w.timeout))
	return w.str.Write(p)
}
