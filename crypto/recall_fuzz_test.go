package crypto

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// recallVectorBody returns the body of the signed document in the recall
// vectors' file name.
func recallVectorBody(f *testing.F, name string) []byte {
	f.Helper()
	data, err := os.ReadFile(filepath.Join(recallVectorsDir, name))
	if err != nil {
		f.Fatal(err)
	}
	var s Signed
	if err := json.Unmarshal(data, &s); err != nil {
		f.Fatal(err)
	}
	return s.Body
}

// FuzzParseRecall feeds hostile request bodies to ParseRecallBody: it
// never panics, quotes no whole input, and whatever it accepts is the one
// canonical, valid encoding of the request.
func FuzzParseRecall(f *testing.F) {
	good := recallVectorBody(f, "request.json")
	for _, s := range [][]byte{
		good,
		append(bytes.Clone(good), ' '),
		bytes.Replace(good, []byte(`"format"`), []byte(`"x":1,"format"`), 1),
		bytes.Replace(good, []byte(`"unit"`), []byte(`"Unit":"DE/x","unit"`), 1),
		bytes.Replace(good, []byte(`Z"`), []byte(`.5Z"`), 1),
		[]byte(`{}`),
		[]byte(`null`),
		[]byte(`{"format":"evx-recall/1"}`),
		nil,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := ParseRecallBody(body)
		if err != nil {
			if r != nil {
				t.Fatalf("ParseRecallBody returned a request and the error %v", err)
			}
			if len(err.Error()) > 2048 {
				t.Fatalf("error of %d bytes: %.100q…", len(err.Error()), err)
			}
			return
		}
		again, err := canonicalJSON(r.wire())
		if err != nil || !bytes.Equal(again, body) {
			t.Fatalf("an accepted request encodes as %q, not as the %q it was read from (%v)", again, body, err)
		}
		if err := r.check(); err != nil {
			t.Fatalf("an accepted request is invalid: %v", err)
		}
	})
}

// FuzzParseRecallAck is FuzzParseRecall for acks.
func FuzzParseRecallAck(f *testing.F) {
	applied, declined := recallVectorBody(f, "ack-applied.json"), recallVectorBody(f, "ack-declined.json")
	for _, s := range [][]byte{
		applied,
		declined,
		bytes.Replace(applied, []byte(`"applied":true`), []byte(`"applied":false`), 1),
		bytes.Replace(declined, []byte(`"applied":false`), []byte(`"applied":true`), 1),
		bytes.Replace(applied, []byte(`"gateway":"FR"`), []byte(`"gateway":"FR","gateway":"NL"`), 1),
		[]byte(`{}`),
		[]byte(`[]`),
		nil,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		a, err := ParseRecallAckBody(body)
		if err != nil {
			if a != nil {
				t.Fatalf("ParseRecallAckBody returned an ack and the error %v", err)
			}
			if len(err.Error()) > 2048 {
				t.Fatalf("error of %d bytes: %.100q…", len(err.Error()), err)
			}
			return
		}
		again, err := canonicalJSON(a.wire())
		if err != nil || !bytes.Equal(again, body) {
			t.Fatalf("an accepted ack encodes as %q, not as the %q it was read from (%v)", again, body, err)
		}
		if err := a.check(); err != nil {
			t.Fatalf("an accepted ack is invalid: %v", err)
		}
	})
}
