package storage

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"golang.org/x/sync/errgroup"
)

// S3 part sizes and limits. S3 allows at most 10,000 parts per multipart
// upload, each at least 5 MiB except the last.
const (
	// DefaultPartSize is the multipart part size unless S3Config says
	// otherwise. It is also the largest object stored in a single PUT.
	DefaultPartSize = 16 << 20
	// MinPartSize is S3's smallest allowed part size.
	MinPartSize  = 5 << 20
	maxPartSize  = 5 << 30
	maxPartCount = 10000
	// DefaultPartConcurrency is how many parts one Create uploads at once
	// unless S3Config says otherwise.
	DefaultPartConcurrency = 2
)

// S3Config configures an [S3] backend. Only S3 operations that AWS S3 and
// the common S3-compatible servers all implement are used.
type S3Config struct {
	// Endpoint is the server's host and port, as "s3.example.org" or
	// "127.0.0.1:9000" (no scheme).
	Endpoint string
	// Bucket holds the objects. The backend owns it: objects in it whose
	// names are not valid keys are ignored by List.
	Bucket string
	// Region is the bucket's region; empty asks the server.
	Region    string
	AccessKey string
	SecretKey string
	// UseTLS selects HTTPS. Plain HTTP is for loopback test servers only.
	UseTLS bool
	// CAFile, if set, names a PEM file of the certificate authorities that
	// the server's certificate must chain to, instead of the system's.
	CAFile string
	// PartSize is the multipart part size in bytes, from MinPartSize up;
	// zero means DefaultPartSize. A Create uses a larger part size when the
	// object would otherwise need more than 10,000 parts.
	PartSize int64
	// PartConcurrency is how many parts one Create reads ahead and uploads
	// at once; zero means DefaultPartConcurrency. A Create holds at most
	// PartConcurrency part buffers, so its memory is bounded by
	// PartConcurrency × part size whatever the object's size.
	PartConcurrency int
	// ObjectLock says that the bucket has S3 Object Lock enabled, which
	// the [Locker] methods need: EnsureBucket then creates the bucket
	// with it, or checks that an existing bucket has it. Object Lock also
	// turns on versioning; Delete and Create then check locks first (see
	// [Locker]). Off, the backend behaves as before and its Locker
	// methods fail.
	ObjectLock bool
	// LockMode is the S3 retention mode of the locks that CreateLocked and
	// Extend place: "COMPLIANCE" (the default when empty), which nobody
	// can shorten or bypass before the date, not even the bucket's owner;
	// or "GOVERNANCE", which users with the s3:BypassGovernanceRetention
	// permission can bypass, for test set-ups only. The backend itself
	// never bypasses a lock.
	LockMode string
	// NoncurrentExpiryDays is how many days after a version becomes
	// noncurrent the bucket's lifecycle rule expires it, from 1 to 36,500;
	// zero means DefaultNoncurrentExpiryDays. It needs ObjectLock: see
	// [S3.EnsureBucket]. The server never removes a version still under
	// retention or legal hold, so this cannot remove evidence early.
	NoncurrentExpiryDays int
}

// S3 is a [Backend] that keeps objects in an S3 bucket, one object per
// key.
//
// Create is create-only through a conditional write (If-None-Match: *),
// which the server evaluates atomically when it commits the object: on the
// single PUT for objects up to the part size, and on CompleteMultipartUpload
// for larger ones. The server must support conditional writes (AWS S3 does
// since 2024, MinIO does); on one that ignores them, concurrent Creates of
// one key could both succeed. An object becomes visible only when that
// commit succeeds, so a failed or interrupted Create leaves at most an
// incomplete multipart upload, which is invisible. Create aborts its
// upload on failure; after a crash, a bucket lifecycle rule that aborts
// incomplete multipart uploads is the backstop.
//
// Objects read through Open are pinned to the ETag seen when opening: if
// the object is deleted and created again (or replaced) meanwhile, reads
// fail rather than mix the two.
//
// Replace is one conditional PUT (If-Match the version, which is the
// ETag), sent once: see [S3.Replace].
type S3 struct {
	client          *minio.Client
	core            minio.Core
	bucket          string
	region          string
	partSize        int64
	partConcurrency int
	objectLock      bool
	lockMode        minio.RetentionMode
	noncurrentDays  int
	// http shares the client's transport, for the requests that minio-go
	// does not make as needed (see readLifecycle).
	http *http.Client
}

