package crypto

import (
	"bytes"
	"errors"
	"fmt"
	"io"
)

// MaxAgeHeaderSize bounds the age header of payload.age. age itself puts no
// limit on header size or recipient count, so an untrusted payload is checked
// before age reads it: a hybrid recipient stanza is about 1.6 KiB, so 64 KiB
// leaves ample room for MaxRecipients.
const MaxAgeHeaderSize = 64 << 10

// checkAgeHeader reads at most MaxAgeHeaderSize bytes from the start of an
// age file and rejects it unless its header ends within them and has at most
// MaxRecipients recipient stanzas.
func checkAgeHeader(r io.ReaderAt, size int64) error {
	buf := make([]byte, min(size, MaxAgeHeaderSize))
	n, err := r.ReadAt(buf, 0)
	if n < len(buf) && err != nil {
		return fmt.Errorf("reading age header: %w", err)
	}
	buf = buf[:n]
	if !bytes.HasPrefix(buf, []byte("age-encryption.org/v1\n")) {
		return errors.New("payload is not an age file (it lacks the age-encryption.org/v1 intro)")
	}
	stanzas := 0
	for rest := buf; ; {
		line, after, ok := bytes.Cut(rest, []byte("\n"))
		if !ok {
			return fmt.Errorf("age header does not end within %d bytes", MaxAgeHeaderSize)
		}
		if bytes.HasPrefix(line, []byte("-> ")) {
			stanzas++
			if stanzas > MaxRecipients {
				return fmt.Errorf("age header has more than %d recipient stanzas", MaxRecipients)
			}
		}
		if bytes.HasPrefix(line, []byte("--- ")) {
			return nil
		}
		rest = after
	}
}
