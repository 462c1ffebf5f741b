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

// hybridStanzaType is the stanza type of age's ML-KEM-768 + X25519 recipients.
const hybridStanzaType = "mlkem768x25519"

// checkAgeHeader reads at most MaxAgeHeaderSize bytes from the start of an
// age file and rejects it unless its header ends within them and has at most
// MaxRecipients recipient stanzas, all of the post-quantum hybrid type.
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
			// Any other stanza would be a recipient without post-quantum
			// protection hidden beside the listed ones.
			if !bytes.HasPrefix(line, []byte("-> "+hybridStanzaType+" ")) {
				typ, _, _ := bytes.Cut(line[3:], []byte(" "))
				return fmt.Errorf("age header has a %q recipient stanza: evx bundles have post-quantum hybrid (%s) recipients only", typ, hybridStanzaType)
			}
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