var _ Backend = (*S3)(nil)

// NewS3 returns an S3 backend for cfg. It makes no request: see
// [S3.EnsureBucket].
func NewS3(cfg S3Config) (*S3, error) {
	return newS3(cfg, defaultS3Limits)
}

// s3Limits bound how long one S3 call can wait, so that a server that is
// down, or a network that black-holes its packets, makes a call fail with
// [ErrUnavailable] instead of holding it (and the gateway request behind
// it) for as long as TCP keeps trying.
type s3Limits struct {
	// dial bounds connecting, and handshake the TLS handshake.
	dial, handshake time.Duration
	// wait bounds every wait for the server once connected: for the
	// response header after a request is sent, and for any byte of a
	// request or response body to move (see progressConn).
	wait time.Duration
	// attempts is how many times minio-go sends a request that fails
	// with a network error or a retryable S3 error (minio-go's
	// MaxRetries, which counts attempts).
	attempts int
}

// defaultS3Limits: a request to a dead server fails after at most three
// attempts and minio-go's backoff between them (under 0.2 s, then under
// 0.4 s): within a second when connections are refused, after 3 × 10 s
// when the server's address drops packets, after 3 × 20 s when it accepts
// connections and never answers. A body that stalls fails after 20 s
// (body reads are not retried). minio-go's defaults are 10 attempts with a
// 30 s connect and a 1 minute wait for each answer: over 15 minutes.
//
// Three attempts still ride out what retries are for (a keep-alive
// connection that the server has just closed, one SlowDown), while an
// outage shows as ErrUnavailable soon enough for the caller's own retries
// (a gateway's delivery loop, push) to take over. A healthy S3 server
// answers in milliseconds: 20 s without a byte is an outage, not load.
// Completing a multipart upload is the slowest request, and it only joins
// metadata.
var defaultS3Limits = s3Limits{
	dial:      10 * time.Second,
	handshake: 10 * time.Second,
	wait:      20 * time.Second,
	attempts:  3,
}

