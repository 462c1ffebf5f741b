package crypto

import (
	"archive/zip"
	"encoding/base64"
	"fmt"
	"io"
	"time"
)

// WriteContainer writes a bundle container from its parts: the canonical
// envelope, its signature and the payload (size bytes read from payload).
// Recipients who receive the parts separately, from a gateway, use it to
// rebuild the bundle the sender sealed, byte for byte in every entry.
func WriteContainer(w io.Writer, envJSON, sig []byte, payload io.Reader, size int64) error {
	env, err := ParseEnvelope(envJSON)
	if err != nil {
		return err
	}
	if size != env.PayloadSize {
		return fmt.Errorf("payload is %d bytes, the envelope says %d", size, env.PayloadSize)
	}
	outer := zip.NewWriter(w)
	pw, err := outer.CreateHeader(&zip.FileHeader{Name: payloadName, Method: zip.Store, Modified: env.Created})
	if err != nil {
		return err
	}
	n, err := io.Copy(pw, io.LimitReader(payload, size))
	if err != nil {
		return err
	}
	if n != size {
		return fmt.Errorf("payload ended after %d of %d bytes", n, size)
	}
	if err := writeEnvelopeEntries(outer, envJSON, sig, env.Created); err != nil {
		return err
	}
	return outer.Close()
}

// writeEnvelopeEntries adds envelope.json and envelope.sig after payload.age.
func writeEnvelopeEntries(outer *zip.Writer, envJSON, sig []byte, mod time.Time) error {
	if err := writeStored(outer, envelopeName, envJSON, mod); err != nil {
		return err
	}
	return writeStored(outer, signatureName, []byte(base64.StdEncoding.EncodeToString(sig)+"\n"), mod)
}
