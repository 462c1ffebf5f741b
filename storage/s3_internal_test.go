package storage

import (
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
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
)

// Every size up to MaxObjectSize fits in S3's 10,000 parts, at every
// allowed configured part size; part sizes only grow when they must.
func TestPartSizeFor(t *testing.T) {
	for _, configured := range []int64{MinPartSize, DefaultPartSize, 64 << 20} {
		for _, size := range []int64{0, 1, configured, configured + 1, maxPartCount * configured, maxPartCount*configured + 1, MaxObjectSize - 1, MaxObjectSize} {
			ps := partSizeFor(configured, size)
			if ps < configured || ps > maxPartSize {
				t.Errorf("partSizeFor(%d, %d) = %d, outside %d to %d", configured, size, ps, configured, int64(maxPartSize))
			}
			if parts := (size + ps - 1) / ps; parts > maxPartCount {
				t.Errorf("partSizeFor(%d, %d) = %d: %d parts", configured, size, ps, parts)
			}
			if size <= maxPartCount*configured && ps != configured {
				t.Errorf("partSizeFor(%d, %d) = %d, want the configured size", configured, size, ps)
			}
		}
	}
	// 64 GiB at 5 MiB parts would be 13,108 parts.
	if ps := partSizeFor(MinPartSize, MaxObjectSize); ps != 7<<20 {
		t.Errorf("partSizeFor(5 MiB, 64 GiB) = %d, want 7 MiB", ps)
	}
}

// Which request errors mean that the server cannot serve for now. The
// tests in s3_unavailable_test.go produce most of these for real; this
// table also covers those that a test cannot easily produce.
func TestS3Unavailable(t *testing.T) {
	refused := &url.Error{Op: "Get", URL: "http://s3/b/k", Err: &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}}
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{refused, true},
		{&url.Error{Op: "Get", URL: "http://s3/b/k", Err: &net.DNSError{Err: "server misbehaving", Name: "s3", IsTemporary: true}}, true},
		{&url.Error{Op: "Get", URL: "http://s3/b/k", Err: &net.DNSError{Err: "no such host", Name: "s3", IsNotFound: true}}, false},
		{&url.Error{Op: "Get", URL: "https://s3/b/k", Err: x509.UnknownAuthorityError{}}, false},
		{&url.Error{Op: "Get", URL: "https://s3/b/k", Err: &tls.CertificateVerificationError{Err: x509.HostnameError{}}}, false},
		{&url.Error{Op: "Get", URL: "https://s3/b/k", Err: http.ErrSchemeMismatch}, false},
		{&url.Error{Op: "Get", URL: "http://s3/b/k", Err: context.Canceled}, false},
		{minio.ErrorResponse{StatusCode: 503, Code: "SlowDown"}, true},
		{minio.ErrorResponse{StatusCode: 503, Code: "503 Service Unavailable"}, true},
		{minio.ErrorResponse{StatusCode: 500, Code: "InternalError"}, true},
		{minio.ErrorResponse{StatusCode: 507, Code: "XMinioStorageFull"}, true},
		{minio.ErrorResponse{StatusCode: 429, Code: "TooManyRequests"}, true},
		{minio.ErrorResponse{StatusCode: 400, Code: "RequestTimeout"}, true},
		{minio.ErrorResponse{StatusCode: 501, Code: "NotImplemented"}, false},
		{minio.ErrorResponse{StatusCode: 404, Code: "NoSuchBucket"}, false},
		{minio.ErrorResponse{StatusCode: 403, Code: "AccessDenied"}, false},
		{minio.ErrorResponse{StatusCode: 403, Code: "SignatureDoesNotMatch"}, false},
		{minio.ErrorResponse{StatusCode: 412, Code: "PreconditionFailed"}, false},
		{fmt.Errorf("part: %w", io.ErrUnexpectedEOF), true},
		{&net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}, true},
		{errors.New("something else"), false},
	} {
		err := s3Failure(tc.err)
		if got := errors.Is(err, ErrUnavailable); got != tc.want {
			t.Errorf("s3Failure(%#v) = %v, unavailable %v; want %v", tc.err, err, got, tc.want)
		}
		if !errors.Is(err, tc.err) {
			t.Errorf("s3Failure(%v) = %v, which does not wrap it", tc.err, err)
		}
	}
}

// The default limits bound a call against a dead server to about a minute.
func TestDefaultS3Limits(t *testing.T) {
	l := defaultS3Limits
	if l.dial <= 0 || l.handshake <= 0 || l.wait <= 0 || l.attempts <= 0 {
		t.Fatalf("defaultS3Limits = %+v: every limit must be set", l)
	}
	if worst := time.Duration(l.attempts) * (l.dial + l.handshake + l.wait); worst > 2*time.Minute {
		t.Errorf("defaultS3Limits = %+v: a request can wait %v", l, worst)
	}
}
