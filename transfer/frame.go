package transfer

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"evx/crypto"
)

// Frame types of protocol v1.
const (
	frameOffer            byte = 1
	frameAccept           byte = 2
	frameReject           byte = 3
	frameReceipt          byte = 4
	frameDirectoryRequest byte = 5
	frameDirectory        byte = 6
	frameWitnessRequest   byte = 7
	frameWitness          byte = 8
	frameProofRequest     byte = 9
	frameProof            byte = 10
	// The agreement exchange (agreements.go).
	frameAgreementNotice byte = 11
	frameAgreement       byte = 12
	// The recall exchange (recall.go).
	frameRecall    byte = 13
	frameRecallAck byte = 14
)

// MaxFrameSize bounds the body of every frame but a directory: the largest
// is an offer, whose envelope is at most crypto.MaxEnvelopeSize bytes,
// base64-encoded.
const MaxFrameSize = 256 << 10

// MaxDirectoryFrameSize bounds a directory frame, which only a gateway that
// asked for it reads. A recipient's entry is about 2.7 KiB once encoded (its
// post-quantum age key is nearly 2,000 characters), so this admits
// directories of some 3,000 units.
const MaxDirectoryFrameSize = 8 << 20

// MaxLogFrameSize bounds the frames of the log's exchanges (WITNESS_REQUEST,
// WITNESS, PROOF_REQUEST, PROOF): a checkpoint of MaxCheckpointSize and a
// proof of MaxProofHashes, base64-encoded, take some 14 KiB.
const MaxLogFrameSize = 16 << 10

// maxBody returns the largest body a frame of type typ may have.
func maxBody(typ byte) int {
	switch typ {
	case frameDirectory:
		return MaxDirectoryFrameSize
	case frameWitnessRequest, frameWitness, frameProofRequest, frameProof:
		return MaxLogFrameSize
	case frameAgreementNotice, frameAgreement:
		return MaxAgreementFrameSize
	case frameRecall, frameRecallAck:
		return MaxRecallFrameSize
	}
	return MaxFrameSize
}

// frameHeaderSize is one type byte and a four-byte big-endian body length.
const frameHeaderSize = 5

type offerFrame struct {
	Envelope  []byte `json:"envelope"`
	Signature []byte `json:"signature"`
}

type acceptFrame struct {
	Offset int64 `json:"offset"`
}

type rejectFrame struct {
	Code   string `json:"code"`
	Reason string `json:"reason"`
	// KnownSize is sent only in a conflict answering a witness request.
	KnownSize *int64 `json:"known_size,omitempty"`
}

type receiptFrame struct {
	Receipt   *crypto.Signed `json:"receipt"`
	Duplicate bool           `json:"duplicate,omitempty"`
}

type directoryFrame struct {
	Directory *crypto.Signed `json:"directory"`
}

func writeFrame(w io.Writer, typ byte, body any) error {
	data, err := json.Marshal(body)
	if err != nil {
		return err
	}
	if limit := maxBody(typ); len(data) > limit {
		return fmt.Errorf("frame of %d bytes exceeds the limit of %d", len(data), limit)
	}
	buf := make([]byte, frameHeaderSize, frameHeaderSize+len(data))
	buf[0] = typ
	binary.BigEndian.PutUint32(buf[1:], uint32(len(data)))
	_, err = w.Write(append(buf, data...))
	return err
}

// errMalformedFrame is wrapped by every framing error.
var errMalformedFrame = errors.New("malformed frame")

// readFrame reads one frame, refusing bodies over limit, or over the limit
// of the frame's type, before reading them. The body's buffer grows with
// the bytes that arrive rather than being allocated whole from the header,
// so that a peer that announces large frames and sends none costs nothing.
// Once the header is read, its type is returned with any error, so that a
// refusal can be counted under the exchange the frame would have begun.
func readFrame(r io.Reader, limit int) (byte, []byte, error) {
	var hdr [frameHeaderSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	typ, n := hdr[0], binary.BigEndian.Uint32(hdr[1:])
	if n > uint32(limit) {
		return typ, nil, fmt.Errorf("%w: body of %d bytes exceeds the limit of %d", errMalformedFrame, n, limit)
	}
	if typLimit := maxBody(typ); n > uint32(typLimit) {
		return typ, nil, fmt.Errorf("%w: body of %d bytes exceeds the limit of %d for frame type %d", errMalformedFrame, n, typLimit, typ)
	}
	body := bytes.NewBuffer(make([]byte, 0, min(int(n), frameReadChunk)))
	if _, err := io.CopyN(body, r, int64(n)); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return typ, nil, fmt.Errorf("%w: truncated body: %v", errMalformedFrame, err)
	}
	return typ, body.Bytes(), nil
}

// frameReadChunk is the buffer a frame body starts with: enough for every
// frame but an offer or a directory.
const frameReadChunk = 4 << 10

// decodeFrame reads a frame of type want into v. A reject frame instead is
// returned as a *Rejection error, checked as an answer to a request of the
// exchange that wants want (decodeRejection).
func decodeFrame(r io.Reader, want byte, v any) error {
	typ, body, err := readFrame(r, max(MaxFrameSize, maxBody(want)))
	if err != nil {
		return err
	}
	if typ == frameReject && want != frameReject {
		return decodeRejection(body, want == frameWitness)
	}
	if typ != want {
		return fmt.Errorf("%w: got frame type %d, want %d", errMalformedFrame, typ, want)
	}
	return unmarshalStrict(body, v)
}

// unmarshalStrict decodes a frame body: one JSON object, with no member
// that v does not define and no member twice. encoding/json would keep the
// last of repeated members where another implementation may keep the
// first, and would take null for an empty object.
func unmarshalStrict(body []byte, v any) error {
	if trimmed := bytes.TrimLeft(body, " \t\r\n"); len(trimmed) == 0 || trimmed[0] != '{' {
		return fmt.Errorf("%w: the body is not a JSON object", errMalformedFrame)
	}
	if err := crypto.CheckUniqueMembers(body); err != nil {
		return fmt.Errorf("%w: %v", errMalformedFrame, err)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %v", errMalformedFrame, err)
	}
	if dec.More() {
		return fmt.Errorf("%w: data after the JSON body", errMalformedFrame)
	}
	if c, ok := v.(checker); ok {
		if err := c.check(); err != nil {
			return fmt.Errorf("%w: %v", errMalformedFrame, err)
		}
	}
	return nil
}

// checker is a frame body whose members have bounds beyond JSON's: they
// are checked as it is decoded, before anyone uses it.
type checker interface{ check() error }

// decodeRejection decodes a REJECT. known_size belongs only to a conflict
// answering a witness request, and must be there: a witness that refuses
// with conflict says which size it holds, and nothing else says one.
func decodeRejection(body []byte, witness bool) error {
	var rf rejectFrame
	if err := unmarshalStrict(body, &rf); err != nil {
		return err
	}
	switch {
	case rf.KnownSize != nil && (!witness || rf.Code != CodeConflict):
		return fmt.Errorf("%w: known_size in a %q rejection that is not a witness's conflict", errMalformedFrame, rf.Code)
	case witness && rf.Code == CodeConflict && rf.KnownSize == nil:
		return fmt.Errorf("%w: a witness's conflict without known_size", errMalformedFrame)
	case rf.KnownSize != nil && *rf.KnownSize < 0:
		return fmt.Errorf("%w: known_size %d is negative", errMalformedFrame, *rf.KnownSize)
	}
	return &Rejection{Code: rf.Code, Reason: rf.Reason, KnownSize: rf.KnownSize}
}
