package transfer

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"evx/crypto"

	"github.com/quic-go/quic-go"
	"go.uber.org/zap"
)

// Offer is a bundle offered by an authenticated peer gateway.
type Offer struct {
	Envelope     *crypto.Envelope
	EnvelopeJSON []byte
	Signature    []byte
}

// Receiver decides on and stores the bundles peers offer. It is implemented
// by the gateway, which may also implement LogPeer to witness its peers'
// logs and prove inclusion in its own, and AgreementPeer to exchange
// summaries of its agreements with them.
type Receiver interface {
	// Receive is called for each offer from peer, whose identity the TLS
	// handshake established and whose envelope signature verified. To take
	// the bundle it calls accept once with the offset to resume from and
	// reads the payload from the returned reader: the reader returns
	// io.EOF only after exactly the remaining declared bytes, with the
	// SHA-256 of the whole payload matching the envelope; otherwise it
	// returns a *Rejection error, and nothing read must be kept. Receive
	// returns the receiving gateway's signed receipt once the bundle is
	// durably stored, or a *Rejection to refuse. A receipt returned without
	// calling accept answers a duplicate offer.
	Receive(ctx context.Context, peer string, o *Offer, accept func(offset int64) (io.Reader, error)) (*crypto.Signed, error)
	// Directory returns this gateway's signed unit directory for peer.
	Directory(ctx context.Context, peer string) (*crypto.Signed, error)
}

// ServerConfig configures a peer listener.
type ServerConfig struct {
	// ID is this gateway's id.
	ID string
	// Certificate is this gateway's certificate, issued by its country's
	// CA with the URI SAN GatewayURI(ID) and both client and server
	// authentication usages.
	Certificate tls.Certificate
	// PeerCAs maps each peer gateway id to the pool of its country's CA;
	// SetPeerCAs replaces it.
	PeerCAs  map[string]*x509.CertPool
	Receiver Receiver
	// Recalls, if set, takes the peers' recall requests (RECALL); a
	// server without it refuses them with not-accepted.
	Recalls RecallReceiver
	Logger  *zap.Logger
	// Now defaults to time.Now; tests set it to check expiry.
	Now func() time.Time
	// OnRefuse, if set, is called for every refusal with its stage and
	// category, and for a handshake the address it came from (nil for
	// the other stages, whose peer its certificate named): "handshake" and a
	// HandshakeError reason; or "offer", "witness", "proof", "agreement" or
	// "recall" and the rejection code of an offer (or of a first frame that
	// begins no other exchange, or a directory request), a witness
	// request, a proof request, an agreement notice or a recall. The gateway counts them in
	// its metrics and sums them up in its transfer log.
	OnRefuse func(stage, code string, remote net.Addr)
}

// Server accepts connections from peer gateways.
type Server struct {
	cfg ServerConfig
	udp *net.UDPConn
	tr  *quic.Transport
	ln  *quic.Listener
	log *zap.Logger
	// refusals logs refused handshakes; Close flushes it.
	refusals *refusalLog
	// peerCAs holds the peers accepted now, and each one's CA: those of
	// ServerConfig.PeerCAs, until SetPeerCAs replaces them. The map is
	// never changed, only replaced.
	peerCAs *atomic.Pointer[map[string]*x509.CertPool]

	// closing is canceled by Close, ending the context of every handler
	// whatever the context given to Serve.
	closing context.Context
	stopAll context.CancelFunc
	mu      sync.Mutex
	closed  bool
	conns   map[*quic.Conn]bool
	// handlers counts the goroutines serving connections and streams:
	// Close returns only once they all have, so that nothing a Receiver
	// does outlives the server.
	handlers sync.WaitGroup
}

// Listen starts listening on addr (UDP host:port).
func Listen(addr string, cfg ServerConfig) (*Server, error) {
	return listen(addr, cfg, listenOptions{})
}

// listenOptions are what tests change of a server; zero values mean the
// defaults.
type listenOptions struct {
	refusalWindow     time.Duration
	maxRefusalSources int
	// schedule runs f after d, like time.AfterFunc, and returns what
	// cancels it.
	schedule func(d time.Duration, f func()) (stop func() bool)
}

