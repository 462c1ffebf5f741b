package transfer

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"net"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"evx/crypto"

	"github.com/quic-go/quic-go"
)

// rawFrame is a frame with body as it is, however malformed.
func rawFrame(typ byte, body string) []byte {
	b := make([]byte, frameHeaderSize, frameHeaderSize+len(body))
	b[0] = typ
	binary.BigEndian.PutUint32(b[1:], uint32(len(body)))
	return append(b, body...)
}

func TestUnmarshalStrict(t *testing.T) {
	for _, ok := range []string{`{"offset":0}`, ` {"offset":5}`, `{}`} {
		var a acceptFrame
		if err := unmarshalStrict([]byte(ok), &a); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{
		`{"offset":0,"offset":5}`, `{"offset":5,"Offset":0}`, `{"OFFSET":5,"offset":0}`,
		`null`, ``, `[]`, `5`, `"x"`, `{"offset":0}{}`, `{"offset":0,"extra":1}`, `{"offset":0`,
	} {
		var a acceptFrame
		if err := unmarshalStrict([]byte(bad), &a); !errors.Is(err, errMalformedFrame) {
			t.Errorf("%s: err = %v, want a malformed frame", bad, err)
		}
	}
	// Repeated members deep inside a frame count too.
	var rf receiptFrame
	if err := unmarshalStrict([]byte(`{"receipt":{"body":"","signature":"","body":"e30="}}`), &rf); !errors.Is(err, errMalformedFrame) {
		t.Errorf("receipt repeating a member: %v", err)
	}
}

// TestOfferWithRepeatedMembers sends FR offers whose frame repeats a
// member: FR must refuse them as malformed, whichever copy is the real
// envelope.
func TestOfferWithRepeatedMembers(t *testing.T) {
	w := newWorld(t)
	srv, recv, _ := startFR(t, w)
	env, sig, _ := sealed(t, w.unitDE, w.recipientFR, 1000)
	b64 := base64.StdEncoding.EncodeToString
	e, s := `"envelope":"`+b64(env)+`"`, `"signature":"`+b64(sig)+`"`
	for _, body := range []string{
		`{` + e + `,` + s + `,"envelope":"e30="}`,
		`{"envelope":"e30=",` + e + `,` + s + `}`,
		`{` + e + `,` + s + `,"Signature":"AAAA"}`,
		`{` + e + `,` + s + `,` + s + `}`,
	} {
		c := newTestClient(t, "DE", w.certDE)
		str := rawStream(t, bounded(t), c, w.peerFR(srv))
		str.Write(rawFrame(frameOffer, body))
		var rf receiptFrame
		err := decodeFrame(str, frameReceipt, &rf)
		wantRejection(t, err, CodeMalformed)
		if !strings.Contains(err.Error(), "more than once") {
			t.Errorf("rejection %v does not name the repeated member", err)
		}
		str.Close()
		str.CancelRead(0)
	}
	if n := recv.count(); n != 0 {
		t.Errorf("%d bundles stored from malformed offers", n)
	}
}

// hostileFR is a peer FR, authenticated as such, that answers every
// stream's first frame with answer.
func hostileFR(t *testing.T, w *world, answer []byte) Peer {
	t.Helper()
	ln, err := quic.ListenAddr("127.0.0.1:0", serverTLS(w.certFR, map[string]*x509.CertPool{"DE": w.poolDE}, time.Now, func(net.Addr, error) {}), quicConfig())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			conn, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			wg.Go(func() {
				defer conn.CloseWithError(0, "")
				for {
					str, err := conn.AcceptStream(ctx)
					if err != nil {
						return
					}
					str.SetDeadline(time.Now().Add(10 * time.Second))
					if _, _, err := readFrame(str, MaxFrameSize); err == nil {
						str.Write(answer)
					}
					str.Close()
					str.CancelRead(0)
				}
			})
		}
	})
	return Peer{ID: "FR", Address: ln.Addr().String(), CA: w.poolFR, SigningKey: w.signFR.Public()}
}

// TestHostileAnswers has FR answer with frames that decode to nothing
// usable or repeat members: each is an error for the exchange, never a
// crash or a delivery.
func TestHostileAnswers(t *testing.T) {
	w := newWorld(t)
	env, sig, payload := sealed(t, w.unitDE, w.recipientFR, 1000)
	rc, err := signReceipt(w.signFR, mustEnvelope(t, env), "DE", "FR", 0)
	if err != nil {
		t.Fatal(err)
	}
	signed := `{"body":"` + base64.StdEncoding.EncodeToString(rc.Body) + `","signature":"` + base64.StdEncoding.EncodeToString(rc.Signature) + `"}`
	tests := []struct {
		name   string
		answer []byte
		want   string
	}{
		{"receipt without a receipt", rawFrame(frameReceipt, `{}`), "receipt: missing"},
		{"null receipt", rawFrame(frameReceipt, `{"receipt":null}`), "receipt: missing"},
		{"receipt frame that is null", rawFrame(frameReceipt, `null`), "not a JSON object"},
		{"receipt repeated", rawFrame(frameReceipt, `{"receipt":`+signed+`,"receipt":null}`), "more than once"},
		{"accept repeating its offset", rawFrame(frameAccept, `{"offset":0,"Offset":999}`), "more than once"},
		{"reject repeating its code", rawFrame(frameReject, `{"code":"unavailable","reason":"x","code":"malformed"}`), "more than once"},
		{"reject with a witness's known size", rawFrame(frameReject, `{"code":"conflict","reason":"x","known_size":3}`), "known_size in a \"conflict\" rejection"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestClient(t, "DE", w.certDE)
			_, err := c.Send(bounded(t), hostileFR(t, w, tt.answer), env, sig, bytes.NewReader(payload))
			var rej *Rejection
			if err == nil || errors.As(err, &rej) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want an error with %q", err, tt.want)
			}
		})
	}
	for _, tt := range []struct {
		name   string
		answer []byte
		want   string
	}{
		{"directory without a directory", rawFrame(frameDirectory, `{}`), "unit directory of FR: missing"},
		{"directory repeated", rawFrame(frameDirectory, `{"directory":{"body":"e30=","signature":""},"directory":null}`), "more than once"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestClient(t, "DE", w.certDE)
			_, err := c.FetchDirectory(bounded(t), hostileFR(t, w, tt.answer))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want an error with %q", err, tt.want)
			}
		})
	}
}

