package crypto

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// TestWriteContainer rebuilds a sealed bundle from its parts, as a recipient
// does with what a gateway delivers: the result is the sealed bundle itself.
func TestWriteContainer(t *testing.T) {
	sender := newTestKey(t, "DE/forensics")
	recipient := newTestKey(t, "FR/prosecutor")
	data, env := sealTree(t, []testFile{{path: "a.bin", data: patterned(ageChunk+5, 4), mode: 0o644}}, defaultSealOptions(sender, recipient))
	b := readBundleBytes(t, data)
	payload, err := io.ReadAll(b.Payload())
	if err != nil {
		t.Fatal(err)
	}
	var rebuilt bytes.Buffer
	if err := WriteContainer(&rebuilt, b.EnvelopeJSON, b.Signature, iotest.HalfReader(bytes.NewReader(payload)), env.PayloadSize); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(rebuilt.Bytes(), data) {
		t.Errorf("rebuilt container differs from the sealed one (%d and %d bytes)", rebuilt.Len(), len(data))
	}
	if _, _, _, err := openInto(t, rebuilt.Bytes(), recipient, OpenOptions{}); err != nil {
		t.Errorf("rebuilt bundle: %v", err)
	}

	for _, tc := range []struct {
		name    string
		env     []byte
		payload []byte
		size    int64
		want    string
	}{
		{"short payload", b.EnvelopeJSON, payload[:len(payload)-1], env.PayloadSize, "payload ended after"},
		{"wrong size", b.EnvelopeJSON, payload, env.PayloadSize + 1, "the envelope says"},
		{"bad envelope", append(bytes.Clone(b.EnvelopeJSON), ' '), payload, env.PayloadSize, "not in canonical form"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := WriteContainer(io.Discard, tc.env, b.Signature, bytes.NewReader(tc.payload), tc.size)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestPayloadVerifier(t *testing.T) {
	sender := newTestKey(t, "DE/forensics")
	recipient := newTestKey(t, "FR/prosecutor")
	data, env := sealTree(t, []testFile{{path: "a.bin", data: patterned(2*ageChunk, 5), mode: 0o644}}, defaultSealOptions(sender, recipient))
	payload, err := io.ReadAll(readBundleBytes(t, data).Payload())
	if err != nil {
		t.Fatal(err)
	}
	read := func(r io.Reader) ([]byte, error) {
		got, err := io.ReadAll(NewPayloadVerifier(r, env))
		return got, err
	}

	got, err := read(iotest.OneByteReader(bytes.NewReader(payload[:1000])))
	if !errors.Is(err, ErrPayloadSize) {
		t.Errorf("short payload: %v", err)
	}
	if len(got) != 1000 {
		t.Errorf("short payload: %d bytes passed through", len(got))
	}

	got, err = read(bytes.NewReader(payload))
	if err != nil || !bytes.Equal(got, payload) {
		t.Errorf("exact payload: %v (%d bytes)", err, len(got))
	}
	if _, err := read(iotest.HalfReader(bytes.NewReader(payload))); err != nil {
		t.Errorf("exact payload in small reads: %v", err)
	}

	got, err = read(bytes.NewReader(append(bytes.Clone(payload), 'x')))
	if !errors.Is(err, ErrPayloadSize) || !strings.Contains(err.Error(), "longer than") {
		t.Errorf("long payload: %v", err)
	}
	if len(got) != len(payload) {
		t.Errorf("long payload: %d bytes passed through, want no more than the declared %d", len(got), len(payload))
	}

	bad := bytes.Clone(payload)
	bad[len(bad)/2] ^= 1
	if _, err := read(bytes.NewReader(bad)); !errors.Is(err, ErrPayloadHash) {
		t.Errorf("changed payload: %v", err)
	}

	boom := errors.New("connection reset")
	if _, err := read(io.MultiReader(bytes.NewReader(payload[:10]), iotest.ErrReader(boom))); !errors.Is(err, boom) {
		t.Errorf("failing reader: %v", err)
	}

	// The verdict sticks: reading again repeats the error.
	v := NewPayloadVerifier(bytes.NewReader(bad), env)
	io.Copy(io.Discard, v)
	if _, err := v.Read(make([]byte, 1)); !errors.Is(err, ErrPayloadHash) {
		t.Errorf("read after the end: %v", err)
	}
}