func newS3(cfg S3Config, lim s3Limits) (*S3, error) {
	switch {
	case cfg.Endpoint == "":
		return nil, errors.New("s3 storage: no endpoint")
	case strings.Contains(cfg.Endpoint, "://"):
		return nil, fmt.Errorf("s3 storage: endpoint %q must be a host and port, without a scheme", cfg.Endpoint)
	case cfg.Bucket == "":
		return nil, errors.New("s3 storage: no bucket")
	case cfg.AccessKey == "" || cfg.SecretKey == "":
		return nil, errors.New("s3 storage: access key and secret key are required")
	case cfg.PartSize != 0 && (cfg.PartSize < MinPartSize || cfg.PartSize > maxPartSize):
		return nil, fmt.Errorf("s3 storage: part size %d is outside %d to %d", cfg.PartSize, MinPartSize, int64(maxPartSize))
	case cfg.PartConcurrency < 0:
		return nil, fmt.Errorf("s3 storage: negative part concurrency %d", cfg.PartConcurrency)
	case cfg.CAFile != "" && !cfg.UseTLS:
		return nil, fmt.Errorf("s3 storage: a CA file (%q) is set but TLS is off", cfg.CAFile)
	case cfg.LockMode != "" && cfg.LockMode != "COMPLIANCE" && cfg.LockMode != "GOVERNANCE":
		return nil, fmt.Errorf("s3 storage: lock mode %q is neither COMPLIANCE nor GOVERNANCE", cfg.LockMode)
	case cfg.LockMode != "" && !cfg.ObjectLock:
		return nil, fmt.Errorf("s3 storage: a lock mode (%q) is set but object lock is off", cfg.LockMode)
	case cfg.NoncurrentExpiryDays < 0 || cfg.NoncurrentExpiryDays > maxNoncurrentExpiryDays:
		return nil, fmt.Errorf("s3 storage: noncurrent expiry of %d days is outside 1 to %d", cfg.NoncurrentExpiryDays, maxNoncurrentExpiryDays)
	case cfg.NoncurrentExpiryDays != 0 && !cfg.ObjectLock:
		return nil, fmt.Errorf("s3 storage: a noncurrent expiry (%d days) is set but object lock is off", cfg.NoncurrentExpiryDays)
	}
	transport, err := minio.DefaultTransport(cfg.UseTLS)
	if err != nil {
		return nil, fmt.Errorf("s3 storage: %w", err)
	}
	dialer := &net.Dialer{Timeout: lim.dial, KeepAlive: 30 * time.Second}
	transport.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dialer.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &progressConn{Conn: c, timeout: lim.wait}, nil
	}
	transport.TLSHandshakeTimeout = lim.handshake
	transport.ResponseHeaderTimeout = lim.wait
	// Idle connections are closed by the transport well before
	// progressConn's deadline on their idle read would close them, so
	// that a request never picks a connection that is about to fail.
	transport.IdleConnTimeout = lim.wait / 2
	if cfg.UseTLS {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if cfg.CAFile != "" {
			pem, err := os.ReadFile(cfg.CAFile)
			if err != nil {
				return nil, fmt.Errorf("s3 storage: CA file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("s3 storage: CA file %q holds no PEM certificate", cfg.CAFile)
			}
			tc.RootCAs = pool
		}
		transport.TLSClientConfig = tc
	}
	client, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:      credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure:     cfg.UseTLS,
		Region:     cfg.Region,
		Transport:  transport,
		MaxRetries: lim.attempts,
	})
	if err != nil {
		return nil, fmt.Errorf("s3 storage: %w", err)
	}
	s := &S3{
		client:          client,
		core:            minio.Core{Client: client},
		bucket:          cfg.Bucket,
		region:          cfg.Region,
		partSize:        cfg.PartSize,
		partConcurrency: cfg.PartConcurrency,
		objectLock:      cfg.ObjectLock,
		lockMode:        minio.Compliance,
		noncurrentDays:  cmp.Or(cfg.NoncurrentExpiryDays, DefaultNoncurrentExpiryDays),
		http: &http.Client{
			Transport: transport,
			// S3 answers a request to the wrong region with a
			// redirect, which is an error here as for minio-go.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
	if cfg.LockMode == "GOVERNANCE" {
		s.lockMode = minio.Governance
	}
	if s.partSize == 0 {
		s.partSize = DefaultPartSize
	}
	if s.partConcurrency == 0 {
		s.partConcurrency = DefaultPartConcurrency
	}
	return s, nil
}

// progressConn fails a Read or Write on which no byte moves for timeout.
// http.Transport bounds connecting, the TLS handshake and the wait for a
// response header, but not a request or response body that stops moving:
// a server or middlebox that stalls mid-body would hold the request until
// TCP gives up, which it never does while the peer acknowledges.
type progressConn struct {
	net.Conn
	timeout time.Duration
}

// progressChunk is how much of a Write one deadline covers, so that a
// large Write (a whole part, which bytes.Reader.WriteTo hands over at
// once) needs to progress within timeout, not to complete.
const progressChunk = 64 << 10

// Read and Write set both deadlines: progress either way shows the peer
// alive, and while a request body is sent the transport is already
// reading, waiting for the answer.
func (c *progressConn) Read(p []byte) (int, error) {
	c.Conn.SetDeadline(time.Now().Add(c.timeout))
	return c.Conn.Read(p)
}

func (c *progressConn) Write(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		c.Conn.SetDeadline(time.Now().Add(c.timeout))
		m, err := c.Conn.Write(p[n:min(len(p), n+progressChunk)])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// s3Failure returns err, from a request to the server, wrapped with
// [ErrUnavailable] if it means that the server could not serve the
// request for now: see "Unavailable storage" on [Backend]. Callers check
// their ctx first: a caller's cancellation is never unavailability.
func s3Failure(err error) error {
	if s3Unavailable(err) {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}

// s3Throttling are the S3 error codes of a server that is failing or
// overloaded, whatever their HTTP status (RequestTimeout is a 400: the
// connection stalled while the server read the request).
var s3Throttling = []string{
	"InternalError", "ServiceUnavailable", "SlowDown", "SlowDownRead", "SlowDownWrite",
	"Throttling", "ThrottlingException", "RequestLimitExceeded", "RequestThrottled",
	"RequestTimeout", "XMinioServerNotInitialized",
}

func s3Unavailable(err error) bool {
	if errors.Is(err, context.Canceled) {
		// Not the caller's ctx (checked first), so the group of a
		// multipart upload, cancelled because another part failed.
		// (context.DeadlineExceeded is not excluded: net/http's
		// timeouts match it.)
		return false
	}
	var resp minio.ErrorResponse
	if errors.As(err, &resp) {
		if slices.Contains(s3Throttling, resp.Code) {
			return true
		}
		// 501 Not Implemented says the server lacks an operation:
		// waiting will not bring it.
		return resp.StatusCode == http.StatusTooManyRequests ||
			resp.StatusCode >= 500 && resp.StatusCode != http.StatusNotImplemented
	}
	// A server that is not the one configured (an untrusted certificate,
	// plain HTTP where TLS is configured) is a configuration error.
	var (
		verify   *tls.CertificateVerificationError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		dns      *net.DNSError
		netErr   net.Error
	)
	switch {
	case errors.As(err, &verify), errors.As(err, &unknown), errors.As(err, &hostname), errors.As(err, &invalid),
		errors.Is(err, http.ErrSchemeMismatch):
		return false
	case errors.As(err, &dns):
		// A name that does not exist is a configuration error; a
		// resolver that fails or times out is an outage.
		return !dns.IsNotFound
	}
	// The request failed on the way: connection refused or reset, no
	// route, a timeout, or the connection closed before the answer
	// (which minio-go reports as a *url.Error of its own). A body that
	// ends early or stalls fails without a *url.Error.
	var urlErr *url.Error
	var opErr *net.OpError
	return errors.As(err, &urlErr) || errors.As(err, &opErr) ||
		errors.As(err, &netErr) && netErr.Timeout() ||
		errors.Is(err, io.ErrUnexpectedEOF)
}

// EnsureBucket creates the bucket if it does not exist: with Object Lock
// if the configuration asks for it (S3Config.ObjectLock), in which case it
// checks that an existing bucket has Object Lock enabled, and fails
// naming the bucket if not.
//
// With Object Lock, it then installs the bucket's lifecycle backstop, the
// rules [LifecycleRuleNoncurrent] and [LifecycleRuleAbort], keeping the
// operator's other rules (see s3_lifecycle.go). An error
// that wraps [ErrLifecycleUnsupported] means that the bucket is ready and
// only (part of) the backstop is missing: a caller may warn and go on.
// Other policies of the bucket are the operator's.
func (s *S3) EnsureBucket(ctx context.Context) error {
	if err := s.ensureBucket(ctx); err != nil {
		return err
	}
	if s.objectLock {
		return s.ensureLifecycle(ctx)
	}
	return nil
}

func (s *S3) ensureBucket(ctx context.Context) error {
	ok, err := s.client.BucketExists(ctx, s.bucket)
	if err != nil {
		return fmt.Errorf("s3 storage: bucket %q: %w", s.bucket, s3Failure(err))
	}
	if ok {
		if s.objectLock {
			return s.checkObjectLock(ctx)
		}
		return nil
	}
	err = s.client.MakeBucket(ctx, s.bucket, minio.MakeBucketOptions{Region: s.region, ObjectLocking: s.objectLock})
	if err != nil && minio.ToErrorResponse(err).Code != minio.BucketAlreadyOwnedByYou {
		return fmt.Errorf("s3 storage: creating bucket %q: %w", s.bucket, s3Failure(err))
	}
	if err != nil && s.objectLock {
		// Made meanwhile by someone else, perhaps without Object Lock.
		return s.checkObjectLock(ctx)
	}
	return nil
}

// checkObjectLock checks that the bucket has Object Lock enabled. S3 can
// enable it only when a bucket is created, so the error says to make
// another.
func (s *S3) checkObjectLock(ctx context.Context) error {
	enabled, _, _, _, err := s.client.GetObjectLockConfig(ctx, s.bucket)
	if err != nil && minio.ToErrorResponse(err).Code != "ObjectLockConfigurationNotFoundError" {
		return fmt.Errorf("s3 storage: reading the object lock configuration of bucket %q: %w", s.bucket, s3Failure(err))
	}
	if enabled != "Enabled" {
		return fmt.Errorf("s3 storage: bucket %q does not have Object Lock enabled, which S3 allows only when a bucket is created: "+
			"create a new bucket with Object Lock enabled (or let the gateway create it) and move the objects there", s.bucket)
	}
	return nil
}

// partSizeFor returns the part size for an object of size bytes: the
// configured size, raised to a whole MiB when size would otherwise need
// more than 10,000 parts (minio-go would silently stop there).
func partSizeFor(configured, size int64) int64 {
	ps := configured
	if min := (size + maxPartCount - 1) / maxPartCount; min > ps {
		ps = (min + 1<<20 - 1) &^ (1<<20 - 1)
	}
	return ps
}

// Create implements [Backend.Create]. With Object Lock, it first checks
// that no locked version of key is hidden behind a delete marker (see
// [Locker]), which costs a request.
func (s *S3) Create(ctx context.Context, key string, r io.Reader, size int64) error {
	return s.create(ctx, key, r, size, nil)
}

// create is Create, and CreateLocked if lock is not nil: the upload then
// carries the lock, which the server applies as it commits the object.
func (s *S3) create(ctx context.Context, key string, r io.Reader, size int64, lock *Lock) error {
	if err := ValidKey(key); err != nil {
		return err
	}
	if err := checkSize(key, size); err != nil {
		return err
	}
	if s.objectLock && lock == nil {
		if err := s.checkHiddenLocks(ctx, key); err != nil {
			return err
		}
	}
	er := newExactReader(ctx, key, r, size)
	partSize := partSizeFor(s.partSize, size)
	if size <= partSize {
		return s.putSingle(ctx, key, er, size, lock)
	}
	// The conditional commit decides; this only spares uploading parts
	// that would be thrown away. A single PUT is not worth the round trip:
	// records are small, and a gateway creates several per bundle.
	if _, err := s.Stat(ctx, key); err == nil {
		return fmt.Errorf("create %q: %w", key, ErrExist)
	} else if !errors.Is(err, ErrNotExist) {
		return err
	}
	return s.putMultipart(ctx, key, er, size, partSize, lock)
}

// createOnly returns the options of the request that commits an object:
// it fails with PreconditionFailed if the key exists.
func createOnly() minio.PutObjectOptions {
	var opts minio.PutObjectOptions
	opts.SetMatchETagExcept("*")
	return opts
}

// withLock adds lock, if any, to the options of the request that starts
// an upload.
func (s *S3) withLock(opts minio.PutObjectOptions, lock *Lock) minio.PutObjectOptions {
	if lock != nil {
		opts.Mode = s.lockMode
		opts.RetainUntilDate = lock.Until
	}
	return opts
}

// putSingle reads the whole (small) object before sending it, so that a
// short or long input is refused before any request, and minio-go can
// retry the request from a seekable body.
func (s *S3) putSingle(ctx context.Context, key string, er *exactReader, size int64, lock *Lock) error {
	buf := make([]byte, size)
	if err := er.readFull(buf); err != nil {
		return err
	}
	if err := er.finish(); err != nil {
		return err
	}
	_, err := s.core.PutObject(ctx, s.bucket, key, bytes.NewReader(buf), size, "", "", s.withLock(createOnly(), lock))
	return s.commitError(ctx, key, err)
}

func (s *S3) commitError(ctx context.Context, key string, err error) error {
	switch {
	case err == nil:
		return nil
	case minio.ToErrorResponse(err).Code == minio.PreconditionFailed:
		return fmt.Errorf("create %q: %w", key, ErrExist)
	case ctx.Err() != nil:
		return fmt.Errorf("create %q: %w", key, ctx.Err())
	}
	return fmt.Errorf("create %q: %w", key, s3Failure(err))
}

// putMultipart uploads size bytes as parts of partSize, up to
// s.partConcurrency at once, and commits them with a conditional
// CompleteMultipartUpload. The input's end is checked before the commit,
// so a long input is never stored.
//
// minio-go's PutObject is not used for this: it drops the If-None-Match
// header from CompleteMultipartUpload, so large objects would not be
// create-only.
func (s *S3) putMultipart(ctx context.Context, key string, er *exactReader, size, partSize int64, lock *Lock) (err error) {
	// A lock goes with the start of the upload, and the server applies it
	// to the object it commits from the parts.
	uploadID, err := s.core.NewMultipartUpload(ctx, s.bucket, key, s.withLock(minio.PutObjectOptions{}, lock))
	if err != nil {
		return s.commitError(ctx, key, err)
	}
	defer func() {
		if err != nil {
			// Parts cost storage until aborted; abort even if ctx is done.
			actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			s.core.AbortMultipartUpload(actx, s.bucket, key, uploadID)
		}
	}()

	nparts := int((size + partSize - 1) / partSize)
	parts := make([]minio.CompletePart, nparts)
	// One group owns the goroutine that reads the parts in order and the
	// uploads it starts: the first error of any of them cancels gctx, which
	// stops the others, and Wait returns it once every one has returned.
	// The limit is the reader and s.partConcurrency uploads.
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(1 + s.partConcurrency)
	// Each part buffer is allocated on first use and then recycled, so a
	// Create holds at most s.partConcurrency of them: the reader takes one
	// before reading a part, and its upload gives it back. A failed upload
	// keeps it, so that the reader, waiting for a buffer, sees gctx
	// cancelled rather than reading and starting one more part.
	free := make(chan []byte, s.partConcurrency)
	for range s.partConcurrency {
		free <- nil
	}
	g.Go(func() error {
		for i := range nparts {
			var buf []byte
			select {
			case buf = <-free:
			case <-gctx.Done():
			}
			if gctx.Err() != nil {
				// Another goroutine failed, or ctx is done: that is
				// the error to report.
				return nil
			}
			if buf == nil {
				buf = make([]byte, partSize)
			}
			n := min(partSize, size-int64(i)*partSize)
			if err := er.readFull(buf[:n]); err != nil {
				return err
			}
			g.Go(func() error {
				p, err := s.core.PutObjectPart(gctx, s.bucket, key, uploadID, i+1, bytes.NewReader(buf[:n]), n, unsignedPart())
				if err != nil {
					return fmt.Errorf("create %q: uploading part %d of %d: %w", key, i+1, nparts, s3Failure(err))
				}
				parts[i] = completePart(p)
				free <- buf
				return nil
			})
		}
		return nil
	})
	err = g.Wait()
	if ctx.Err() != nil {
		// Whatever failed first, the caller's cancellation explains it.
		return fmt.Errorf("create %q: %w", key, ctx.Err())
	}
	if err != nil {
		return err
	}
	if err := er.finish(); err != nil {
		return err
	}
	_, err = s.core.CompleteMultipartUpload(ctx, s.bucket, key, uploadID, parts, createOnly())
	return s.commitError(ctx, key, err)
}

// unsignedPart returns the options of a part upload: no payload signature,
// as minio-go does over TLS anyway. Over plain HTTP (loopback test servers) it would
// otherwise sign each 64 KiB chunk, which costs a SHA-256 pass over the
// data in this process and another in the server; payloads are already
// checked against their SHA-256 before they are stored, and again by
// their recipients.
func unsignedPart() minio.PutObjectPartOptions {
	return minio.PutObjectPartOptions{DisableContentSha256: true}
}

func completePart(p minio.ObjectPart) minio.CompletePart {
	return minio.CompletePart{
		PartNumber:        p.PartNumber,
		ETag:              p.ETag,
		ChecksumCRC32:     p.ChecksumCRC32,
		ChecksumCRC32C:    p.ChecksumCRC32C,
		ChecksumSHA1:      p.ChecksumSHA1,
		ChecksumSHA256:    p.ChecksumSHA256,
		ChecksumCRC64NVME: p.ChecksumCRC64NVME,
		ChecksumMD5:       p.ChecksumMD5,
		ChecksumSHA512:    p.ChecksumSHA512,
		ChecksumXXHash64:  p.ChecksumXXHash64,
		ChecksumXXHash3:   p.ChecksumXXHash3,
		ChecksumXXHash128: p.ChecksumXXHash128,
	}
}

// objectError maps a request error about key to the Backend's errors.
func (s *S3) objectError(ctx context.Context, op, key string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%s %q: %w", op, key, ctx.Err())
	}
	if minio.ToErrorResponse(err).Code == minio.NoSuchKey {
		return fmt.Errorf("%s %q: %w", op, key, ErrNotExist)
	}
	return fmt.Errorf("%s %q: %w", op, key, s3Failure(err))
}

// readError maps an error reading a response body of o; at says where,
// for ReadAt.
func (o *s3Object) readError(at string, err error) error {
	if o.ctx.Err() != nil {
		return fmt.Errorf("read %q%s: %w", o.key, at, o.ctx.Err())
	}
	return fmt.Errorf("read %q%s: %w", o.key, at, s3Failure(err))
}

// Stat implements [Backend.Stat].
func (s *S3) Stat(ctx context.Context, key string) (Info, error) {
	if err := ValidKey(key); err != nil {
		return Info{}, err
	}
	if err := ctx.Err(); err != nil {
		return Info{}, fmt.Errorf("stat %q: %w", key, err)
	}
	oi, err := s.client.StatObject(ctx, s.bucket, key, minio.StatObjectOptions{})
	if err != nil {
		return Info{}, s.objectError(ctx, "stat", key, err)
	}
	return Info{Key: key, Size: oi.Size, Modified: oi.LastModified}, nil
}

// Open implements [Backend.Open]. Reads use ctx: once it is done they
// fail.
func (s *S3) Open(ctx context.Context, key string) (Object, error) {
	if err := ValidKey(key); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("open %q: %w", key, err)
	}
	oi, err := s.client.StatObject(ctx, s.bucket, key, minio.StatObjectOptions{})
	if err != nil {
		return nil, s.objectError(ctx, "open", key, err)
	}
	return &s3Object{s: s, ctx: ctx, key: key, etag: oi.ETag, size: oi.Size}, nil
}

// s3Object reads with plain ranged GETs rather than through minio.Object,
// which serialises ReadAt calls behind one lock and restarts its sequential
// stream after each of them.
//
// ReadAt calls that each start where the previous one ended, as
// io.SectionReader makes of a sequential copy, are served from one GET
// streaming to the end of the object: a ranged GET per 32 KiB call costs
// over 30 times the throughput. Other calls get a ranged GET each.
type s3Object struct {
	s    *S3
	ctx  context.Context
	key  string
	etag string
	size int64

	mu     sync.Mutex // guards the sequential reader and closed
	body   io.ReadCloser
	off    int64
	closed bool

	// raMu guards ReadAt's stream; a ReadAt that finds it held, being
	// parallel to another, makes a ranged GET of its own.
	raMu   sync.Mutex
	raBody io.ReadCloser // streams from raNext, or nil
	raNext int64         // where the last ReadAt through raMu ended
}

func (o *s3Object) Size() int64 { return o.size }

func (o *s3Object) get(off, end int64) (io.ReadCloser, error) {
	var opts minio.GetObjectOptions
	if err := opts.SetMatchETag(o.etag); err != nil {
		return nil, fmt.Errorf("read %q: %w", o.key, err)
	}
	if err := opts.SetRange(off, end); err != nil {
		return nil, fmt.Errorf("read %q: %w", o.key, err)
	}
	body, _, _, err := o.s.core.GetObject(o.ctx, o.s.bucket, o.key, opts)
	if err != nil {
		if minio.ToErrorResponse(err).Code == minio.PreconditionFailed {
			return nil, fmt.Errorf("read %q: the object was replaced while open", o.key)
		}
		return nil, o.s.objectError(o.ctx, "read", o.key, err)
	}
	return body, nil
}

func (o *s3Object) Read(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return 0, fmt.Errorf("read %q: %w", o.key, os.ErrClosed)
	}
	if o.off >= o.size {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	if o.body == nil {
		body, err := o.get(o.off, o.size-1)
		if err != nil {
			return 0, err
		}
		o.body = body
	}
	n, err := o.body.Read(p)
	o.off += int64(n)
	if err == io.EOF {
		o.body.Close()
		o.body = nil
		if o.off < o.size {
			// The connection ended early.
			return n, o.readError("", io.ErrUnexpectedEOF)
		}
		return n, nil
	}
	if err != nil {
		return n, o.readError("", err)
	}
	return n, nil
}

func (o *s3Object) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read %q: negative offset %d", o.key, off)
	}
	o.mu.Lock()
	closed := o.closed
	o.mu.Unlock()
	if closed {
		return 0, fmt.Errorf("read %q: %w", o.key, os.ErrClosed)
	}
	if off >= o.size {
		return 0, io.EOF
	}
	want := min(int64(len(p)), o.size-off)
	if want == 0 {
		return 0, nil
	}
	if o.raMu.TryLock() {
		defer o.raMu.Unlock()
		if n, ok := o.readAhead(p[:want], off); ok {
			if want < int64(len(p)) {
				return n, io.EOF
			}
			return n, nil
		}
		o.raNext = off + want
	}
	body, err := o.get(off, off+want-1)
	if err != nil {
		return 0, err
	}
	defer body.Close()
	n, err := io.ReadFull(body, p[:want])
	if err != nil {
		return n, o.readError(fmt.Sprintf(" at %d", off), err)
	}
	if want < int64(len(p)) {
		return n, io.EOF
	}
	return n, nil
}

