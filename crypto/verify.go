package crypto

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
)

// ErrPayloadSize is wrapped by the errors of a [PayloadVerifier] when the
// payload is shorter or longer than its envelope declares.
var ErrPayloadSize = errors.New("payload size differs from the envelope")

// PayloadVerifier reads a payload.age stream and returns io.EOF only after
// exactly the envelope's declared size, with the envelope's SHA-256. Any
// other ending is an error wrapping ErrPayloadSize or ErrPayloadHash, so a
// storage backend reading from it never commits a wrong payload.
type PayloadVerifier struct {
	r         io.Reader
	declared  int64
	remaining int64
	want      [32]byte
	h         hash.Hash
	err       error
}

// NewPayloadVerifier returns a PayloadVerifier of r for env.
func NewPayloadVerifier(r io.Reader, env *Envelope) *PayloadVerifier {
	return &PayloadVerifier{r: r, declared: env.PayloadSize, remaining: env.PayloadSize,
		want: env.PayloadSHA256, h: sha256.New()}
}

func (p *PayloadVerifier) Read(b []byte) (int, error) {
	if p.err != nil {
		return 0, p.err
	}
	if p.remaining == 0 {
		p.err = p.finish()
		return 0, p.err
	}
	if int64(len(b)) > p.remaining {
		b = b[:p.remaining]
	}
	n, err := p.r.Read(b)
	p.h.Write(b[:n])
	p.remaining -= int64(n)
	switch {
	case err == io.EOF && p.remaining > 0:
		p.err = fmt.Errorf("%w: it ended after %d bytes, the envelope declares %d", ErrPayloadSize, p.declared-p.remaining, p.declared)
		return n, p.err
	case err != nil && err != io.EOF:
		p.err = err
		return n, err
	}
	return n, nil
}

// finish checks that nothing follows the declared size, and the hash.
func (p *PayloadVerifier) finish() error {
	var one [1]byte
	n, err := io.ReadFull(p.r, one[:])
	if n > 0 {
		return fmt.Errorf("%w: it is longer than the %d bytes the envelope declares", ErrPayloadSize, p.declared)
	}
	if err != io.EOF {
		return fmt.Errorf("reading the end of the payload: %w", err)
	}
	if [32]byte(p.h.Sum(nil)) != p.want {
		return ErrPayloadHash
	}
	return io.EOF
}
