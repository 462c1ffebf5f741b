package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"evx/agreement"
	"evx/api"
	"evx/audit"
	"evx/crypto"
	"evx/storage"
	"evx/transfer"

	"filippo.io/torchwood"
	"go.uber.org/zap"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/sync/errgroup"
)

// User is a local user: a unit identified by its client certificate.
type User struct {
	Unit string
	Role api.Role
	// Key is the unit's public key: the signing key of a submitter, the
	// age recipient of a recipient.
	Key crypto.PublicKey
	// Purposes are those a recipient is authorised for: a peer's bundle
	// for another purpose is refused (recipient-not-authorised).
	Purposes []string
}

// Options configure a gateway. cmd/evx builds them from the configuration
// file; tests build them directly.
type Options struct {
	ID string
	// PeerAddr (UDP) and APIAddr (TCP) are the listening addresses.
	PeerAddr, APIAddr string
	// Certificate serves both the peer protocol and the local API.
	Certificate tls.Certificate
	// LocalCA verifies local users' client certificates.
	LocalCA    *x509.CertPool
	SigningKey *crypto.SigningKey
	Storage    storage.Backend
	Peers      []transfer.Peer
	Users      []User
	// Agreements are the agreements with the peers, one per peer at
	// most (docs/agreements.md): with a peer that has none, nothing
	// flows in either direction.
	Agreements []*agreement.Agreement
	// ConfigSHA256 is the digest of the gateway's effective configuration,
	// recorded in the transfer log when the gateway starts.
	ConfigSHA256 [32]byte
	// Reload, if set, reads the configuration file again and returns the
	// settings a reload applies (SIGHUP, POST /v1/agreements/reload); an
	// error refuses the reload whole and says why. Without it the
	// gateway cannot reload.
	Reload func(ctx context.Context) (*Settings, error)
	// MasterKey wraps the per-bundle keys of the outer layer under which
	// received payloads are stored (docs/retention.md): destroying a
	// bundle's wrapped key at expiry makes every copy of its payload
	// unreadable. Required.
	MasterKey *crypto.MasterKey
	// ReaperInterval is how often the reaper looks for bundles whose
	// retention has ended; zero means 1 min. OutboxGrace is how long the
	// sender's copy of a delivered bundle's payload is kept after the
	// peer's receipt is stored (configuration default: 1 h); zero removes
	// it at the reaper's next run.
	ReaperInterval, OutboxGrace time.Duration
	// HoldUnits are the local units that may place and release legal
	// holds.
	HoldUnits []string
	// MaxBundleSize bounds payloads accepted from units and peers: at most
	// storage.MaxObjectSize, the default.
	MaxBundleSize int64
	Logger        *zap.Logger
	// APIMaxConns and APIMaxConnsPerSource bound the local API's open
	// connections, in total and from one source (an IPv4 address, or the
	// /64 of an IPv6 address); a connection over either limit is closed at
	// once. APIHandshakeTimeout bounds an API connection's TLS handshake,
	// from its acceptance. Zero means 1024, 64 and 10 s (see listener.go).
	APIMaxConns, APIMaxConnsPerSource int
	APIHandshakeTimeout               time.Duration
	// UploadStallTimeout ends an upload whose body brings no byte for that
	// long, and a payload download that the recipient stops reading for
	// that long, however long either takes as a whole. Zero means 30 s.
	UploadStallTimeout time.Duration
	// RetryInterval is the first wait before retrying a failed delivery;
	// it doubles up to RetryMax. Zero means 1 s and 5 min.
	RetryInterval, RetryMax time.Duration
	// DirectConnectTimeout bounds how long a direct delivery (see
	// deliverDirect) tries to reach the peer before the bundle is stored
	// for delivery instead, and how long a directory fetch tries before
	// the kept copy answers (see directory.go). Zero means 5 s.
	DirectConnectTimeout time.Duration
	// MaxMergeDelay is how long after a delivery a peer has to prove
	// that its transfer log includes the entry its receipt promised
	// (docs/audit.md 6). Zero means 1 min.
	MaxMergeDelay time.Duration
	// Now is the clock of the peer directory cache, of the transfer log's
	// entries, merge delays and witness refreshes, and of the refusal
	// windows; nil means time.Now. Tests set it to pass intervals without
	// waiting.
	Now func() time.Time

	// directoryFault, if set, is asked before each fetch of a peer's
	// directory; an error it returns fails the fetch, as if the peer could
	// not be reached for it. Tests inject faults with it.
	directoryFault func(peer string) error
	// onAPIHandshakeFailed, if set, is called after each failed TLS
	// handshake of the API is counted: tests wait on it.
	onAPIHandshakeFailed func(reason string)
	// onDownloadEnded, if set, is called when a payload download ends,
	// with its error (nil when sent in full): tests wait on it.
	onDownloadEnded func(id string, err error)
	// onDeliveryFailed, if set, is called after each failed delivery
	// attempt that will be retried, once it is logged: tests wait on it.
	onDeliveryFailed func(id string, err error)
	// onStatusWait, if set, is called each time a status request with
	// ?wait= for bundle id starts waiting for its delivery to end: tests
	// wait on it before they make the delivery end.
	onStatusWait func(id string)
	// onCosigned, if set, is called when a peer's cosignature of this
	// gateway's checkpoint of size is stored, with the old size the
	// request was made from; onWitnessFailed after each failed
	// witnessing round is counted: tests wait on them.
	onCosigned      func(peer string, oldSize, size int64)
	onWitnessFailed func(peer, reason string)
	// onReceiptProven and onReceiptNotIncluded, if set, are called when
	// a delivered bundle's receipt is proven included in the peer's log,
	// and when its receipt-not-included event is recorded.
	onReceiptProven, onReceiptNotIncluded func(id string)
	// proveHook, if set, gets each inclusion proof this gateway made for
	// a peer, and answers in its place: tests make a peer that withholds.
	proveHook func(req *transfer.ProofRequest, resp *transfer.ProofResponse, err error) (*transfer.ProofResponse, error)
	// withoutPeerViews has the gateway decide as one on older code
	// would, without its peers' summaries of their agreements and the
	// purposes in their directories: tests of the receiver's own checks
	// use it for the sender.
	withoutPeerViews bool
	// onPeerView, if set, is called when a peer's newer summary of its
	// agreement with this gateway is kept, with that agreement (nil if
	// none): tests wait on it.
	onPeerView func(peer string, a *agreement.Agreement)
	// onExchanged, if set, is called when an exchange of summaries with
	// peer ends, with its error.
	onExchanged func(peer string, err error)
	// onReaped, if set, is called after each run of the reaper with what
	// it found and did; onShredded when it has destroyed a received
	// bundle's key: tests wait on them.
	onReaped   func(reapResult)
	onShredded func(id string)
	// onRefusalsLogged, if set, is called when refusal windows have been
	// summed up in the transfer log, with the number of entries.
	onRefusalsLogged func(entries int)
}