func listen(addr string, cfg ServerConfig, o listenOptions) (*Server, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger.Named("transfer")
	if cfg.OnRefuse == nil {
		cfg.OnRefuse = func(string, string, net.Addr) {}
	}
	refusals := newRefusalLog(log, o)
	peerCAs := new(atomic.Pointer[map[string]*x509.CertPool])
	cas := maps.Clone(cfg.PeerCAs)
	peerCAs.Store(&cas)
	onRefuse := func(remote net.Addr, err error) {
		cfg.OnRefuse(stageHandshake, refusals.record(remote, err), remote)
	}
	// Each handshake is verified against the peers configured when it
	// begins, which SetPeerCAs may have changed since the server started.
	current := func() *tls.Config { return serverTLS(cfg.Certificate, *peerCAs.Load(), cfg.Now, onRefuse) }
	tlsConf := current()
	tlsConf.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		return current().GetConfigForClient(hello)
	}
	tlsConf.VerifyPeerCertificate = func(raw [][]byte, chains [][]*x509.Certificate) error {
		return current().VerifyPeerCertificate(raw, chains)
	}
	// The server owns its UDP socket and transport, so that Close
	// releases the port at once for a restart on the same address.
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening for peers on %s: %w", addr, err)
	}
	udp, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, fmt.Errorf("listening for peers on %s: %w", addr, err)
	}
	tr := &quic.Transport{Conn: udp}
	ln, err := tr.Listen(tlsConf, quicConfig())
	if err != nil {
		udp.Close()
		return nil, fmt.Errorf("listening for peers on %s: %w", addr, err)
	}
	s := &Server{cfg: cfg, udp: udp, tr: tr, ln: ln, log: log, refusals: refusals, peerCAs: peerCAs, conns: map[*quic.Conn]bool{}}
	s.closing, s.stopAll = context.WithCancel(context.Background())
	return s, nil
}

// Addr returns the listening address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve accepts connections until ctx is done or the server is closed. The
// contexts given to the Receiver end when ctx does, when the peer's
// connection ends, or when Close is called.
func (s *Server) Serve(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(s.closing, cancel)()
	for {
		conn, err := s.ln.Accept(ctx)
		if err != nil {
			// Close cancels ctx through an AfterFunc, which may run
			// after the closed listener has already failed Accept.
			if ctx.Err() != nil || s.closing.Err() != nil {
				return nil
			}
			return err
		}
		if !s.track(conn) {
			conn.CloseWithError(0, "gateway shutting down")
			return nil
		}
		go func() {
			defer s.handlers.Done()
			defer s.untrack(conn)
			s.serveConn(ctx, conn)
		}()
	}
}

// track registers a connection and its handler, unless the server is
// closed.
func (s *Server) track(conn *quic.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[conn] = true
	// Add before Close's Wait can see a zero count: Close sets closed
	// under the same lock.
	s.handlers.Add(1)
	return true
}

func (s *Server) untrack(conn *quic.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, conn)
}

// Close stops listening, ends the context of every handler and closes every
// connection, telling each peer, so that peers connect afresh to a
// restarted server instead of waiting for their connection to time out. It
// returns once every handler has returned: a Receiver must return soon
// after its context ends.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	conns := make([]*quic.Conn, 0, len(s.conns))
	for conn := range s.conns {
		conns = append(conns, conn)
	}
	s.mu.Unlock()
	s.stopAll()
	err := s.ln.Close()
	for _, conn := range conns {
		conn.CloseWithError(0, "gateway shutting down")
	}
	s.handlers.Wait()
	s.tr.Close()
	if cerr := s.udp.Close(); err == nil && !errors.Is(cerr, net.ErrClosed) {
		err = cerr
	}
	// No handshake can be refused any more, but one may just have been.
	s.refusals.close()
	return err
}

func (s *Server) serveConn(ctx context.Context, conn *quic.Conn) {
	// Nobody is left to answer once the connection ends.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(conn.Context(), cancel)()
	state := conn.ConnectionState().TLS
	if len(state.PeerCertificates) == 0 {
		conn.CloseWithError(1, "no client certificate")
		return
	}
	// verifyPeer already authenticated the certificate in the handshake.
	peer, err := gatewayID(state.PeerCertificates[0])
	if err != nil {
		conn.CloseWithError(1, "bad identity")
		return
	}
	// SetPeerCAs may have removed the peer during the handshake, after
	// its certificate was verified and before the connection was
	// tracked, where SetPeerCAs would have closed it.
	if err := s.accepts(conn); err != nil {
		s.log.Info("closing the connection of a peer no longer accepted", zap.String("peer", peer), zap.Error(err))
		conn.CloseWithError(0, "peer no longer accepted")
		return
	}
	log := s.log.With(zap.String("peer", peer), zap.Stringer("addr", conn.RemoteAddr()))
	log.Info("peer connected")
	for {
		str, err := conn.AcceptStream(ctx)
		if err != nil {
			if conn.Context().Err() == nil {
				// Shutting down: tell the peer, or it keeps using
				// this connection until it times out.
				conn.CloseWithError(0, "gateway shutting down")
			}
			log.Info("peer disconnected", zap.Error(err))
			return
		}
		// This goroutine holds a count, so the Add cannot race
		// with Close's Wait.
		s.handlers.Add(1)
		go func() {
			defer s.handlers.Done()
			s.serveStream(ctx, peer, str, log)
		}()
	}
}

