package crypto

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// vectorSeeds returns the golden bundles and their envelopes.
func vectorSeeds(t testing.TB) (bundles, envelopes [][]byte) {
	for _, dir := range vectorDirs(t) {
		data, err := os.ReadFile(filepath.Join(dir, "bundle.evx"))
		if err != nil {
			t.Fatal(err)
		}
		bundles = append(bundles, data)
		envelopes = append(envelopes, []byte(readVector(t, dir).EnvelopeJSON))
	}
	return bundles, envelopes
}

func FuzzParseEnvelope(f *testing.F) {
	_, envelopes := vectorSeeds(f)
	valid := mustMarshal(f, testEnvelope(f))
	seeds := append(envelopes,
		valid,
		append(bytes.Clone(valid), '\n'),
		bytes.Replace(valid, []byte(`"H1"`), []byte(`"H9"`), 1),
		bytes.Replace(valid, []byte(`{"bundle_id"`), []byte(`{"x":1,"bundle_id"`), 1),
		[]byte(`{}`),
		[]byte(`{"format":"evx-envelope/1"}`),
		[]byte(`[]`),
		[]byte(``),
		[]byte(`{"format":"evx-envelope/1","format":"evx-envelope/1"}`),
	)
	for _, s := range seeds {
		f.Add(s)
	}
	if len(envelopes) == 0 || len(seeds) == 0 {
		f.Fatal("no seeds for the fuzz corpus: the golden vectors are missing")
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := ParseEnvelope(data)
		if err != nil {
			if e != nil {
				t.Errorf("ParseEnvelope returned an envelope and the error %v", err)
			}
			return
		}
		// Only the canonical form is accepted: it re-marshals to exactly
		// the bytes it was parsed from.
		again, err := e.MarshalCanonical()
		if err != nil {
			t.Fatalf("a parsed envelope does not marshal: %v", err)
		}
		if !bytes.Equal(again, data) {
			t.Fatalf("parsed envelope re-marshals differently:\n in %q\nout %q", data, again)
		}
		if err := e.Validate(); err != nil {
			t.Fatalf("a parsed envelope is invalid: %v", err)
		}
	})
}

func FuzzReadBundle(f *testing.F) {
	bundles, _ := vectorSeeds(f)
	seeds := append([][]byte(nil), bundles...)
	if len(bundles) > 0 {
		b := bundles[0]
		seeds = append(seeds, b[:len(b)/2], b[:len(b)-1])
		tampered := bytes.Clone(b)
		tampered[len(tampered)/3] ^= 1
		seeds = append(seeds, tampered)
	}
	seeds = append(seeds,
		nil,
		[]byte("PK\x05\x06"+strings.Repeat("\x00", 18)),
		buildZip(f, []innerEntry{{name: "hello.txt", data: []byte("hi")}}),
		buildZip(f, []innerEntry{{name: payloadName, data: []byte("age")}, {name: envelopeName, data: []byte("{}")}, {name: signatureName, data: []byte("AAAA")}}),
	)
	for _, s := range seeds {
		f.Add(s)
	}
	if len(bundles) == 0 || len(seeds) == 0 {
		f.Fatal("no seeds for the fuzz corpus: the golden vectors are missing")
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := ReadBundle(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			if b != nil {
				t.Errorf("ReadBundle returned a bundle and the error %v", err)
			}
			return
		}
		again, err := b.Envelope.MarshalCanonical()
		if err != nil || !bytes.Equal(again, b.EnvelopeJSON) {
			t.Fatalf("the bundle's envelope does not re-marshal to its bytes: %v", err)
		}
		if err := b.VerifySignature(); err != nil && !errors.Is(err, ErrBadSignature) {
			t.Fatalf("VerifySignature: %v", err)
		}
		if b.Payload().Size() != b.Envelope.PayloadSize {
			t.Fatalf("payload of %d bytes, the envelope says %d", b.Payload().Size(), b.Envelope.PayloadSize)
		}
		if err := b.VerifyPayloadHash(); err != nil && !errors.Is(err, ErrPayloadHash) {
			t.Fatalf("VerifyPayloadHash: %v", err)
		}
	})
}

// FuzzDecodeManifest checks the streaming manifest decoder against
// encoding/json, which the reader used before: what decodeManifest accepts,
// encoding/json decodes to the same manifest.
func FuzzDecodeManifest(f *testing.F) {
	for _, dir := range vectorDirs(f) {
		f.Add([]byte(readVector(f, dir).ManifestJSON))
	}
	for _, s := range []string{
		`{}`, `{"files":null}`, `{"files":[]}`, `{"FILES":[{"PATH":"a","Size":1}]}`,
		`{"files":[{"path":"a"}],"files":[{"path":"b","size":2}]} trailing`,
		`{"total_files":1.5}`, `{"files":[null,{}]}`, `{"salt":"\u0041"}`, `[]`, `null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := decodeManifest(bytes.NewReader(data), 16)
		if err != nil {
			return
		}
		var want Manifest
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&want); err != nil {
			t.Fatalf("decodeManifest accepted what encoding/json refuses (%v): %+v", err, m)
		}
		if !reflect.DeepEqual(*m, want) {
			t.Fatalf("decodeManifest gives %+v, encoding/json %+v", *m, want)
		}
	})
}