// Gateway is a running gateway.
type Gateway struct {
	opts   Options
	log    *zap.Logger
	client *transfer.Client
	server *transfer.Server
	api    *http.Server
	apiLn  net.Listener

	dirs         peerDirectories // see directory.go
	authFailures authFailures    // see refused.go

	// set holds the settings in force: the peers, users and agreements,
	// which a reload replaces as one (settings.go). reloadMu lets one
	// reload or suspension at a time change what is in force.
	set      atomic.Pointer[settings]
	reloadMu sync.Mutex
	// suspensions are the operators' suspensions of cooperation with
	// peers (suspend.go); rates count what the agreements limit
	// (policy.go).
	suspensions suspensions
	// peerViews are the peers' summaries of their agreements with this
	// gateway (peerview.go).
	peerViews peerViews
	rates     rateLimits
	// inflight are the transfers in flight with each peer, which a
	// suspension stops.
	inflight inflight

	queue chan string // bundle ids to deliver

	// outboxMu guards outboxChanged, which is closed and replaced whenever
	// a delivery ends, delivered or refused: it wakes the status requests
	// that wait for a change (GET /v1/outbox/{id}?wait=).
	outboxMu      sync.Mutex
	outboxChanged chan struct{}
	// retryNow, also guarded by outboxMu, is closed and replaced when
	// something changed what the agreements allow (agreementsChanged):
	// it wakes the deliveries waiting to retry.
	retryNow chan struct{}
	// stopping is closed when the API server shuts down, so that waiting
	// status requests answer at once instead of holding up the shutdown.
	stopping chan struct{}

	inboxLocks, outboxLocks bundleLocks

	// locker locks stored objects until their retain-until: it is
	// opts.Storage. reaper is the retention's reaper (reaper.go).
	locker storage.Locker
	reaper reaper

	metrics *metrics
	// tlog is the transfer log, opened by Run.
	tlog *audit.Log
	// apiErrors is the API server's error log (see apiErrorLog).
	apiErrors *apiErrorLog
	// logPeers are the peers' parts in the transfer logs: their keys,
	// witnessing and the checks of their receipts (witness.go,
	// inclusion.go); witness cosigns their checkpoints; ownLogV checks
	// this gateway's own. refusalSum sums up refused requests for the
	// log (refusals_log.go).
	logPeers   map[string]*logPeer
	witness    *torchwood.CosignatureSigner
	ownLogV    note.Verifier
	refusalSum *refusalSummary

	closeOnce sync.Once
	closeErr  error
}