func mustEnvelope(t *testing.T, envJSON []byte) *crypto.Envelope {
	t.Helper()
	env, err := crypto.ParseEnvelope(envJSON)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// TestReadFrameAllocatesWhatArrives announces the largest frames and sends
// a few bytes of each: reading them must not allocate what was announced.
func TestReadFrameAllocatesWhatArrives(t *testing.T) {
	announced := rawFrame(frameDirectory, "")
	binary.BigEndian.PutUint32(announced[1:], MaxDirectoryFrameSize)
	announced = append(announced, `{"directory":`...)
	const runs = 100
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range runs {
		if _, _, err := readFrame(bytes.NewReader(announced), MaxDirectoryFrameSize); !errors.Is(err, errMalformedFrame) {
			t.Fatalf("err = %v, want a truncated frame", err)
		}
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / runs; per > 64<<10 {
		t.Errorf("reading a truncated frame that announced %d bytes allocated %d bytes", MaxDirectoryFrameSize, per)
	}
}

// FuzzReadFrame decodes arbitrary bytes as each frame type. Whatever is
// accepted has no repeated member, is within its frame's bounds, and
// survives a round trip unchanged.
func FuzzReadFrame(f *testing.F) {
	f.Add(rawFrame(frameOffer, `{"envelope":"e30=","signature":"AAAA"}`))
	f.Add(rawFrame(frameAccept, `{"offset":0}`))
	f.Add(rawFrame(frameAccept, `{"offset":0,"offset":1}`))
	f.Add(rawFrame(frameReject, `{"code":"malformed","reason":"x"}`))
	f.Add(rawFrame(frameReceipt, `{"receipt":{"body":"e30=","signature":"AAAA"},"duplicate":true}`))
	f.Add(rawFrame(frameReceipt, `{"receipt":{"body":"e30=","Body":"AAAA"}}`))
	f.Add(rawFrame(frameDirectoryRequest, `{}`))
	f.Add(rawFrame(frameDirectory, `{"directory":null}`))
	f.Add([]byte{frameOffer, 0xff, 0xff, 0xff, 0xff})
	f.Add(rawFrame(frameReject, `{"code":"conflict","reason":"x","known_size":3}`))
	f.Add(rawFrame(frameWitnessRequest, `{"checkpoint":"eA==","old_size":0,"consistency":[]}`))
	f.Add(rawFrame(frameWitnessRequest, `{"checkpoint":"eA==","old_size":2,"consistency":["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="]}`))
	f.Add(rawFrame(frameWitness, `{"cosignature":"eA=="}`))
	f.Add(rawFrame(frameProofRequest, `{"leaf_hash":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","leaf_index":1,"tree_size":2}`))
	f.Add(rawFrame(frameProof, `{"checkpoint":"eA==","leaf_index":1,"proof":["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="]}`))
	newFrame := map[byte]func() any{
		frameOffer:            func() any { return new(offerFrame) },
		frameAccept:           func() any { return new(acceptFrame) },
		frameReject:           func() any { return new(rejectFrame) },
		frameReceipt:          func() any { return new(receiptFrame) },
		frameDirectoryRequest: func() any { return new(struct{}) },
		frameDirectory:        func() any { return new(directoryFrame) },
		frameWitnessRequest:   func() any { return new(WitnessRequest) },
		frameWitness:          func() any { return new(WitnessResponse) },
		frameProofRequest:     func() any { return new(ProofRequest) },
		frameProof:            func() any { return new(ProofResponse) },
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for typ, mk := range newFrame {
			v := mk()
			if err := decodeFrame(bytes.NewReader(data), typ, v); err != nil {
				continue
			}
			_, body, err := readFrame(bytes.NewReader(data), MaxDirectoryFrameSize)
			if err != nil {
				t.Fatalf("decoded a frame that does not read: %v", err)
			}
			if err := crypto.CheckUniqueMembers(body); err != nil {
				t.Fatalf("accepted a body with %v: %q", err, body)
			}
			if c, ok := v.(checker); ok {
				if err := c.check(); err != nil {
					t.Fatalf("accepted a body out of bounds, %v: %q", err, body)
				}
			}
			var buf bytes.Buffer
			if err := writeFrame(&buf, typ, v); err != nil {
				t.Fatalf("re-encoding %#v: %v", v, err)
			}
			again := mk()
			if err := decodeFrame(&buf, typ, again); err != nil {
				t.Fatalf("decoding the re-encoded %#v: %v", v, err)
			}
			if !reflect.DeepEqual(v, again) {
				t.Fatalf("round trip changed %#v into %#v", v, again)
			}
		}
	})
}