// SetPeerCAs replaces the peers the server accepts and each one's CA, as
// ServerConfig.PeerCAs gave them, so that a reload of the configuration
// adds and removes peers without a restart. Handshakes from now on are
// verified against cas; every open connection whose certificate does not
// verify under cas, a removed peer's or one issued by a CA its peer no
// longer has, is closed, which ends the contexts of its exchanges. The
// map is copied; the pools must not change once given.
func (s *Server) SetPeerCAs(cas map[string]*x509.CertPool) {
	m := maps.Clone(cas)
	s.peerCAs.Store(&m)
	for _, conn := range s.connections() {
		if err := s.accepts(conn); err != nil {
			s.log.Info("closing the connection of a peer no longer accepted", zap.Error(err))
			conn.CloseWithError(0, "peer no longer accepted")
		}
	}
}

// ClosePeer closes every open connection from peer id, which ends the
// contexts of its exchanges. The peer may connect again as long as it is
// one the server accepts.
func (s *Server) ClosePeer(id string) {
	for _, conn := range s.connections() {
		if certs := conn.ConnectionState().TLS.PeerCertificates; len(certs) > 0 {
			if peer, err := gatewayID(certs[0]); err == nil && peer == id {
				conn.CloseWithError(0, "closed by the gateway")
			}
		}
	}
}

// connections returns the connections open now.
func (s *Server) connections() []*quic.Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Collect(maps.Keys(s.conns))
}

// accepts checks the certificate of conn against the peers accepted now, as
// its handshake was checked against those accepted then.
func (s *Server) accepts(conn *quic.Conn) error {
	certs := conn.ConnectionState().TLS.PeerCertificates
	raw := make([][]byte, len(certs))
	for i, c := range certs {
		raw[i] = c.Raw
	}
	_, err := verifyPeer(raw, *s.peerCAs.Load(), "", x509.ExtKeyUsageClientAuth, s.cfg.Now())
	return err
}

func (s *Server) serveStream(ctx context.Context, peer string, str *quic.Stream, log *zap.Logger) {
	// The peer gets a stream back (it may open maxStreams at a time) only
	// once both halves are finished, whatever the exchange ended with:
	// the sending half closed after the last frame (or reset), and the
	// receiving half read to its end or canceled. Whatever the peer still
	// sends, such as the FIN of a request answered already or the rest of
	// a refused offer, is not wanted.
	defer func() {
		str.CancelRead(0)
		str.Close() // a no-op after CancelWrite
	}()
	str.SetReadDeadline(time.Now().Add(stallTimeout))
	typ, body, err := readFrame(str, MaxFrameSize)
	if err != nil {
		s.reject(str, log, firstFrameStage(typ), Reject(CodeMalformed, "reading the first frame: %v", err))
		return
	}
	switch typ {
	case frameDirectoryRequest:
		d, err := s.cfg.Receiver.Directory(ctx, peer)
		if err != nil {
			s.reject(str, log, stageOffer, asRejection(err))
			return
		}
		if err := writeFrame(stallWriter{str, stallTimeout}, frameDirectory, directoryFrame{Directory: d}); err != nil {
			log.Warn("sending directory", zap.Error(err))
		}
	case frameOffer:
		var of offerFrame
		if err := unmarshalStrict(body, &of); err != nil {
			s.reject(str, log, stageOffer, Reject(CodeMalformed, "offer: %v", err))
			return
		}
		s.serveOffer(ctx, peer, str, &of, log)
	case frameWitnessRequest:
		s.serveWitness(ctx, peer, str, body, log)
	case frameProofRequest:
		s.serveProof(ctx, peer, str, body, log)
	case frameAgreementNotice:
		s.serveAgreement(ctx, peer, str, body, log)
	case frameRecall:
		s.serveRecall(ctx, peer, str, body, log)
	default:
		s.reject(str, log, stageOffer, Reject(CodeMalformed, "unexpected frame type %d", typ))
	}
}