// New checks the options, opens the listeners and returns a gateway ready to
// Run.
func New(opts Options) (*Gateway, error) {
	if opts.Logger == nil {
		return nil, errors.New("no logger")
	}
	if opts.ConfigSHA256 == ([32]byte{}) {
		return nil, errors.New("no configuration digest: the transfer log records it when the gateway starts")
	}
	switch {
	case opts.MaxBundleSize == 0:
		opts.MaxBundleSize = storage.MaxObjectSize
	case opts.MaxBundleSize < 0 || opts.MaxBundleSize > storage.MaxObjectSize:
		// Refused rather than lowered: the operator asked for bundles
		// the storage cannot hold.
		return nil, fmt.Errorf("maximum bundle size %d is out of range: want 1 to %d bytes, the largest object storage holds", opts.MaxBundleSize, int64(storage.MaxObjectSize))
	}
	if opts.RetryInterval <= 0 {
		opts.RetryInterval = time.Second
	}
	if opts.DirectConnectTimeout <= 0 {
		opts.DirectConnectTimeout = 5 * time.Second
	}
	if opts.RetryMax <= 0 {
		opts.RetryMax = 5 * time.Minute
	}
	if opts.MasterKey == nil {
		return nil, errors.New("no master key: it wraps the keys of the stored payloads' outer layer (docs/retention.md)")
	}
	locker, ok := opts.Storage.(storage.Locker)
	if !ok {
		return nil, fmt.Errorf("storage %T cannot lock objects until their retain-until (docs/retention.md)", opts.Storage)
	}
	if opts.ReaperInterval <= 0 {
		opts.ReaperInterval = time.Minute
	}
	if opts.OutboxGrace < 0 {
		return nil, fmt.Errorf("outbox grace %v is negative", opts.OutboxGrace)
	}
	g := &Gateway{
		opts:  opts,
		log:   opts.Logger.With(zap.String("gateway", opts.ID)),
		queue: make(chan string, 1024),

		outboxChanged: make(chan struct{}),
		retryNow:      make(chan struct{}),
		peerViews:     peerViews{wake: make(chan struct{}, 1)},
		stopping:      make(chan struct{}),
		metrics:       newMetrics(),
		locker:        locker,
		reaper:        newReaper(),
	}
	g.refusalSum = newRefusalSummary(g.now)
	g.apiErrors = &apiErrorLog{log: g.log.Named("api"), metrics: g.metrics, now: g.now, counted: opts.onAPIHandshakeFailed,
		summary: g.refusalSum}
	if err := g.initLogPeers(); err != nil {
		return nil, err
	}
	set, err := newSettings(opts.ID, Settings{Peers: opts.Peers, Users: opts.Users, Agreements: opts.Agreements,
		ConfigSHA256: opts.ConfigSHA256})
	if err != nil {
		return nil, err
	}
	g.set.Store(set)
	g.server, err = transfer.Listen(opts.PeerAddr, transfer.ServerConfig{
		ID: opts.ID, Certificate: opts.Certificate, PeerCAs: set.peerCAs(),
		Receiver: g, Recalls: g, Logger: g.log,
		OnRefuse: func(stage, code string, remote net.Addr) {
			g.metrics.refusals.WithLabelValues("peer-"+stage, code).Inc()
			g.refusalSum.addPeer(stage, code, remote)
		},
	})
	if err != nil {
		return nil, err
	}
	g.apiLn, err = net.Listen("tcp", opts.APIAddr)
	if err != nil {
		g.server.Close()
		return nil, fmt.Errorf("listening for the API on %s: %w", opts.APIAddr, err)
	}
	g.client = transfer.NewClient(opts.ID, opts.Certificate, g.log)
	g.api = &http.Server{
		Handler:           g.apiHandler(),
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		// The TLS handshake gets its own, shorter deadline (see
		// apiConn.setDeadline), not the least of the server's timeouts
		// that http.Server would give it: the header timeout stays.
		ConnState: trackAPIConn,
		TLSConfig: &tls.Config{
			MinVersion:   tls.VersionTLS13,
			Certificates: []tls.Certificate{opts.Certificate},
			ClientAuth:   tls.RequireAndVerifyClientCert,
			ClientCAs:    opts.LocalCA,
		},
		ErrorLog: log.New(g.apiErrors, "", 0),
	}
	var stopOnce sync.Once
	g.api.RegisterOnShutdown(func() { stopOnce.Do(func() { close(g.stopping) }) })
	return g, nil
}