// readAhead fills p from ReadAt's stream if off is where the previous
// ReadAt ended, opening the stream on the second such call. It reports
// false, with the stream closed, if the call is not sequential or the
// stream fails; the caller then makes a ranged GET, so a broken stream
// costs a retry, not an error. o.raMu must be held.
func (o *s3Object) readAhead(p []byte, off int64) (int, bool) {
	if off != o.raNext || off == 0 {
		o.closeReadAhead()
		return 0, false
	}
	if o.raBody == nil {
		o.mu.Lock()
		closed := o.closed // Close may have run since ReadAt checked
		o.mu.Unlock()
		if closed {
			return 0, false
		}
		body, err := o.get(off, o.size-1)
		if err != nil {
			return 0, false
		}
		o.raBody = body
	}
	n, err := io.ReadFull(o.raBody, p)
	if err != nil {
		o.closeReadAhead()
		return 0, false
	}
	o.raNext = off + int64(n)
	if o.raNext == o.size {
		// Reading on to the body's EOF lets the connection be reused.
		io.CopyN(io.Discard, o.raBody, 1)
		o.closeReadAhead()
	}
	return n, true
}

func (o *s3Object) closeReadAhead() {
	if o.raBody != nil {
		o.raBody.Close()
		o.raBody = nil
	}
}

