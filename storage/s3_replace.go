package storage

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"fmt"
	"io"

	"github.com/minio/minio-go/v7"
)

// ReadVersion implements [Backend.ReadVersion]. The version is the
// object's ETag, from the same GET response as the data, so the two
// belong together.
func (s *S3) ReadVersion(ctx context.Context, key string, limit int64) ([]byte, string, error) {
	if err := checkReadVersion(ctx, key, limit); err != nil {
		return nil, "", err
	}
	body, oi, _, err := s.core.GetObject(ctx, s.bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, "", s.objectError(ctx, "read", key, err)
	}
	defer body.Close()
	if oi.Size > limit {
		return nil, "", tooLarge(key, oi.Size, limit)
	}
	if oi.Size < 0 || !validETag(oi.ETag) {
		return nil, "", fmt.Errorf("read %q: the server's answer has no size or no usable ETag (%q)", key, oi.ETag)
	}
	data := make([]byte, oi.Size)
	if _, err := io.ReadFull(body, data); err != nil {
		if ctx.Err() != nil {
			return nil, "", fmt.Errorf("read %q: %w", key, ctx.Err())
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, "", fmt.Errorf("read %q: %w", key, s3Failure(err))
	}
	return data, oi.ETag, nil
}

// Replace implements [Backend.Replace] with one conditional PUT: If-Match
// the ETag ifVersion, or If-None-Match: * for "", which the server
// evaluates atomically as it commits the object. The new version is the
// ETag of the PUT's answer. The server must support conditional writes
// with If-Match (AWS S3 does since November 2024, MinIO does); on one that
// ignores them, Replace would overwrite whatever is stored.
//
// On a versioned bucket every Replace leaves the object it replaces as a
// noncurrent version, and If-Match compares against the current version:
// after a Delete, that is a delete marker, which matches no ETag but
// satisfies If-None-Match: * (the key holds no object).
//
// The PUT is sent once, never retried by minio-go: if an attempt stored
// the object but its answer was lost, a retry would fail its condition
// against that very object, and Replace would report a mismatch for a
// write that took effect. Without the retry, the caller gets the lost
// answer's error, which does not claim a mismatch.
func (s *S3) Replace(ctx context.Context, key string, data []byte, ifVersion string) (string, error) {
	if err := ValidKey(key); err != nil {
		return "", err
	}
	if err := checkReplaceSize(key, data); err != nil {
		return "", err
	}
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("replace %q: %w", key, err)
	}
	var opts minio.PutObjectOptions
	if ifVersion == "" {
		opts.SetMatchETagExcept("*")
	} else {
		if !validETag(ifVersion) {
			// Not an ETag, so not the version of anything stored; and
			// not to be put in a header.
			return "", fmt.Errorf("replace %q: %w: %q is not a version of this backend", key, ErrVersionMismatch, ifVersion)
		}
		opts.SetMatchETag(ifVersion)
	}
	// The MD5 lets the server check that it received data intact.
	sum := md5.Sum(data)
	body := struct{ io.Reader }{bytes.NewReader(data)} // hides Seek: see above
	info, err := s.core.PutObject(ctx, s.bucket, key, body, int64(len(data)), base64.StdEncoding.EncodeToString(sum[:]), "", opts)
	if err != nil {
		switch code := minio.ToErrorResponse(err).Code; {
		case code == minio.PreconditionFailed,
			// If-Match on a key that holds no object (AWS S3).
			code == minio.NoSuchKey && ifVersion != "",
			// A concurrent write to the key won the race while this
			// one was checked (AWS S3); nothing was stored.
			code == "ConditionalRequestConflict":
			if ifVersion == "" {
				return "", fmt.Errorf("replace %q: %w: an object is stored, and none was expected", key, ErrVersionMismatch)
			}
			return "", fmt.Errorf("replace %q: %w: the stored object is not version %q", key, ErrVersionMismatch, ifVersion)
		case ctx.Err() != nil:
			return "", fmt.Errorf("replace %q: %w", key, ctx.Err())
		}
		return "", fmt.Errorf("replace %q: %w", key, s3Failure(err))
	}
	if !validETag(info.ETag) {
		return "", fmt.Errorf("replace %q: the server stored the object but returned no usable ETag (%q)", key, info.ETag)
	}
	return info.ETag, nil
}

// validETag reports whether v can be a version of this backend: the value
// of an ETag, without its quotes, of 1 to [maxVersionLength] of the
// characters RFC 9110 allows in one. "*" is not one: If-Match: * matches
// any object.
func validETag(v string) bool {
	if v == "" || v == "*" || len(v) > maxVersionLength {
		return false
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x21 || c == '"' || c > 0x7e {
			return false
		}
	}
	return true
}
