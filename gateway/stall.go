package gateway

import (
	"errors"
	"io"
	"net/http"
	"sync"
	"time"
)

// defaultUploadStallTimeout is how long an upload's body may bring no byte
// (see Options.UploadStallTimeout): far longer than any pause of a working
// client or network, far shorter than the hours a large upload may take.
const defaultUploadStallTimeout = 30 * time.Second

func (o *Options) uploadStallTimeout() time.Duration {
	if o.UploadStallTimeout <= 0 {
		return defaultUploadStallTimeout
	}
	return o.UploadStallTimeout
}

// errUploadStalled is the error of a read of a stalled upload body.
var errUploadStalled = errors.New("the upload body brought no data for the stall timeout")

// stallGuard reads a request body and ends the read under way once it has
// waited timeout without a byte, by setting the request's read deadline in
// the past: http.Server's timeouts bound the headers, not the body, and
// an upload of many GB may take hours, so progress is watched, not total
// time. Only time spent waiting in a Read counts, not time the caller
// spends between reads (storage or a peer being slow), so a timer runs
// during each Read rather than a read deadline being pushed forward.
type stallGuard struct {
	r       io.Reader
	rc      *http.ResponseController
	timeout time.Duration

	mu      sync.Mutex
	n       int64 // bytes read
	timer   *time.Timer
	reading bool // a Read is waiting
	stalled bool
	stopped bool
}

func newStallGuard(w http.ResponseWriter, body io.Reader, timeout time.Duration) *stallGuard {
	return &stallGuard{r: body, rc: http.NewResponseController(w), timeout: timeout}
}

// Read reads from the body, or fails with errUploadStalled once the body
// has stalled. It must not be called concurrently.
func (s *stallGuard) Read(p []byte) (int, error) {
	s.mu.Lock()
	if s.stalled {
		s.mu.Unlock()
		return 0, errUploadStalled
	}
	s.reading = true
	if s.timer == nil {
		s.timer = time.AfterFunc(s.timeout, s.fire)
	} else {
		s.timer.Reset(s.timeout)
	}
	s.mu.Unlock()

	n, err := s.r.Read(p)

	s.mu.Lock()
	s.reading = false
	s.timer.Stop()
	s.n += int64(n)
	stalled := s.stalled
	s.mu.Unlock()
	if stalled {
		return n, errUploadStalled
	}
	return n, err
}

// fire ends the Read under way, if any.
func (s *stallGuard) fire() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.reading || s.stopped {
		return
	}
	s.stalled = true
	// A deadline in the past ends the read under way at once, over
	// HTTP/1 (the connection's deadline) and HTTP/2 (the stream's).
	s.rc.SetReadDeadline(time.Unix(1, 0))
}

// stop ends the guard once the handler is done with the body, and reports
// whether the body stalled and how many bytes were read. A timer that
// fires afterwards does nothing.
func (s *stallGuard) stop() (stalled bool, read int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopped = true
	if s.timer != nil {
		s.timer.Stop()
	}
	return s.stalled, s.n
}

// stallWriter gives each write of a download the stall timeout, as a
// write deadline on the connection: a recipient that stops reading is cut
// off after it, releasing the connection and the storage object, while
// one that reads slowly but steadily is not.
type stallWriter struct {
	w       io.Writer
	rc      *http.ResponseController
	timeout time.Duration
}

func (s *stallWriter) Write(p []byte) (int, error) {
	if err := s.rc.SetWriteDeadline(time.Now().Add(s.timeout)); err != nil {
		return 0, err
	}
	return s.w.Write(p)
}