func (o *s3Object) Close() error {
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return fmt.Errorf("close %q: %w", o.key, os.ErrClosed)
	}
	o.closed = true
	if o.body != nil {
		o.body.Close()
		o.body = nil
	}
	o.mu.Unlock()
	// After the flag is set, so that no ReadAt opens a new stream.
	o.raMu.Lock()
	o.closeReadAhead()
	o.raMu.Unlock()
	return nil
}

// List implements [Backend.List].
func (s *S3) List(ctx context.Context, prefix string) ([]Info, error) {
	if err := validPrefix(prefix); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list %q: %w", prefix, err)
	}
	infos := []Info{}
	for oi := range s.client.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if oi.Err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("list %q: %w", prefix, ctx.Err())
			}
			return nil, fmt.Errorf("list %q: %w", prefix, s3Failure(oi.Err))
		}
		if keyProblem(oi.Key) != "" {
			continue
		}
		infos = append(infos, Info{Key: oi.Key, Size: oi.Size, Modified: oi.LastModified})
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list %q: %w", prefix, err)
	}
	// S3 lists in UTF-8 byte order already; keys are ASCII, so this only
	// guards against servers that do otherwise.
	slices.SortFunc(infos, func(a, b Info) int { return strings.Compare(a.Key, b.Key) })
	return infos, nil
}

// Delete implements [Backend.Delete]. With Object Lock, it reads the
// object's lock first and refuses a locked object (see [Locker]), judging
// its retention date by this process's clock: a DELETE without a version
// id, which the server allows whatever the lock, would hide it behind a
// delete marker.
func (s *S3) Delete(ctx context.Context, key string) error {
	if err := ValidKey(key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("delete %q: %w", key, err)
	}
	if s.objectLock {
		l, _, err := s.lock(ctx, "delete", key, "")
		if errors.Is(err, ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if l.Locked(time.Now()) {
			return lockedError("delete", key, l)
		}
	}
	err := s.client.RemoveObject(ctx, s.bucket, key, minio.RemoveObjectOptions{})
	if err == nil {
		return nil
	}
	if err := s.objectError(ctx, "delete", key, err); !errors.Is(err, ErrNotExist) {
		return err
	}
	return nil
}
