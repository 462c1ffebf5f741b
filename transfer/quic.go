package transfer

import (
	"time"

	"github.com/quic-go/quic-go"
)

// QUIC settings for links between countries. quic-go's defaults (6 MB
// stream and 15 MB connection windows) cap one transfer at about 240 Mbit/s
// on a 200 ms round trip; the windows below allow about 650 Mbit/s per
// stream and 1 Gbit/s per connection at 200 ms, while bounding the memory a
// slow receiver can be made to buffer per peer connection.
const (
	streamWindow     = 16 << 20
	connectionWindow = 24 << 20
	handshakeTimeout = 10 * time.Second
	idleTimeout      = 60 * time.Second
	keepAlive        = 15 * time.Second
	// stallTimeout ends a stream that makes no progress for this long,
	// even while keep-alives hold its connection open.
	stallTimeout = 60 * time.Second
	// maxStreams bounds concurrent transfers per peer connection.
	maxStreams = 16
	// openStreamTimeout bounds the wait for the peer to allow one more
	// stream, so that a peer that never gives streams back, or one busy
	// with maxStreams long transfers, yields an error the caller retries
	// rather than a wait without end.
	openStreamTimeout = 30 * time.Second
	// dialTimeout bounds resolving a peer's address and the handshake,
	// which quic-go ends after 2 × handshakeTimeout in any case.
	dialTimeout = 2 * handshakeTimeout
	// resultTimeout bounds the wait for the result after a payload's last
	// byte: storing a large payload may take a while.
	resultTimeout = 10 * stallTimeout
	// rejectionTimeout bounds the wait for a REJECT that explains why a
	// payload write failed.
	rejectionTimeout = 5 * time.Second
)

func quicConfig() *quic.Config {
	return &quic.Config{
		HandshakeIdleTimeout:           handshakeTimeout,
		MaxIdleTimeout:                 idleTimeout,
		KeepAlivePeriod:                keepAlive,
		InitialStreamReceiveWindow:     2 << 20,
		MaxStreamReceiveWindow:         streamWindow,
		InitialConnectionReceiveWindow: 4 << 20,
		MaxConnectionReceiveWindow:     connectionWindow,
		MaxIncomingStreams:             maxStreams,
		MaxIncomingUniStreams:          -1,
		// State-changing requests must never be replayable.
		Allow0RTT: false,
	}
}