func (s *Server) serveOffer(ctx context.Context, peer string, str *quic.Stream, of *offerFrame, log *zap.Logger) {
	o, rej := checkOffer(peer, of)
	if rej != nil {
		s.reject(str, log, stageOffer, rej)
		return
	}
	log = log.With(zap.String("bundle", o.Envelope.BundleID))
	accepted := false
	accept := func(offset int64) (io.Reader, error) {
		if accepted {
			return nil, errors.New("accept called twice")
		}
		if offset != 0 {
			return nil, fmt.Errorf("resuming at offset %d is not supported yet", offset)
		}
		accepted = true
		if err := writeFrame(stallWriter{str, stallTimeout}, frameAccept, acceptFrame{Offset: offset}); err != nil {
			return nil, err
		}
		return newPayloadReader(str, o.Envelope), nil
	}
	receipt, err := s.cfg.Receiver.Receive(ctx, peer, o, accept)
	if errors.Is(err, ErrCanceled) {
		// Nobody is left to tell: the sender gave up on the stream.
		log.Info("transfer canceled by the sender")
		str.CancelWrite(0)
		return
	}
	if err != nil {
		rej := asRejection(err)
		if accepted {
			// Whatever the sender still sends is not wanted.
			str.CancelRead(0)
		}
		s.reject(str, log, stageOffer, rej)
		return
	}
	if err := writeFrame(stallWriter{str, stallTimeout}, frameReceipt, receiptFrame{Receipt: receipt, Duplicate: !accepted}); err != nil {
		log.Warn("sending receipt", zap.Error(err))
		return
	}
	log.Info("bundle received", zap.Bool("duplicate", !accepted), zap.Int64("size", o.Envelope.PayloadSize))
}

// checkOffer applies the checks every receiver needs: the envelope parses,
// its signature verifies, and its sender belongs to the authenticated peer.
func checkOffer(peer string, of *offerFrame) (*Offer, *Rejection) {
	env, err := crypto.ParseEnvelope(of.Envelope)
	if err != nil {
		return nil, Reject(CodeMalformed, "envelope: %v", err)
	}
	if err := crypto.VerifySignature(env, of.Envelope, of.Signature); err != nil {
		return nil, Reject(CodeBadSignature, "%v", err)
	}
	country, _, _ := strings.Cut(env.Sender.Unit, "/")
	if country != peer {
		return nil, Reject(CodeSenderMismatch, "the envelope's sender %q does not belong to the authenticated peer %s", env.Sender.Unit, peer)
	}
	return &Offer{Envelope: env, EnvelopeJSON: of.Envelope, Signature: of.Signature}, nil
}

func asRejection(err error) *Rejection {
	var rej *Rejection
	if errors.As(err, &rej) {
		return rej
	}
	return Reject(CodeInternal, "the receiving gateway failed to process the bundle; it has been logged there")
}

// reject answers the exchange of stage with a REJECT. known_size is sent
// only in a witness's conflict (witnessRejection made sure it is there).
func (s *Server) reject(str *quic.Stream, log *zap.Logger, stage string, rej *Rejection) {
	s.cfg.OnRefuse(stage, rej.Code, nil)
	log.Warn("refused", zap.String("stage", stage), zap.String("code", rej.Code), zap.String("reason", rej.Reason))
	rf := rejectFrame{Code: rej.Code, Reason: rej.Reason}
	if stage == stageWitness && rej.Code == CodeConflict {
		rf.KnownSize = rej.KnownSize
	}
	if err := writeFrame(stallWriter{str, stallTimeout}, frameReject, rf); err != nil {
		log.Debug("sending rejection", zap.Error(err))
	}
}

// payloadReader feeds the stream through a crypto.PayloadVerifier, turning
// its verdicts into rejections and keeping a stalled sender from holding
// the stream open forever.
type payloadReader struct {
	str *quic.Stream
	v   *crypto.PayloadVerifier
}

func newPayloadReader(str *quic.Stream, env *crypto.Envelope) *payloadReader {
	return &payloadReader{str: str, v: crypto.NewPayloadVerifier(str, env)}
}

func (p *payloadReader) Read(b []byte) (int, error) {
	p.str.SetReadDeadline(time.Now().Add(stallTimeout))
	n, err := p.v.Read(b)
	switch {
	case errors.Is(err, crypto.ErrPayloadSize):
		return n, Reject(CodeSizeMismatch, "%v", err)
	case errors.Is(err, crypto.ErrPayloadHash):
		return n, Reject(CodeHashMismatch, "%v", err)
	}
	var serr *quic.StreamError
	if errors.As(err, &serr) && serr.Remote {
		return n, fmt.Errorf("%w: %w", ErrCanceled, err)
	}
	return n, err
}