// PeerAddr and APIAddr return the listening addresses.
func (g *Gateway) PeerAddr() string { return g.server.Addr() }
func (g *Gateway) APIAddr() string  { return g.apiLn.Addr().String() }

// shutdownTimeout bounds how long Run waits for work in progress to finish
// after ctx is done.
const shutdownTimeout = 10 * time.Second

// Run serves peers and local users and delivers the outbox until ctx is
// done, then shuts down within shutdownTimeout.
//
// Run closes the gateway (see Close) before it returns, and waits for
// everything it started: API requests, offers from peers and deliveries.
func (g *Gateway) Run(ctx context.Context) (err error) {
	defer g.Close()
	if err := g.openLog(ctx); err != nil {
		if ctx.Err() != nil {
			return nil // stopped before it started
		}
		return err
	}
	// The log integrates entries until everything that could append has
	// stopped: it outlives ctx, and Run waits for it.
	logCtx, stopLog := context.WithCancel(context.WithoutCancel(ctx))
	logDone := make(chan error, 1)
	go func() { logDone <- g.tlog.Run(logCtx) }()
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), logStopTimeout)
		if serr := g.tlog.Sync(sctx); serr != nil {
			g.log.Warn("entries not yet in a checkpoint at shutdown; the next start integrates them", zap.Error(serr))
		}
		cancel()
		stopLog()
		err = errors.Join(err, <-logDone)
	}()
	g.loadPeerViews(ctx)
	if err := g.loadSuspensions(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	// A stop while the gateway starts is a stop, not a failure.
	if err := g.recordStarted(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	if err := g.requeueOutbox(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	eg, ctx := errgroup.WithContext(ctx)
	eg.Go(func() error { return g.server.Serve(ctx) })
	eg.Go(func() error {
		err := g.api.ServeTLS(g.newAPIListener(g.apiLn), "", "")
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	})
	eg.Go(func() error { return g.deliverLoop(ctx) })
	eg.Go(func() error { return g.runWitnessing(ctx) })
	eg.Go(func() error { return g.runInclusionChecks(ctx) })
	eg.Go(func() error { return g.runRefusalSummary(ctx) })
	eg.Go(func() error { return g.runAgreementGauges(ctx) })
	eg.Go(func() error { return g.runAgreementExchange(ctx) })
	eg.Go(func() error { return g.runReaper(ctx) })
	eg.Go(func() error {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		return errors.Join(g.api.Shutdown(sctx), g.Close())
	})
	g.log.Info("gateway running", zap.String("peer", g.PeerAddr()), zap.String("api", g.APIAddr()))
	err = eg.Wait()
	// Everything that could refuse a request has stopped: the last
	// refusals go into the log, which is still running.
	g.flushRefusals(ctx, true)
	g.log.Info("gateway stopped")
	return err
}

// Close releases what New opened: the API and peer listeners, the
// connections to and from peers. Run closes the gateway as it returns; call
// Close for a gateway that is never run, or to stop one whose Run has
// returned. It waits for the handlers of offers from peers to end. It is
// safe to call more than once.
func (g *Gateway) Close() error {
	g.closeOnce.Do(func() {
		err := g.apiLn.Close()
		if errors.Is(err, net.ErrClosed) {
			err = nil // closed by the API server's shutdown
		}
		g.closeErr = errors.Join(err, g.server.Close(), g.client.Close())
		g.apiErrors.flush()
	})
	return g.closeErr
}
